"""The ``twistd kvd`` plugin: only a ServiceMaker, so importing it is cheap."""

from twisted.application.service import ServiceMaker

kvd = ServiceMaker(
    "kvd",
    "kvd.tap",
    "A distributed, replicated, in-memory key-value store.",
    "kvd",
)

"""
The ceiling of kvd's HTTP stack: a Klein app with one route that does nothing.

``bench/standalone.py`` runs it beside kvd so that kvd's throughput can be read
as a fraction of what Twisted + Klein can serve at all on this machine. It
runs without twistd. Like kvd's ``QuietSite`` it writes no access-log line
per request; ``--access-log`` adds them, as a plain ``Site`` under ``twistd``
would. Other log events go to ``--log`` (default stdout).

    .venv/bin/python bench/noop_server.py --port 8099 [--log FILE] [--access-log]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from klein import Klein
from twisted.internet import reactor
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.web.iweb import IRequest
from twisted.web.server import Site

app = Klein()

BODY = b'{"status":"ok"}\n'


@app.route("/noop", methods=["GET"])
def noop(request: IRequest) -> bytes:
    """A small constant JSON body, the same shape as kvd's ``/healthz``."""
    request.setHeader(b"Content-Type", b"application/json")
    return BODY


class QuietSite(Site):
    """A Site without per-request access-log lines, as kvd serves its API."""

    noisy = False

    def log(self, request: Any) -> None:
        """Skip the access-log line."""


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--log", default=None,
                        help="log file, as twistd -n would write (default: stdout)")
    parser.add_argument("--access-log", action="store_true",
                        help="log one line per request, as a plain twisted.web Site does")
    args = parser.parse_args(argv)

    out = open(args.log, "a") if args.log else sys.stdout
    globalLogBeginner.beginLoggingTo([textFileLogObserver(out)], redirectStandardIO=False)
    site = Site(app.resource()) if args.access_log else QuietSite(app.resource())
    site.displayTracebacks = False
    reactor.listenTCP(args.port, site, interface=args.interface)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""
The Python client of kvd: ``KvdClient`` (Deferreds, failover across endpoints),
``BlockingClient`` (for code without a reactor), their errors, and ``ClientTLS``.
``kvd.client.testing`` has a stub kvd for tests.
"""

from kvd.client.client import BlockingClient, KvdClient, KvdError, OutcomeUnknown, Unavailable
from kvd.client.tls import ClientTLS

__all__ = ["BlockingClient", "ClientTLS", "KvdClient", "KvdError", "OutcomeUnknown",
           "Unavailable"]

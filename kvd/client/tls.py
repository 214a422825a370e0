"""
TLS for clients of a node whose client listener is ``ssl:``: which CA to
trust and, optionally, which client certificate to show.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer


@implementer(IPolicyForHTTPS)
class ClientTLS:
    """treq's policy: trust ``cacert`` (else the system's roots), show ``cert``/``key``."""

    def __init__(self, cacert: str | None = None, cert: str | None = None,
                 key: str | None = None) -> None:
        if (cert is None) != (key is None):
            raise ValueError("give a client certificate and its key together")
        self._trust: Certificate | None = None
        if cacert is not None:
            with open(cacert, "rb") as f:
                self._trust = Certificate.loadPEM(f.read())
        self._me: PrivateCertificate | None = None
        if cert is not None and key is not None:
            with open(cert, "rb") as f, open(key, "rb") as g:
                self._me = PrivateCertificate.loadPEM(f.read() + b"\n" + g.read())

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return optionsForClientTLS(hostname.decode("ascii"), trustRoot=self._trust,
                                   clientCertificate=self._me)

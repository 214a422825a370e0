"""
Mutual TLS between peers: both ends present a certificate from the peer CA.

With ``--peer-cert``, ``--peer-key`` and ``--peer-ca`` the peer listener
speaks TLS and requires a client certificate signed by the CA; the peer
client verifies the listener's certificate against the same CA (and the host
of the peer URL against it) and presents its own. The MAC on every message
stays: TLS says which machine, the secret says which cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    PrivateCertificate,
    optionsForClientTLS,
)
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer


@dataclass(frozen=True)
class PeerTLS:
    """This node's certificate and key, and the CA every peer's must come from."""

    me: PrivateCertificate
    authority: Certificate

    @classmethod
    def load(cls, cert_path: str, key_path: str, ca_path: str) -> PeerTLS:
        """Read PEM files; raises ValueError (or OSError) naming what is wrong."""
        with open(cert_path, "rb") as f:
            cert = f.read()
        with open(key_path, "rb") as f:
            key = f.read()
        with open(ca_path, "rb") as f:
            ca = f.read()
        try:
            return cls(PrivateCertificate.loadPEM(cert + b"\n" + key), Certificate.loadPEM(ca))
        except Exception as e:
            raise ValueError(f"cannot load the certificate, key or CA: {e}") from None

    def server_options(self) -> CertificateOptions:
        """Present our certificate; require one from the CA of every client."""
        return self.me.options(self.authority)

    def wrap_server(self, factory: Any) -> TLSMemoryBIOFactory:
        return TLSMemoryBIOFactory(self.server_options(), False, factory)

    def policy(self) -> PeerPolicy:
        return PeerPolicy(self)


@implementer(IPolicyForHTTPS)
class PeerPolicy:
    """treq's TLS policy for peer URLs: trust the peer CA only, show our certificate."""

    def __init__(self, tls: PeerTLS) -> None:
        self._tls = tls

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return optionsForClientTLS(hostname.decode("ascii"), trustRoot=self._tls.authority,
                                   clientCertificate=self._tls.me)

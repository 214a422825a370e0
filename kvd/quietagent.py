"""
An ``Agent`` whose connections do not log: no "Starting factory" line for every
new connection of a pool (peers and the torture suite's clients open many).

Twisted's connection pool logs through each connection's factory while that is
``noisy``; the pool's factory class is private, but the endpoints an agent
connects with are ours to choose (``Agent.usingEndpointFactory``), so the
endpoint quiets the factory it is given.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.web.client import URI, Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool
from twisted.web.error import SchemeNotSupported
from twisted.web.iweb import IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer


@implementer(IStreamClientEndpoint)
class _QuietEndpoint:
    def __init__(self, endpoint: IStreamClientEndpoint) -> None:
        self._endpoint = endpoint

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        factory.noisy = False  # type: ignore[attr-defined]
        return self._endpoint.connect(factory)


#: Endpoints kept per (scheme, host, port); past this many, the cache starts over.
MAX_ENDPOINTS = 256


@implementer(IAgentEndpointFactory)
class _QuietEndpoints:
    def __init__(self, reactor: Any, tls: IPolicyForHTTPS | None,
                 connect_timeout: float | None) -> None:
        self._reactor = reactor
        self._tls = tls
        self._connect_timeout = connect_timeout
        self._endpoints: dict[tuple[bytes, bytes, int], IStreamClientEndpoint] = {}

    def endpointForURI(self, uri: URI) -> IStreamClientEndpoint:
        """One endpoint per peer, made once: an agent asks for one on every request,
        pooled connection or not, and making one (IDNA-encoding the host) cost 14 µs."""
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._endpoints.get(key)
        if endpoint is None:
            if len(self._endpoints) >= MAX_ENDPOINTS:
                self._endpoints.clear()
            endpoint = self._endpoints[key] = self._make_endpoint(uri)
        return endpoint

    def _make_endpoint(self, uri: URI) -> IStreamClientEndpoint:
        host = uri.host.decode("ascii") if isinstance(uri.host, bytes) else uri.host
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self._reactor, host, uri.port, timeout=self._connect_timeout or 30)
        if uri.scheme == b"https":
            tls = self._tls or BrowserLikePolicyForHTTPS()
            endpoint = wrapClientTLS(tls.creatorForNetloc(uri.host, uri.port), endpoint)
        elif uri.scheme != b"http":
            raise SchemeNotSupported(f"unsupported scheme: {uri.scheme!r}")
        return _QuietEndpoint(endpoint)


def quiet_agent(reactor: Any, pool: HTTPConnectionPool, tls: IPolicyForHTTPS | None = None,
                connect_timeout: float | None = None) -> Agent:
    """An agent over ``pool`` whose new connections log nothing."""
    return Agent.usingEndpointFactory(
        reactor, _QuietEndpoints(reactor, tls, connect_timeout), pool=pool)

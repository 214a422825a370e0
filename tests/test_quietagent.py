"""The quiet agent's endpoints: connections to http and https URLs, their factories quiet."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.web.client import URI
from twisted.web.error import SchemeNotSupported

from kvd.quietagent import MAX_ENDPOINTS, _QuietEndpoint, _QuietEndpoints


class Recording:
    """An endpoint that only notes the factory it was asked to connect."""

    def __init__(self) -> None:
        self.factories: list[Any] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        self.factories.append(factory)
        return succeed(None)


def test_a_connection_factory_is_made_quiet_before_it_connects() -> None:
    inner = Recording()
    factory = Factory()
    assert factory.noisy
    _QuietEndpoint(inner).connect(factory)  # type: ignore[arg-type]
    assert inner.factories == [factory] and factory.noisy is False


@pytest.mark.parametrize("url", [b"http://127.0.0.1:1/x", b"https://127.0.0.1:1/x"])
def test_http_and_https_urls_get_an_endpoint(url: bytes) -> None:
    endpoint = _QuietEndpoints(MemoryReactorClock(), None, 2).endpointForURI(URI.fromBytes(url))
    assert isinstance(endpoint, _QuietEndpoint)


def test_another_scheme_is_refused() -> None:
    with pytest.raises(SchemeNotSupported):
        _QuietEndpoints(MemoryReactorClock(), None, None).endpointForURI(URI.fromBytes(b"ftp://h:1/"))


def test_a_peer_gets_one_endpoint_and_each_peer_its_own() -> None:
    endpoints = _QuietEndpoints(MemoryReactorClock(), None, 2)
    a = endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:1/peer/v1/prepare"))
    assert endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:1/peer/v1/fetch")) is a
    others = {endpoints.endpointForURI(URI.fromBytes(url)) for url in (
        b"http://127.0.0.1:2/x", b"https://127.0.0.1:1/x", b"http://127.0.0.2:1/x")}
    assert len(others) == 3 and a not in others


def test_the_endpoint_cache_is_bounded() -> None:
    endpoints = _QuietEndpoints(MemoryReactorClock(), None, 2)
    for port in range(1, MAX_ENDPOINTS + 50):
        endpoints.endpointForURI(URI.fromBytes(b"http://127.0.0.1:%d/x" % port))
    assert len(endpoints._endpoints) <= MAX_ENDPOINTS

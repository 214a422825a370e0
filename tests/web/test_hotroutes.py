"""HotRouteResource: the same bytes as Klein's matcher, found by a table."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from klein import Klein
from treq.testing import StubTreq
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.test.requesthelper import DummyRequest

from kvd.web import public
from kvd.web.etcd import HOT_ROUTES as ETCD_HOT_ROUTES
from kvd.web.etcd import EtcdGateway
from kvd.web.hotroutes import HotRouteResource
from kvd.web.public import HOT_ROUTES as API_HOT_ROUTES
from kvd.web.public import ClientAPI, Limits
from kvd.web.site import Root
from tests.support import InlineReactor, open_inline_node
from tests.web.test_etcd import b64
from tests.web.test_public import exchange


class Served:
    """A fresh node behind the client API and the gateway, with or without the table."""

    def __init__(self, path: str, hot: bool) -> None:
        self.reactor = InlineReactor()
        node = open_inline_node(path, self.reactor)
        api = ClientAPI(lambda: node, Limits(max_key_bytes=16, max_value_bytes=64,
                                             max_body_bytes=256))
        gateway = EtcdGateway(api, "test-cluster")
        api_routes = API_HOT_ROUTES if hot else ()
        etcd_routes = ETCD_HOT_ROUTES if hot else ()
        self.resources = (HotRouteResource(api.app, api_routes),
                          HotRouteResource(gateway.app, etcd_routes))
        gateway_resource = self.resources[1]
        self.treq = StubTreq(Root(self.resources[0], {b"v3": gateway_resource,
                                                      b"v3beta": gateway_resource}))

    def raw(self, method: str, path: str, body: bytes | None) -> tuple[int, list[Any], bytes]:
        """Status, every header but Date, and the body's very bytes (but the
        gateway's member id, which is the node's own)."""
        response, content = exchange(self.treq, self.reactor, method, path, body)
        headers = sorted((k, v) for k, v in response.headers.getAllRawHeaders()
                         if k.lower() != b"date")
        return response.code, headers, _MEMBER_ID.sub(b'"member_id":"-"', content)


_MEMBER_ID = re.compile(rb'"member_id":"[0-9]+"')
PUT_A = json.dumps({"value": "1"}).encode()
REQUESTS: list[tuple[str, str, bytes | None]] = [
    ("PUT", "/api/v1/keys/a", PUT_A),
    ("PUT", "/api/v1/keys/a", b'{"value": 1}'),
    ("PUT", "/api/v1/keys/a", b'{"value": "1", "other": 2}'),
    ("PUT", "/api/v1/keys/a", b'{"value'),
    ("PUT", "/api/v1/keys/a", b""),
    ("PUT", "/api/v1/keys/a", b'{"value": "' + b"x" * 300 + b'"}'),
    ("PUT", "/api/v1/keys/a", b'{"value": "' + b"x" * 65 + b'"}'),
    ("PUT", "/api/v1/keys/" + "k" * 17, PUT_A),
    ("PUT", "/api/v1/keys/a%2Fb", PUT_A),
    ("PUT", "/api/v1/keys/a/b", PUT_A),
    ("PUT", "/api/v1/keys/%20x", PUT_A),
    ("PUT", "/api/v1/keys/%C3%BC", PUT_A),
    ("PUT", "/api/v1/keys/..", PUT_A),
    ("PUT", "/api/v1/keys/a?prev_revision=1", PUT_A),
    ("PUT", "/api/v1/keys/a", b'{"value": "2", "prev_revision": 99}'),
    ("GET", "/api/v1/keys/a", None),
    ("GET", "/api/v1/keys/a?consistency=stale", None),
    ("GET", "/api/v1/keys/a?consistency=bogus", None),
    ("GET", "/api/v1/keys/a?min_revision=99", None),
    ("GET", "/api/v1/keys/a?min_revision=x", None),
    ("GET", "/api/v1/keys/missing", None),
    ("GET", "/api/v1/keys/a%2Fb", None),
    ("GET", "/api/v1/keys/a/b", None),
    ("GET", "/api/v1/keys/a/", None),
    ("GET", "/api/v1/keys//a", None),
    ("GET", "/api/v1/keys/%C3%BC", None),
    ("GET", "/api/v1/keys/%FF", None),
    ("GET", "/api/v1/keys/", None),
    ("GET", "/api/v1/keys", None),
    ("HEAD", "/api/v1/keys/a", None),
    ("POST", "/api/v1/keys/a", PUT_A),
    ("PATCH", "/api/v1/keys/a", PUT_A),
    ("DELETE", "/api/v1/keys/a?prev_revision=99", None),
    ("DELETE", "/api/v1/keys/a", None),
    ("DELETE", "/api/v1/keys/a", None),
    ("POST", "/api/v1/", b'{"key": "b", "value": "2"}'),
    ("POST", "/api/v1/", b'{"key": "b"}'),
    ("POST", "/api/v1/", b"[1]"),
    ("GET", "/api/v1/", b'{"keys": ["a", "b"]}'),
    ("GET", "/api/v1/?keys=b,a", None),
    ("GET", "/api/v1/?keys=", None),
    ("GET", "/api/v1", None),
    ("GET", "/api/v1//", None),
    ("DELETE", "/api/v1/", None),
    ("POST", "/v3/kv/put", json.dumps({"key": b64("c"), "value": b64("3")}).encode()),
    ("POST", "/v3/kv/put", b'{"key": 5}'),
    ("POST", "/v3/kv/put", b"{"),
    ("POST", "/v3/kv/range", json.dumps({"key": b64("c")}).encode()),
    ("POST", "/v3beta/kv/range", json.dumps({"key": b64("a"), "range_end": "AA=="}).encode()),
    ("POST", "/v3/kv/range", json.dumps({"key": b64("c"), "serializable": True}).encode()),
    ("POST", "/v3/kv/range/", json.dumps({"key": b64("c")}).encode()),
    ("GET", "/v3/kv/range", None),
    ("POST", "/v3/kv/txn", json.dumps({"success": [
        {"request_put": {"key": b64("d"), "value": b64("4")}}]}).encode()),
    ("POST", "/v3/kv/txn", b'{"success": 1}'),
    ("POST", "/v3/kv/deleterange", json.dumps({"key": b64("c")}).encode()),
    ("POST", "/v3/kv/nosuch", b"{}"),
]


# Fails if: the endpoint's answer or error reaches the client differently.
def test_the_table_answers_every_request_with_kleins_very_bytes(tmp_path: Any) -> None:
    hot = Served(str(tmp_path / "hot"), hot=True)
    klein = Served(str(tmp_path / "klein"), hot=False)
    assert hot.resources[0]._static and hot.resources[0]._prefixed
    assert not klein.resources[0]._static and not klein.resources[0]._prefixed
    for method, path, body in REQUESTS:
        assert hot.raw(method, path, body) == klein.raw(method, path, body), (method, path)


# Fails if: a rule is taken although another rule shares its prefix.
def test_only_routes_the_table_can_match_exactly_are_taken() -> None:
    app = Klein()

    @app.route("/k/<key>", methods=["GET"])
    def key(request: IRequest, key: str) -> bytes:
        return b""

    @app.route("/k/special", methods=["GET"])
    def special(request: IRequest) -> bytes:
        return b""

    @app.route("/a/<x>/b", methods=["GET"])
    def inner(request: IRequest, x: str) -> bytes:
        return b""

    with pytest.raises(ValueError, match="werkzeug would weigh /k/special"):
        HotRouteResource(app, ["/k/<key>"])
    with pytest.raises(ValueError, match="one argument at the end"):
        HotRouteResource(app, ["/a/<x>/b"])
    with pytest.raises(ValueError, match="no such routes: /nope"):
        HotRouteResource(app, ["/k/special", "/nope"])


# Fails if: the table takes an empty last segment (werkzeug gives the prefix's own rule).
def test_an_empty_last_segment_is_left_to_werkzeug() -> None:
    app = Klein()
    app.url_map.converters["key"] = public.KeyConverter

    @app.route("/k/", methods=["GET"])
    def listing(request: IRequest) -> bytes:
        return b"listing"

    @app.route("/k/<key:key>", methods=["GET"])
    def key(request: IRequest, key: str) -> bytes:
        return key.encode()

    treq = StubTreq(HotRouteResource(app, ["/k/<key:key>"]))
    for path, answer in [("/k/x%20y", b"x y"), ("/k/", b"listing")]:
        bodies: list[bytes] = []
        treq.get("http://kvd" + path).addCallback(treq.content).addCallback(bodies.append)
        treq.flush()
        assert bodies == [answer]


class Slow:
    """An app whose hot route waits until cancelled, and one that answers a number."""

    app = Klein()

    def __init__(self) -> None:
        self.waiting: Deferred[bytes] | None = None
        self.cancelled = False

    @app.route("/wait", methods=["GET"])
    def wait(self, request: IRequest) -> Deferred[bytes]:
        def cancel(d: Deferred[bytes]) -> None:
            self.cancelled = True
        self.waiting = Deferred(cancel)
        return self.waiting

    @app.route("/number", methods=["GET"])
    def number(self, request: IRequest) -> int:
        return 7

    @app.handle_errors(Exception)
    def bug(self, request: IRequest, failure: Failure) -> bytes:
        request.setResponseCode(500)
        return failure.getErrorMessage().encode()


# Fails if: a dropped client's request is not cancelled (as Klein cancels it).
def test_a_dropped_client_cancels_the_endpoint_and_nothing_is_written() -> None:
    slow = Slow()
    request = DummyRequest([b"wait"])
    HotRouteResource(slow.app, ["/wait", "/number"]).render(request)
    assert slow.waiting is not None and not slow.cancelled
    request.processingFailed(Failure(ConnectionLost()))
    assert slow.cancelled
    assert request.written == [] and request.finished == 0
    assert slow.waiting.called
    slow.waiting.addErrback(lambda f: f.trap(CancelledError))


# Fails if: an endpoint's answer is written unchecked.
def test_an_answer_that_is_not_bytes_goes_to_the_error_handlers() -> None:
    request = DummyRequest([b"number"])
    HotRouteResource(Slow().app, ["/wait", "/number"]).render(request)
    assert request.responseCode == 500
    assert request.written == [b"a hot route answered int, not bytes"]
    assert request.finished == 1

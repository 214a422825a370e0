"""The client API over a real node on real files, through StubTreq."""

from __future__ import annotations

import json
from typing import Any

import pytest
from treq.testing import StubTreq

from kvd.node import Node
from kvd.web.public import ClientAPI, Limits
from tests.support import InlineReactor, open_inline_node


def exchange(treq: StubTreq, reactor: InlineReactor, method: str, url: str,
             body: bytes | None = None, headers: dict[bytes, list[bytes]] | None = None
             ) -> tuple[Any, bytes]:
    """One request through ``treq``, the node's clock advanced so that writes
    commit: the response and its body's bytes."""
    d = treq.request(method, "http://kvd" + url, data=body, headers=headers)
    reactor.advance(0)
    treq.flush()
    responses: list[Any] = []
    d.addCallback(responses.append)
    assert responses, f"no response to {method} {url}"
    response = responses[0]
    content: list[bytes] = []
    response.content().addCallback(content.append)
    treq.flush()
    return response, content[0]


class Client:
    """StubTreq over the API, advancing the node's clock so writes commit."""

    def __init__(self, path: str, max_body_bytes: int = 256) -> None:
        self.reactor = InlineReactor()
        self.node: Node | None = open_inline_node(path, self.reactor)
        limits = Limits(max_key_bytes=16, max_value_bytes=64, max_body_bytes=max_body_bytes)
        self.api = ClientAPI(lambda: self.node, limits)
        self.treq = StubTreq(self.api.resource())

    def call(self, method: str, url: str, body: bytes | None = None,
             headers: dict[bytes, list[bytes]] | None = None) -> tuple[int, Any, Any]:
        response, content = exchange(self.treq, self.reactor, method, url, body, headers)
        return response.code, json.loads(content), response.headers

    def state(self) -> list[Any]:
        assert self.node is not None
        return [(kv.key, kv.value, kv.mod_revision) for kv in self.node.store.range()]


@pytest.fixture
def client(tmp_path: Any) -> Client:
    return Client(str(tmp_path))


def test_legacy_write_and_multi_read_are_byte_compatible(client: Client) -> None:
    code, body, headers = client.call("POST", "/api/v1/", b'{"key":"a","value":"1"}')
    assert (code, body) == (200, {"key": "a", "revision": 1})
    d = client.treq.request("GET", "http://kvd/api/v1/", data=b'{"keys":["a","b"]}')
    client.reactor.advance(0)
    client.treq.flush()
    raw: list[bytes] = []
    d.addCallback(lambda r: r.content()).addCallback(raw.append)
    client.treq.flush()
    assert raw == [b'["1",null]\n']
    assert client.call("GET", "/api/v1/?keys=b,a")[1] == [None, "1"]


def test_put_get_cas_delete(client: Client) -> None:
    assert client.call("PUT", "/api/v1/keys/x/y", b'{"value":"v"}')[:2] == (
        200, {"key": "x/y", "revision": 1})
    code, body, headers = client.call("GET", "/api/v1/keys/x/y")
    assert (code, body) == (200, {"key": "x/y", "value": "v", "revision": 1,
                                  "create_revision": 1, "version": 1})
    assert headers.getRawHeaders(b"X-Kvd-Revision") == [b"1"]
    code, body, _ = client.call("PUT", "/api/v1/keys/x/y", b'{"value":"w","prev_revision":5}')
    assert code == 409 and body["error"]["current_revision"] == 1
    assert client.call("PUT", "/api/v1/keys/x/y", b'{"value":"w","prev_revision":1}')[0] == 200
    assert client.call("DELETE", "/api/v1/keys/x/y")[:2] == (200, {"key": "x/y", "revision": 3})
    assert client.call("DELETE", "/api/v1/keys/x/y")[0] == 404
    assert client.call("GET", "/api/v1/keys/x/y")[1]["error"]["code"] == "key_not_found"


def test_a_key_with_a_newline_is_addressable(client: Client) -> None:
    assert client.call("PUT", "/api/v1/keys/a%0Ab", b'{"value":"v"}')[0] == 200
    assert client.call("GET", "/api/v1/keys/a%0Ab")[1]["key"] == "a\nb"
    assert client.call("POST", "/api/v1/", b'{"key":"c\\nd","value":"w"}')[0] == 200
    assert client.call("DELETE", "/api/v1/keys/c%0Ad")[0] == 200


def test_idempotency_key_returns_the_first_result(client: Client) -> None:
    headers = {b"Idempotency-Key": [b"abc"]}
    first = client.call("PUT", "/api/v1/keys/k", b'{"value":"v"}', headers)
    again = client.call("PUT", "/api/v1/keys/k", b'{"value":"v"}', headers)
    assert first[:2] == again[:2] == (200, {"key": "k", "revision": 1})
    assert client.call("GET", "/api/v1/keys/k")[1]["version"] == 1


def test_scan_by_prefix_in_key_order(client: Client) -> None:
    for key in ("b/2", "a/1", "b/1", "c"):
        client.call("PUT", f"/api/v1/keys/{key}", b'{"value":"v"}')
    code, body, _ = client.call("GET", "/api/v1/keys?prefix=b/")
    assert code == 200 and [kv["key"] for kv in body["kvs"]] == ["b/1", "b/2"]
    assert client.call("GET", "/api/v1/keys?limit=1")[1]["count"] == 1


BAD_INPUT = [
    ("POST", "/api/v1/", b"{bad json", 400, "bad_request"),
    ("POST", "/api/v1/", b'["key","value"]', 400, "bad_request"),
    ("POST", "/api/v1/", b'{"key":1,"value":"v"}', 400, "bad_request"),
    ("POST", "/api/v1/", b'{"key":"k","value":7}', 400, "bad_request"),
    ("POST", "/api/v1/", b'{"key":"","value":"v"}', 400, "bad_request"),
    ("POST", "/api/v1/", b"", 400, "bad_request"),
    ("POST", "/api/v1/", b'{"key":"k","value":"\xff\xfe"}', 400, "bad_request"),
    ("POST", "/api/v1/", b'{"key":"\\ud800","value":"v"}', 400, "bad_request"),
    ("POST", "/api/v1/", b'{"key":"%s","value":"v"}' % (b"k" * 17), 413, "too_large"),
    ("POST", "/api/v1/", b'{"key":"k","value":"%s"}' % (b"v" * 65), 413, "too_large"),
    ("POST", "/api/v1/", b'{"key":"k","value":"%s"}' % (b" " * 300), 413, "too_large"),
    ("GET", "/api/v1/", b'{"keys":"a"}', 400, "bad_request"),
    ("GET", "/api/v1/", b'{"keys":[1]}', 400, "bad_request"),
    ("PUT", "/api/v1/keys/k", b'{"value":"v","prev_revision":"1"}', 400, "bad_request"),
    ("PUT", "/api/v1/keys/k", b'{"value":"v","prev_revision":true}', 400, "bad_request"),
    ("PUT", "/api/v1/keys/k", b'{"value":"v","colour":"red"}', 400, "bad_request"),
    ("PUT", "/api/v1/keys/k", b'{"value":null}', 400, "bad_request"),
    ("PUT", "/api/v1/keys/", b'{"value":"v"}', 400, "bad_request"),
    ("GET", "/api/v1/keys/k?consistency=eventual", None, 400, "bad_request"),
    ("GET", "/api/v1/keys/k?min_revision=-1", None, 400, "bad_request"),
    ("DELETE", "/api/v1/keys/k?prev_revision=x", None, 400, "bad_request"),
    ("GET", "/api/v2/keys/k", None, 404, "not_found"),
    ("GET", "/nowhere", None, 404, "not_found"),
    ("PATCH", "/api/v1/keys/k", b"{}", 405, "method_not_allowed"),
    ("DELETE", "/api/v1/", None, 405, "method_not_allowed"),
    ("PUT", "/api/v1/keys", b'{"value":"v"}', 405, "method_not_allowed"),
    ("GET", "/api/v1/cluster/", None, 404, "not_found"),
]


@pytest.mark.parametrize("method,url,body,status,code", BAD_INPUT)
def test_bad_input_gets_a_json_error_and_changes_nothing(
    client: Client, method: str, url: str, body: bytes | None, status: int, code: str
) -> None:
    client.call("PUT", "/api/v1/keys/k", b'{"value":"before"}')
    before = client.state()
    got_status, got_body, headers = client.call(method, url, body)
    assert (got_status, got_body["error"]["code"]) == (status, code)
    assert got_body["error"]["message"]
    assert headers.getRawHeaders(b"Content-Type") == [b"application/json"]
    assert client.state() == before


def test_not_ready_until_recovered(tmp_path: Any) -> None:
    client = Client(str(tmp_path))
    client.node = None
    code, body, headers = client.call("PUT", "/api/v1/keys/k", b'{"value":"v"}')
    assert (code, body["error"]["code"]) == (503, "unavailable")
    assert headers.getRawHeaders(b"Retry-After") == [b"1"]
    assert client.call("GET", "/readyz")[0] == 503
    assert client.call("GET", "/healthz")[0] == 200



def test_a_failing_observer_of_applied_entries_costs_no_answer(client: Client) -> None:
    assert client.node is not None

    def broken(index: int, commands: Any, results: Any) -> None:
        raise RuntimeError("an observer's bug")

    client.node.on_applied.insert(0, broken)
    code, body, _ = client.call("PUT", "/api/v1/keys/a", b'{"value":"1"}')
    assert (code, body["revision"]) == (200, 1)
    code, body, _ = client.call("PUT", "/api/v1/keys/b", b'{"value":"2"}')
    assert (code, body["revision"]) == (200, 2)
    assert client.state() == [(b"a", b"1", 1), (b"b", b"2", 2)]

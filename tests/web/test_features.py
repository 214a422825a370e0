"""Transactions, range scans, TTLs and watches through the client API (StubTreq)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import treq

from tests.web.test_public import Client


@pytest.fixture
def client(tmp_path: Any) -> Client:
    return Client(str(tmp_path), max_body_bytes=4096)


def put(client: Client, key: str, value: str, **extra: Any) -> dict[str, Any]:
    code, body, _ = client.call("PUT", f"/api/v1/keys/{key}",
                                json.dumps({"value": value, **extra}).encode())
    assert code == 200, body
    return body


def txn(client: Client, body: dict[str, Any]) -> tuple[int, Any]:
    code, answer, _ = client.call("POST", "/api/v1/txn", json.dumps(body).encode())
    return code, answer


def test_txn_then_branch_applies_atomically_at_one_revision(client: Client) -> None:
    put(client, "a", "1")
    code, answer = txn(client, {
        "compare": [{"key": "a", "target": "value", "value": "1"},
                    {"key": "b", "target": "exists", "value": False}],
        "success": [{"op": "put", "key": "a", "value": "2"}, {"op": "put", "key": "b",
                                                              "value": "x"},
                    {"op": "get", "key": "a"}],
        "failure": [{"op": "get", "key": "a"}],
    })
    assert code == 200 and answer["succeeded"] is True
    assert answer["revision"] == 2
    assert answer["results"][0] == {"op": "put", "revision": 2}
    assert answer["results"][2]["kv"]["value"] == "2"
    assert client.call("GET", "/api/v1/keys/b")[1]["revision"] == 2


def test_txn_else_branch_when_a_compare_fails(client: Client) -> None:
    put(client, "a", "1")
    code, answer = txn(client, {
        "compare": [{"key": "a", "target": "version", "cmp": ">", "value": 5}],
        "success": [{"op": "delete", "key": "a"}],
        "failure": [{"op": "get", "key": "a"}],
    })
    assert code == 200 and answer["succeeded"] is False
    assert answer["results"] == [{"op": "get", "kv": {
        "key": "a", "value": "1", "revision": 1, "create_revision": 1, "version": 1}}]
    assert answer["revision"] == 1


@pytest.mark.parametrize("body", [
    {"compare": "x"},
    {"compare": [{"key": "a", "target": "colour", "value": 1}]},
    {"compare": [{"key": "a", "target": "version", "value": "1"}]},
    {"compare": [{"key": "a", "target": "exists", "cmp": "<", "value": True}]},
    {"success": [{"op": "explode", "key": "a"}]},
    {"success": [{"op": "put", "key": "a"}]},
    {"success": [{"op": "put", "key": "a", "value": "v", "ttl": 0}]},
    {"extra": []},
])
def test_malformed_txn_is_a_400_and_changes_nothing(client: Client, body: Any) -> None:
    put(client, "a", "1")
    before = client.state()
    code, answer = txn(client, body)
    assert code == 400 and answer["error"]["code"] == "bad_request"
    assert client.state() == before


def test_range_scan_pages_keys_only_and_count_only(client: Client) -> None:
    for key in ("p/1", "p/2", "p/3", "q/1"):
        put(client, key, "v")
    code, page, _ = client.call("GET", "/api/v1/keys?prefix=p/&limit=2")
    assert [kv["key"] for kv in page["kvs"]] == ["p/1", "p/2"] and page["more"] is True
    token = page["next_page_token"]
    _, rest, _ = client.call("GET", f"/api/v1/keys?prefix=p/&limit=2&page_token={token}")
    assert [kv["key"] for kv in rest["kvs"]] == ["p/3"] and rest["more"] is False
    _, keys, _ = client.call("GET", "/api/v1/keys?start=p/2&end=q/1&keys_only=true")
    assert keys["kvs"] == [{"key": "p/2"}, {"key": "p/3"}]
    assert client.call("GET", "/api/v1/keys?prefix=p/&count_only=1")[1] == {"count": 3}
    _, narrowed, _ = client.call("GET", "/api/v1/keys?prefix=p/&start=p/2&end=p/3")
    assert [kv["key"] for kv in narrowed["kvs"]] == ["p/2"]
    assert client.call("GET", "/api/v1/keys?limit=0")[0] == 400


def test_ttl_key_expires_through_a_replicated_delete(client: Client) -> None:
    put(client, "session", "alive", ttl=5)
    client.reactor.advance(4)
    assert client.call("GET", "/api/v1/keys/session")[0] == 200
    client.reactor.advance(1.5)
    client.reactor.advance(0)
    assert client.call("GET", "/api/v1/keys/session")[0] == 404
    # It was a log entry: a delete event at a new revision.
    assert client.node is not None
    assert [e.type for e in client.node.store.events] == ["put", "delete"]


def test_a_rewrite_without_ttl_cancels_expiry(client: Client) -> None:
    put(client, "k", "1", ttl=2)
    put(client, "k", "2")
    client.reactor.advance(3)
    client.reactor.advance(0)
    assert client.call("GET", "/api/v1/keys/k")[1]["value"] == "2"


def watch_lines(client: Client, url: str) -> tuple[int, list[bytes]]:
    chunks: list[bytes] = []
    responses: list[Any] = []
    d = client.treq.request("GET", "http://kvd" + url)
    client.reactor.advance(0)
    client.treq.flush()
    d.addCallback(responses.append)
    response = responses[0]
    treq.collect(response, chunks.append)
    client.treq.flush()
    return response.code, chunks


def test_watch_replays_history_then_streams_live_events(client: Client) -> None:
    put(client, "w/a", "1")
    put(client, "other", "x")
    put(client, "w/b", "2")
    code, chunks = watch_lines(client, "/api/v1/watch?prefix=w/&start_revision=1")
    assert code == 200
    client.call("DELETE", "/api/v1/keys/w/a")
    client.treq.flush()
    events = [json.loads(line) for chunk in chunks for line in chunk.splitlines()]
    assert [(e["type"], e["key"], e["revision"]) for e in events] == [
        ("put", "w/a", 1), ("put", "w/b", 3), ("delete", "w/a", 4)]


def test_watch_from_a_compacted_revision_is_410(tmp_path: Any) -> None:
    client = Client(str(tmp_path))
    assert client.node is not None
    client.node.store.history_limit = 2
    for i in range(5):
        put(client, "k", str(i))
    code, body, _ = client.call("GET", "/api/v1/watch?key=k&start_revision=1")
    assert (code, body["error"]["code"], body["error"]["compact_revision"]) == (
        410, "compacted", 3)
    assert watch_lines(client, "/api/v1/watch?key=k&start_revision=4")[0] == 200

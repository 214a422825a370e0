"""The Python client over ``kvd.client.testing.StubKvd``: calls, failover, idempotency."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.web.resource import Resource

from kvd.client import BlockingClient, KvdClient, KvdError, OutcomeUnknown, Unavailable
from kvd.client.testing import StubKvd
from kvd.store import put_command
from kvd.web.public import client_request_id


@pytest.fixture
def kvd(tmp_path: Any) -> Iterator[StubKvd]:
    stub = StubKvd(str(tmp_path))
    yield stub
    stub.close()


def result(kvd: StubKvd, d: Any) -> Any:
    kvd.flush()
    got: list[Any] = []
    d.addBoth(got.append)
    kvd.flush()
    assert got, "no answer"
    if hasattr(got[0], "raiseException"):
        got[0].raiseException()
    return got[0]


class Canned(Resource):
    """An endpoint that answers every request with one status and error code."""

    isLeaf = True

    def __init__(self, status: int, code: str, on_request: Any = None) -> None:
        super().__init__()
        self.status, self.code = status, code
        self.on_request = on_request
        self.idempotency_keys: list[bytes | None] = []

    def render(self, request: Any) -> bytes:
        key = request.getHeader(b"idempotency-key")
        self.idempotency_keys.append(key)
        if self.on_request is not None:
            self.on_request(key)
        request.setResponseCode(self.status)
        return json.dumps({"error": {"code": self.code, "message": "canned"}}).encode()


def test_the_calls_a_program_makes(kvd: StubKvd) -> None:
    client = kvd.client()
    assert result(kvd, client.put("app/a", "1")) == {"key": "app/a", "revision": 1}
    assert result(kvd, client.get("app/a"))["value"] == "1"
    assert result(kvd, client.get("missing")) is None
    assert result(kvd, client.range("app/"))["count"] == 1
    txn = {"compare": [{"key": "app/a", "target": "value", "value": "1"}],
           "success": [{"op": "put", "key": "app/b", "value": "2"}], "failure": []}
    assert result(kvd, client.txn(txn))["succeeded"] is True
    assert result(kvd, client.delete("app/a"))["revision"] == 3
    with pytest.raises(KvdError) as refused:
        result(kvd, client.put("app/a", "x", prev_revision=7))
    assert refused.value.status == 409


# Fails if: KvdClient.request stops at a 503 instead of trying the next endpoint.
def test_a_503_moves_on_to_the_next_endpoint(kvd: StubKvd) -> None:
    starting = Canned(503, "unavailable")
    kvd.answer_with("http://starting.invalid:1", starting)
    client = kvd.client(["http://starting.invalid:1", kvd.url])
    assert result(kvd, client.put("k", "v"))["revision"] == 1
    assert len(starting.idempotency_keys) == 1


def test_a_400_is_not_retried_elsewhere(kvd: StubKvd) -> None:
    bad = Canned(400, "bad_request")
    kvd.answer_with("http://first.invalid:1", bad)
    client = kvd.client(["http://first.invalid:1", kvd.url])
    with pytest.raises(KvdError) as refused:
        result(kvd, client.put("k", "v"))
    assert refused.value.status == 400
    assert kvd.node.store.revision == 0


# Fails if: KvdClient sends a new Idempotency-Key to the next endpoint (the retry of a
# write whose answer was lost would apply twice).
def test_a_lost_answer_is_retried_elsewhere_under_the_same_key_and_applies_once(
        kvd: StubKvd) -> None:
    def applied_then_lost(key: bytes | None) -> None:
        # The write reached the leader and committed; only its answer went missing.
        assert key is not None
        kvd.node.submit([put_command(b"k", b"v", client_request_id(
            key.decode(), {"op": "put"}, None))])

    lost = Canned(504, "outcome_unknown", on_request=applied_then_lost)
    kvd.answer_with("http://leader.invalid:1", lost)
    client = kvd.client(["http://leader.invalid:1", kvd.url])
    assert result(kvd, client.put("k", "v")) == {"key": "k", "revision": 1}
    assert kvd.node.store.revision == 1
    assert len(lost.idempotency_keys) == 1 and lost.idempotency_keys[0]


def test_a_write_with_no_endpoint_left_is_unavailable_or_unknown(kvd: StubKvd) -> None:
    kvd.answer_with("http://a.invalid:1", Canned(503, "unavailable"))
    with pytest.raises(Unavailable):
        result(kvd, kvd.client(["http://a.invalid:1"]).put("k", "v"))
    kvd.answer_with("http://b.invalid:1", Canned(504, "outcome_unknown"))
    with pytest.raises(OutcomeUnknown):
        result(kvd, kvd.client(["http://b.invalid:1"]).put("k", "v"))


def test_credentials_log_in_once_auth_is_on(kvd: StubKvd) -> None:
    anonymous = kvd.client()
    assert result(kvd, anonymous.auth_call("PUT", "users/root", {"password": "pw"}))["ok"]
    assert result(kvd, anonymous.auth_call("POST", "enable"))["ok"]
    with pytest.raises(KvdError) as refused:
        result(kvd, anonymous.get("k"))
    assert refused.value.status == 401
    root = kvd.client(credentials=("root", "pw"))
    assert result(kvd, root.put("k", "v"))["revision"] == 1
    with pytest.raises(KvdError) as wrong:
        result(kvd, kvd.client(credentials=("root", "no")).get("k"))
    assert wrong.value.status == 401


def test_the_package_exports_what_the_readme_promises() -> None:
    assert KvdClient.__module__ == "kvd.client.client"
    assert BlockingClient.__module__ == "kvd.client.client"

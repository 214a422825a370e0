"""Leases through the native API (``/api/v1/leases``), over a real node (StubTreq)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from kvd.web.public import ClientAPI, Limits
from tests.support import replica_of
from tests.web.test_public import Client


class LeaseClient(Client):
    def __init__(self, path: str) -> None:
        super().__init__(path, max_body_bytes=4096)
        from treq.testing import StubTreq

        node = self.node
        assert node is not None
        self.api = ClientAPI(lambda: self.node, Limits(), leases=lambda: replica_of(node).expiry)
        self.treq = StubTreq(self.api.resource())

    def json(self, method: str, url: str, body: Any = None,
             headers: dict[bytes, list[bytes]] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        code, answer, _ = self.call(method, url, data, headers)
        return code, answer


@pytest.fixture
def client(tmp_path: Any) -> LeaseClient:
    return LeaseClient(str(tmp_path))


def test_grant_attach_show_and_revoke(client: LeaseClient) -> None:
    code, granted = client.json("POST", "/api/v1/leases", {"ttl": 30, "id": 12})
    assert (code, granted) == (200, {"id": 12, "ttl": 30})
    for key in ("a", "b"):
        assert client.json("PUT", f"/api/v1/keys/{key}", {"value": "v", "lease": 12})[0] == 200
    client.reactor.advance(10)
    code, shown = client.json("GET", "/api/v1/leases/12")
    assert (code, shown) == (200, {"id": 12, "granted_ttl": 30, "ttl": 20,
                                   "keys": [{"key": "a"}, {"key": "b"}]})
    assert client.json("GET", "/api/v1/leases")[1] == {"leases": [
        {"id": 12, "granted_ttl": 30, "ttl": 20}]}
    code, kept = client.json("POST", "/api/v1/leases/12/keepalive")
    assert (code, kept) == (200, {"id": 12, "ttl": 30})
    code, revoked = client.json("DELETE", "/api/v1/leases/12")
    assert (code, revoked) == (200, {"id": 12, "revision": 3, "deleted": 2})
    assert client.state() == []
    assert client.json("GET", "/api/v1/leases/12")[0] == 404


def test_a_retried_grant_answers_the_first_lease(client: LeaseClient) -> None:
    retry = {b"Idempotency-Key": [b"grant-1"]}
    first = client.json("POST", "/api/v1/leases", {"ttl": 5}, retry)[1]
    again = client.json("POST", "/api/v1/leases", {"ttl": 5}, retry)[1]
    assert first == again
    assert len(client.json("GET", "/api/v1/leases")[1]["leases"]) == 1


def test_an_expired_lease_takes_its_keys(client: LeaseClient) -> None:
    lease = client.json("POST", "/api/v1/leases", {"ttl": 5})[1]["id"]
    client.json("PUT", "/api/v1/keys/k", {"value": "v", "lease": lease})
    client.reactor.advance(5.5)
    assert client.state() == []
    assert client.json("GET", "/api/v1/leases")[1] == {"leases": []}


@pytest.mark.parametrize(("method", "url", "body", "status"), [
    ("POST", "/api/v1/leases", {}, 400),
    ("POST", "/api/v1/leases", {"ttl": 0}, 400),
    ("POST", "/api/v1/leases", {"ttl": "5"}, 400),
    ("POST", "/api/v1/leases", {"ttl": 5, "extra": 1}, 400),
    ("POST", "/api/v1/leases", [5], 400),
    ("PUT", "/api/v1/keys/k", {"value": "v", "lease": 99}, 404),
    ("PUT", "/api/v1/keys/k", {"value": "v", "lease": -1}, 400),
    ("PUT", "/api/v1/keys/k", {"value": "v", "lease": 1, "ttl": 5}, 400),
    ("POST", "/api/v1/leases/99/keepalive", None, 404),
    ("DELETE", "/api/v1/leases/99", None, 404),
    ("GET", "/api/v1/leases/x", None, 404),
])
def test_bad_lease_requests(client: LeaseClient, method: str, url: str, body: Any,
                            status: int) -> None:
    code, answer = client.json(method, url, body)
    assert code == status and "code" in answer["error"]
    assert client.state() == []


def test_a_second_grant_of_one_id_is_a_conflict(client: LeaseClient) -> None:
    assert client.json("POST", "/api/v1/leases", {"ttl": 5, "id": 3})[0] == 200
    code, answer = client.json("POST", "/api/v1/leases", {"ttl": 9, "id": 3})
    assert (code, answer["error"]["code"]) == (409, "conflict")


def test_a_lease_id_beyond_63_bits_is_a_400_not_a_failed_write(client: LeaseClient) -> None:
    for method, url in (("DELETE", "/api/v1/leases/9223372036854775808"),
                        ("POST", "/api/v1/leases/88279200122933743679757/keepalive"),
                        ("GET", "/api/v1/leases/9223372036854775808")):
        code, answer = client.json(method, url)
        assert (code, answer["error"]["code"]) == (400, "bad_request")

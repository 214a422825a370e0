"""Users, roles and tokens on the client API: who gets 200, 401 or 403 where."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.defer import Deferred, succeed

from kvd.auth.limiter import LoginLimiter
from kvd.auth.tokens import TokenSigner
from kvd.web.access import ClientAccess
from kvd.web.public import ClientAPI, Limits
from tests.web.test_public import Client


def inline(f: Any, *args: Any) -> Deferred[Any]:
    return succeed(f(*args))


class Wall:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class AuthClient(Client):
    """A node with auth on: root, ``ann`` (readwrite app/, read pub/) and ``bob`` (no role)."""

    def __init__(self, path: str) -> None:
        super().__init__(path, max_body_bytes=4096)
        from treq.testing import StubTreq

        self.wall = Wall()
        self.login_clock = Wall()
        assert self.node is not None
        self.api = ClientAPI(
            lambda: self.node, Limits(max_key_bytes=64, max_value_bytes=64,
                                      max_body_bytes=4096),
            access=ClientAccess(TokenSigner(lambda: b"a cluster secret for tests",
                                            ttl=300, wall_clock=self.wall)),
            login_limiter=LoginLimiter(self.login_clock, attempts=3, window=60),
            defer_to_thread=inline)
        self.treq = StubTreq(self.api.resource())

    def json(self, method: str, url: str, body: Any = None, token: str | None = None,
             ) -> tuple[int, Any]:
        headers = {} if token is None else {b"Authorization": [b"Bearer " + token.encode()]}
        data = None if body is None else json.dumps(body).encode()
        code, answer, _ = self.call(method, url, data, headers)
        return code, answer

    def login(self, name: str, password: str) -> str:
        code, answer = self.json("POST", "/api/v1/auth/authenticate",
                                 {"name": name, "password": password})
        assert code == 200, answer
        return str(answer["token"])

    def setup(self) -> None:
        for url, body in [
            ("/api/v1/auth/users/root", {"password": "rootpw"}),
            ("/api/v1/auth/users/ann", {"password": "annpw"}),
            ("/api/v1/auth/users/bob", {"password": "bobpw"}),
            ("/api/v1/auth/roles/app", None),
            ("/api/v1/auth/roles/app/permissions", {"prefix": "app/",
                                                    "permission": "readwrite"}),
            ("/api/v1/auth/roles/app/permissions", {"prefix": "pub/", "permission": "read"}),
            ("/api/v1/auth/users/ann/roles/app", None),
        ]:
            code, answer = self.json("PUT", url, body)
            assert code == 200, (url, answer)
        for key in ("app/a", "pub/a", "other"):
            assert self.json("PUT", f"/api/v1/keys/{key}", {"value": "v"})[0] == 200
        assert self.json("POST", "/api/v1/auth/enable")[0] == 200


@pytest.fixture
def secured(tmp_path: Any) -> AuthClient:
    client = AuthClient(str(tmp_path))
    client.setup()
    return client


TXN_APP = {"compare": [{"key": "app/a", "target": "version", "cmp": ">", "value": 0}],
           "success": [{"op": "put", "key": "app/b", "value": "x"}], "failure": []}
TXN_COMPARES_OTHER = {"compare": [{"key": "other", "target": "exists", "value": True}],
                      "success": [{"op": "put", "key": "app/b", "value": "x"}],
                      "failure": []}
TXN_FAILURE_WRITES_PUB = {"compare": [], "success": [{"op": "get", "key": "app/a"}],
                          "failure": [{"op": "delete", "key": "pub/a"}]}

#: (method, url, body) -> what (anonymous, root, ann, bob) get.
TABLE: list[tuple[str, str, Any, tuple[int, int, int, int]]] = [
    ("GET", "/api/v1/keys/app/a", None, (401, 200, 200, 403)),
    ("PUT", "/api/v1/keys/app/a", {"value": "w"}, (401, 200, 200, 403)),
    ("DELETE", "/api/v1/keys/app/zz", None, (401, 404, 404, 403)),
    ("GET", "/api/v1/keys/pub/a", None, (401, 200, 200, 403)),
    ("PUT", "/api/v1/keys/pub/a", {"value": "w"}, (401, 200, 403, 403)),
    ("GET", "/api/v1/keys/other", None, (401, 200, 403, 403)),
    ("POST", "/api/v1/", {"key": "app/c", "value": "1"}, (401, 200, 200, 403)),
    ("POST", "/api/v1/", {"key": "other", "value": "1"}, (401, 200, 403, 403)),
    ("GET", "/api/v1/?keys=app/a,pub/a", None, (401, 200, 200, 403)),
    ("GET", "/api/v1/?keys=app/a,other", None, (401, 200, 403, 403)),
    ("GET", "/api/v1/keys?prefix=app/", None, (401, 200, 200, 403)),
    ("GET", "/api/v1/keys?prefix=app/x&limit=1", None, (401, 200, 200, 403)),
    ("GET", "/api/v1/keys?prefix=ap", None, (401, 200, 403, 403)),
    ("GET", "/api/v1/keys", None, (401, 200, 403, 403)),
    ("GET", "/api/v1/keys?start=app/&end=app0", None, (401, 200, 200, 403)),
    ("GET", "/api/v1/keys?start=app/&end=pub0", None, (401, 200, 403, 403)),
    ("POST", "/api/v1/txn", TXN_APP, (401, 200, 200, 403)),
    ("POST", "/api/v1/txn", TXN_COMPARES_OTHER, (401, 200, 403, 403)),
    ("POST", "/api/v1/txn", TXN_FAILURE_WRITES_PUB, (401, 200, 403, 403)),
    ("GET", "/api/v1/watch?key=other", None, (401, 200, 403, 403)),
    ("GET", "/api/v1/watch?prefix=pub/", None, (401, 200, 200, 403)),
    ("GET", "/api/v1/watch?prefix=p", None, (401, 200, 403, 403)),
    ("GET", "/api/v1/cluster", None, (401, 200, 200, 200)),
    ("GET", "/api/v1/openapi.json", None, (401, 200, 200, 200)),
    ("GET", "/api/v1/auth/users", None, (401, 200, 403, 403)),
    ("GET", "/api/v1/auth/roles", None, (401, 200, 403, 403)),
    ("PUT", "/api/v1/auth/roles/new", None, (401, 200, 403, 403)),
    ("POST", "/api/v1/auth/disable", None, (401, 200, 403, 403)),
    ("GET", "/healthz", None, (200, 200, 200, 200)),
    ("GET", "/readyz", None, (200, 200, 200, 200)),
]


def status(client: AuthClient, method: str, url: str, body: Any, token: str | None) -> int:
    if "/watch" in url:
        # A permitted watch streams: its status line is what is checked.
        headers = {} if token is None else {b"Authorization": [b"Bearer " + token.encode()]}
        d = client.treq.request(method, "http://kvd" + url, headers=headers)
        client.reactor.advance(0)
        client.treq.flush()
        codes: list[int] = []
        d.addCallback(lambda r: codes.append(r.code))
        assert codes, url
        return codes[0]
    return client.json(method, url, body, token)[0]


# Fails if: a scan is checked against its first page instead of its whole range.
@pytest.mark.parametrize("method,url,body,expected", TABLE,
                         ids=[f"{m} {u}" for m, u, _, _ in TABLE])
def test_permission_table(tmp_path: Any, method: str, url: str, body: Any,
                          expected: tuple[int, int, int, int]) -> None:
    client = AuthClient(str(tmp_path))
    client.setup()
    tokens = {who: client.login(who, f"{who}pw") for who in ("root", "ann", "bob")}
    got: dict[str | None, int] = {}
    # Root last: what it may do (disable auth, say) would change the others' answers.
    for who in (None, "bob", "ann", "root"):
        got[who] = status(client, method, url, body, None if who is None else tokens[who])
    assert (got[None], got["root"], got["ann"], got["bob"]) == expected


# Fails if: a txn's compares are not checked before it is proposed (the store's
# check at apply time still refuses it, but only after it took a log entry).
def test_a_refused_write_changes_nothing_and_is_never_proposed(secured: AuthClient) -> None:
    before = secured.state()
    assert secured.node is not None
    logged = secured.node.rlog.last_index
    bob, ann = secured.login("bob", "bobpw"), secured.login("ann", "annpw")
    assert secured.json("PUT", "/api/v1/keys/app/a", {"value": "x"}, bob)[0] == 403
    assert secured.json("POST", "/api/v1/txn", TXN_APP, "junk")[0] == 401
    assert secured.json("POST", "/api/v1/txn", TXN_COMPARES_OTHER, ann)[0] == 403
    assert secured.state() == before
    assert secured.node.rlog.last_index == logged


def test_a_401_says_how_to_authenticate(secured: AuthClient) -> None:
    code, body, headers = secured.call("GET", "/api/v1/keys/app/a")
    assert code == 401 and body["error"]["code"] == "unauthorized"
    assert headers.getRawHeaders(b"WWW-Authenticate") == [b'Bearer realm="kvd"']


# Fails if: a token's expiry is not checked, or its stamp is not compared with the user's.
def test_a_token_expires_and_dies_with_a_new_password_or_a_deleted_user(
        secured: AuthClient) -> None:
    ann, root = secured.login("ann", "annpw"), secured.login("root", "rootpw")
    assert secured.json("GET", "/api/v1/keys/app/a", token=ann)[0] == 200
    secured.wall.now += 301
    assert secured.json("GET", "/api/v1/keys/app/a", token=ann)[0] == 401
    root = secured.login("root", "rootpw")
    ann = secured.login("ann", "annpw")
    assert secured.json("PUT", "/api/v1/auth/users/ann/password", {"password": "new"},
                        root)[0] == 200
    assert secured.json("GET", "/api/v1/keys/app/a", token=ann)[0] == 401
    ann = secured.login("ann", "new")
    assert secured.json("DELETE", "/api/v1/auth/users/ann", token=root)[0] == 200
    assert secured.json("PUT", "/api/v1/auth/users/ann", {"password": "new"}, root)[0] == 200
    assert secured.json("GET", "/api/v1/keys/pub/a", token=ann)[0] == 401


def test_a_revoked_grant_takes_effect_on_the_next_request(secured: AuthClient) -> None:
    ann, root = secured.login("ann", "annpw"), secured.login("root", "rootpw")
    assert secured.json("GET", "/api/v1/keys/pub/a", token=ann)[0] == 200
    assert secured.json("DELETE", "/api/v1/auth/roles/app/permissions?prefix=pub/",
                        token=root)[0] == 200
    assert secured.json("GET", "/api/v1/keys/pub/a", token=ann)[0] == 403


# Fails if: a failed login is not counted.
def test_failed_logins_are_limited_per_user_and_source(secured: AuthClient) -> None:
    for _ in range(3):
        assert secured.json("POST", "/api/v1/auth/authenticate",
                            {"name": "ann", "password": "wrong"})[0] == 401
    code, body, headers = secured.call(
        "POST", "/api/v1/auth/authenticate", b'{"name":"ann","password":"annpw"}')
    assert code == 429 and headers.getRawHeaders(b"Retry-After") == [b"61"]
    assert secured.login("bob", "bobpw")
    secured.login_clock.now += 61
    assert secured.login("ann", "annpw")


def test_an_unknown_user_and_a_wrong_password_look_the_same(secured: AuthClient) -> None:
    wrong = secured.json("POST", "/api/v1/auth/authenticate", {"name": "ann", "password": "x"})
    unknown = secured.json("POST", "/api/v1/auth/authenticate",
                           {"name": "nobody", "password": "x"})
    assert wrong == unknown == (401, {"error": {"code": "unauthorized",
                                                "message": "wrong name or password"}})


def test_auth_is_refused_without_root_and_verbs_need_no_token_until_enabled(
        tmp_path: Any) -> None:
    client = AuthClient(str(tmp_path))
    code, answer = client.json("POST", "/api/v1/auth/enable")
    assert code == 400 and "root" in answer["error"]["message"]
    assert client.json("GET", "/api/v1/auth/status") == (200, {"enabled": False})
    assert client.json("POST", "/api/v1/auth/authenticate",
                       {"name": "root", "password": "x"})[0] == 400
    assert client.json("PUT", "/api/v1/auth/users/root", {"password": "pw"})[0] == 200
    assert client.json("PUT", "/api/v1/auth/users/root", {"password": "pw"})[0] == 409
    assert client.json("PUT", "/api/v1/auth/users/root/roles/nope")[0] == 404
    assert client.json("POST", "/api/v1/auth/enable")[0] == 200
    assert client.json("GET", "/api/v1/auth/status")[0] == 401
    root = client.login("root", "pw")
    assert client.json("GET", "/api/v1/auth/status", token=root) == (200, {"enabled": True})
    assert client.json("POST", "/api/v1/auth/disable", token=root)[0] == 200
    assert client.json("GET", "/api/v1/keys?prefix=a")[0] == 200


@pytest.mark.parametrize("method,url,body", [
    ("PUT", "/api/v1/auth/users/x", {"password": 5}),
    ("PUT", "/api/v1/auth/users/x", {"password": ""}),
    ("PUT", "/api/v1/auth/users/x", [1]),
    ("PUT", "/api/v1/auth/roles/r/permissions", {"prefix": "a", "permission": "all"}),
    ("PUT", "/api/v1/auth/roles/r/permissions", {"prefix": 1, "permission": "read"}),
    ("DELETE", "/api/v1/auth/roles/r/permissions", None),
    ("POST", "/api/v1/auth/authenticate", {"name": ["root"], "password": "x"}),
    ("POST", "/api/v1/auth/authenticate", {"name": "root"}),
    ("POST", "/api/v1/auth/authenticate", "root"),
])
def test_bad_auth_input_is_a_400(tmp_path: Any, method: str, url: str, body: Any) -> None:
    client = AuthClient(str(tmp_path))
    assert client.json(method, url, body)[0] == 400
    assert client.node is not None and client.node.store.auth.revision == 0


# Fails if: the store's request id for an Idempotency-Key leaves the user out (one user
# gets another's remembered result, or a put's answer for a txn: a 500).
def test_an_idempotency_key_is_per_user_and_per_kind_of_request(secured: AuthClient) -> None:
    root, ann = secured.login("root", "rootpw"), secured.login("ann", "annpw")
    secret = {"compare": [], "success": [{"op": "get", "key": "other"}], "failure": []}
    mine = {"compare": [], "success": [{"op": "get", "key": "app/a"}], "failure": []}

    def txn(body: Any, token: str, key: bytes) -> tuple[int, Any]:
        code, answer, _ = secured.call("POST", "/api/v1/txn", json.dumps(body).encode(), {
            b"Authorization": [b"Bearer " + token.encode()], b"Idempotency-Key": [key]})
        return code, answer

    assert txn(secret, root, b"k1")[0] == 200
    code, answer = txn(mine, ann, b"k1")
    assert code == 200 and answer["results"][0]["kv"]["key"] == "app/a", answer
    code, _, _ = secured.call("PUT", "/api/v1/keys/app/x", b'{"value":"v"}', {
        b"Authorization": [b"Bearer " + ann.encode()], b"Idempotency-Key": [b"k2"]})
    assert code == 200
    assert txn(mine, ann, b"k2")[0] == 200


def test_a_password_that_is_not_utf8_is_a_400(secured: AuthClient) -> None:
    body = b'{"name":"root","password":"\\ud800"}'
    assert secured.call("POST", "/api/v1/auth/authenticate", body)[0] == 400
    assert secured.call("PUT", "/api/v1/auth/users/carol", b'{"password":"\\ud800"}', {
        b"Authorization": [b"Bearer " + secured.login("root", "rootpw").encode()]})[0] == 400

"""
The client API: a Klein app over a ``Node``.

It validates input, turns it into store commands or local reads, and renders
every outcome, error included, as JSON with the status the design names. It
knows nothing of kazoo or files.
"""

from __future__ import annotations

import functools
import io
import json
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from klein import Klein
from klein.interfaces import IKleinRequest
from prometheus_client import CONTENT_TYPE_LATEST
from twisted.internet.defer import Deferred, DeferredSemaphore, ensureDeferred
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.protocols.basic import FileSender
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed as RouteMethodNotAllowed
from werkzeug.exceptions import NotFound as RouteNotFound
from werkzeug.routing import BaseConverter, PathConverter, RequestRedirect

from kvd import backup, errors
from kvd.auth.limiter import LoginLimiter
from kvd.auth.passwords import MAX_PASSWORD, hash_password, password_matches
from kvd.auth.state import PERMISSIONS, READ, WRITE, AuthState, valid_name
from kvd.auth.tokens import NoKey, TokenSigner
from kvd.commands import MAX_LEASE_TTL
from kvd.coord.membership import VoterChanges
from kvd.keys import prefix_end
from kvd.metrics import Metrics
from kvd.node import Node
from kvd.store import (
    Result,
    delete_command,
    lease_grant_command,
    lease_keepalive_command,
    lease_revoke_command,
    put_command,
    text_fields,
    txn_command,
)
from kvd.web.access import ClientAccess
from kvd.web.hotroutes import HotRouteResource
from kvd.web.openapi import spec as openapi_spec
from kvd.web.txn import parse_txn, render_result
from kvd.web.values import MAX_INTEGER, optional_integer

log = Logger()

JSON_TYPE = b"application/json"
MAX_TTL_SECONDS = 10 * 365 * 24 * 3600
DEFAULT_SCAN_LIMIT = 1000
MAX_SCAN_LIMIT = 10_000
#: Password hashes run at once, and how many may wait (then 429).
HASHING_THREADS = 2
MAX_WAITING_HASHES = 32


class LeaseClock(Protocol):
    """How long a lease has left on this node (``ExpiryScheduler`` is one)."""

    def remaining(self, lease: int) -> int: ...


#: Found without werkzeug's matcher (``HotRouteResource``): the old calls and keys.
HOT_ROUTES = ("/api/v1/", "/api/v1/keys/<key:key>")


@dataclass(frozen=True)
class Limits:
    max_key_bytes: int = 1024
    max_value_bytes: int = 1024 * 1024
    max_body_bytes: int = 2 * 1024 * 1024
    #: Open watches this node serves at once.
    max_watches: int = 1024


def dumps(obj: Any) -> bytes:
    """Compact JSON, as the old API wrote it, plus a newline for terminals."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


class KeyConverter(PathConverter):
    """A key in a path: like ``path``, but any character, newlines included."""

    regex = r"[^/][\s\S]*?"


class NodeIdConverter(BaseConverter):
    """A node id in a path: one segment, never ``replace`` (which is
    ``POST /api/v1/members/replace``, so that path advertises POST alone)."""

    regex = r"(?!replace$)[^/]+"


class ClusterControl(Protocol):
    """What the API asks of the cluster's coordinator (``ClusterCoordinator`` is one)."""

    def describe_members(self) -> list[dict[str, Any]]: ...

    async def transfer(self, target: str | None) -> str: ...

    @property
    def voter_changes(self) -> VoterChanges: ...


class ClientAPI:
    """Routes of ``/api/v1`` and the health endpoints."""

    app = Klein()
    app.url_map.converters["key"] = KeyConverter
    app.url_map.converters["node_id"] = NodeIdConverter

    def __init__(self, node: Callable[[], Node | None], limits: Limits = Limits(),
                 metrics: Metrics | None = None, access: ClientAccess | None = None,
                 login_limiter: LoginLimiter | None = None,
                 defer_to_thread: Callable[..., Deferred[Any]] = deferToThread,
                 cluster: Callable[[], ClusterControl | None] = lambda: None,
                 leases: Callable[[], LeaseClock | None] = lambda: None) -> None:
        """``access`` checks tokens (default: signed with a fixed test key);
        ``defer_to_thread`` runs password hashing off the reactor; ``cluster``
        gives the coordinator once there is one (never for a standalone node);
        ``leases`` tells how long a lease has left on this node."""
        self._node = node
        self._cluster = cluster
        self.lease_clock = leases
        self.limits = limits
        self.metrics = metrics
        if access is None:
            key = secrets.token_bytes(32)  # tokens good for this object only
            access = ClientAccess(TokenSigner(lambda: key))
        self.access = access
        self.login_limiter = login_limiter or LoginLimiter(lambda: self.node().clock.seconds())
        self._defer_to_thread = defer_to_thread
        self._hashing = DeferredSemaphore(HASHING_THREADS)
        #: The watches streaming now (bounded by ``limits.max_watches``).
        self.watches: set[object] = set()

    def resource(self) -> Any:
        return HotRouteResource(self.app, HOT_ROUTES)

    # Plumbing

    def node(self) -> Node:
        node = self._node()
        if node is None:
            raise errors.NotReady("the node is still starting (recovering its WAL)")
        return node

    def _respond(self, request: IRequest, status: int, body: Any) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", JSON_TYPE)
        node = self._node()
        if node is not None:
            request.setHeader(b"X-Kvd-Revision", str(node.store.revision).encode())
            if node.leader_info is not None:
                request.setHeader(b"X-Kvd-Leader", node.leader_info["url"].encode())
        return dumps(body)

    @app.handle_errors(errors.ApiError)
    def _kvd_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, errors.ApiError)
        if error.status == 503:
            request.setHeader(b"Retry-After", b"1")
        elif error.status == 401:
            request.setHeader(b"WWW-Authenticate", b'Bearer realm="kvd"')
        elif error.status == 429 and "retry_after" in error.details:
            request.setHeader(b"Retry-After", str(error.details["retry_after"]).encode())
        return self._respond(request, error.status, error.as_json())

    @app.handle_errors(RouteNotFound)
    def _no_route(self, request: IRequest, failure: Failure) -> bytes:
        path = request.path.decode("utf-8", "replace")
        return self._respond(request, 404, errors.NotFound(f"no such path: {path}").as_json())

    @app.handle_errors(RouteMethodNotAllowed)
    def _bad_method(self, request: IRequest, failure: Failure) -> bytes:
        method = request.method.decode("ascii", "replace")
        allowed = getattr(failure.value, "valid_methods", None) or []
        if allowed:
            request.setHeader(b"Allow", ", ".join(allowed).encode())
        error = errors.MethodNotAllowed(f"{method} is not allowed on this path")
        return self._respond(request, 405, error.as_json())

    @app.handle_errors(RequestRedirect)
    def _slash_redirect(self, request: IRequest, failure: Failure) -> bytes:
        # werkzeug offers "/x" -> "/x/" redirects; this API has no such aliases.
        mapper = IKleinRequest(request).mapper
        allowed = mapper.allowed_methods(request.path.decode("utf-8", "replace"))
        if allowed:
            request.setHeader(b"Allow", ", ".join(allowed).encode())
            method = request.method.decode("ascii", "replace")
            error: errors.ApiError = errors.MethodNotAllowed(
                f"{method} is not allowed on this path")
        else:
            error = errors.NotFound(f"no such path: {request.path.decode('utf-8', 'replace')}")
        return self._respond(request, error.status, error.as_json())

    @app.handle_errors(Exception)
    def _bug(self, request: IRequest, failure: Failure) -> bytes:
        log.failure("Unexpected error serving {path}", failure, path=request.path)
        return self._respond(request, 500, errors.ApiError("internal error").as_json())

    def _body(self, request: IRequest, required: bool = True) -> Any:
        length = request.getHeader(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limits.max_body_bytes:
            raise errors.TooLarge(f"body larger than {self.limits.max_body_bytes} bytes")
        raw = request.content.read(self.limits.max_body_bytes + 1) if request.content else b""
        if len(raw) > self.limits.max_body_bytes:
            raise errors.TooLarge(f"body larger than {self.limits.max_body_bytes} bytes")
        if not raw.strip():
            if required:
                raise errors.BadRequest("a JSON body is required")
            return None
        try:
            return json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            raise errors.BadRequest(f"body is not UTF-8: {e.reason} at byte {e.start}") from None
        except json.JSONDecodeError as e:
            raise errors.BadRequest(f"malformed JSON: {e.msg} at line {e.lineno} "
                                    f"column {e.colno}") from None

    def _key(self, key: Any, field: str = "key") -> bytes:
        if not isinstance(key, str):
            raise errors.BadRequest(f"'{field}' must be a string")
        if not key:
            raise errors.BadRequest(f"'{field}' must not be empty")
        encoded = _utf8(key, field)
        if len(encoded) > self.limits.max_key_bytes:
            raise errors.TooLarge(f"key longer than {self.limits.max_key_bytes} bytes")
        return encoded

    def _value(self, value: Any) -> bytes:
        if not isinstance(value, str):
            raise errors.BadRequest("'value' must be a string")
        encoded = _utf8(value, "value")
        if len(encoded) > self.limits.max_value_bytes:
            raise errors.TooLarge(f"value longer than {self.limits.max_value_bytes} bytes")
        return encoded

    @staticmethod
    def _ttl(ttl: Any) -> int | None:
        return optional_integer(ttl, "ttl", 1, MAX_TTL_SECONDS)

    @staticmethod
    def _request_id(request: IRequest) -> str:
        supplied = request.getHeader(b"idempotency-key")
        if supplied is None:
            return uuid.uuid4().hex
        if not supplied or len(supplied) > 128:
            raise errors.BadRequest("Idempotency-Key must be 1 to 128 bytes")
        return "c:" + supplied.decode("latin-1")

    def propose(self, request: IRequest, command: dict[str, Any],
               user: str | None) -> Deferred[Result]:
        """Propose ``command`` on behalf of ``user`` (checked again when it applies)."""
        node = self.node()
        rid = command.get("rid")
        if isinstance(rid, str) and rid.startswith("c:"):
            command["rid"] = client_request_id(rid[2:], command, user)
        if user is not None:
            command["user"] = user
            # The password generation the token was checked against: a token voided
            # by a new password is refused where the write applies, too.
            command["stamp"] = self._auth().stamp(user)
        return node.submit([command]).addCallback(_refused_at_apply)

    async def _barrier(self, request: IRequest) -> Node:
        consistency = _query(request, "consistency")
        consistency = "linearizable" if consistency is None else consistency
        if consistency not in ("linearizable", "stale"):
            raise errors.BadRequest("consistency must be 'linearizable' or 'stale'")
        return await self.barrier(consistency == "linearizable",
                                  _int_query(request, "min_revision") or 0)

    async def barrier(self, linearizable: bool, min_revision: int = 0) -> Node:
        """The node, once a read on it sees every write committed before now
        (``linearizable``) or at least ``min_revision``."""
        node = self.node()
        await node.read_barrier(linearizable, min_revision)
        return node

    def _auth(self) -> AuthState:
        return self.node().store.auth

    def caller(self, request: IRequest) -> str | None:
        """The user the request speaks for (None: auth is off); 401 without a token."""
        return self.access.caller(request, self._auth())

    # Health

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request: IRequest) -> bytes:
        return self._respond(request, 200, {"status": "ok"})

    @app.route("/api/v1/openapi.json", methods=["GET"])
    def openapi(self, request: IRequest) -> bytes:
        self.caller(request)
        return self._respond(request, 200, openapi_spec())

    @app.route("/metrics", methods=["GET"])
    def metrics_page(self, request: IRequest) -> bytes:
        if self.metrics is None:
            raise errors.NotFound("metrics are not enabled")
        if self.access.metrics_auth:
            self.caller(request)  # 503 while recovering: the auth state is not known yet
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        return self.metrics.render()

    @app.route("/readyz", methods=["GET"])
    def readyz(self, request: IRequest) -> bytes:
        node = self._node()
        reason = "recovering the WAL" if node is None else node.unavailable
        if node is None or reason is not None:
            request.setHeader(b"Retry-After", b"1")
            return self._respond(request, 503, {"status": "not ready", "reason": reason})
        return self._respond(request, 200, {"status": "ready", "role": node.role.value})

    # The old API, byte-compatible

    @app.route("/api/v1/", methods=["POST"])
    async def legacy_put(self, request: IRequest) -> bytes:
        user = self.caller(request)
        body = self._body(request)
        if not isinstance(body, dict):
            raise errors.BadRequest('body must be an object {"key": ..., "value": ...}')
        key = self._key(body.get("key"))
        value = self._value(body.get("value"))
        self.access.permit_keys(self._auth(), user, WRITE, [key])
        result = await self.propose(request, put_command(key, value, self._request_id(request)),
                                   user)
        return self._respond(request, 200, {"key": body["key"], "revision": result["revision"]})

    @app.route("/api/v1/", methods=["GET"])
    async def legacy_get(self, request: IRequest) -> bytes:
        user = self.caller(request)
        if _query(request, "keys") is not None:
            names: Any = [k for k in (_query(request, "keys") or "").split(",") if k]
            if not names:
                raise errors.BadRequest("'keys' must name at least one key")
        else:
            body = self._body(request)
            if not isinstance(body, dict) or not isinstance(body.get("keys"), list):
                raise errors.BadRequest('body must be an object {"keys": [...]}')
            names = body["keys"]
        keys = [self._key(k, "keys[]") for k in names]
        node = await self._barrier(request)
        # After the barrier: a linearizable read sees every revoke committed before it.
        self.access.permit_keys(node.store.auth, user, READ, keys)
        values = []
        for key in keys:
            kv = node.store.get(key)
            values.append(None if kv is None else kv.value.decode("utf-8"))
        return self._respond(request, 200, values)

    # Keys

    @app.route("/api/v1/keys/<key:key>", methods=["PUT"])
    async def put(self, request: IRequest, key: str) -> bytes:
        user = self.caller(request)
        encoded = self._key(key)
        self.access.permit_keys(self._auth(), user, WRITE, [encoded])
        body = self._body(request)
        if not isinstance(body, dict):
            raise errors.BadRequest('body must be an object {"value": ...}')
        unknown = set(body) - {"value", "prev_revision", "ttl", "lease"}
        if unknown:
            raise errors.BadRequest(f"unknown fields: {', '.join(sorted(unknown))}")
        value = self._value(body.get("value"))
        prev = optional_integer(body.get("prev_revision"), "prev_revision")
        ttl = self._ttl(body.get("ttl"))
        lease = optional_integer(body.get("lease"), "lease", 1)
        if ttl is not None and lease is not None:
            raise errors.BadRequest("give a key 'ttl' or 'lease', not both")
        command = put_command(encoded, value, self._request_id(request), prev, ttl)
        if lease is not None:
            command["lease"] = lease
        result = await self.propose(request, command, user)
        return self._write_answer(request, key, result)

    @app.route("/api/v1/keys/", methods=["GET", "PUT", "DELETE"])
    def empty_key(self, request: IRequest) -> bytes:
        self.caller(request)
        raise errors.BadRequest("'key' must not be empty")

    @app.route("/api/v1/keys/<key:key>", methods=["DELETE"])
    async def delete(self, request: IRequest, key: str) -> bytes:
        user = self.caller(request)
        encoded = self._key(key)
        self.access.permit_keys(self._auth(), user, WRITE, [encoded])
        prev = _int_query(request, "prev_revision")
        result = await self.propose(
            request, delete_command(encoded, self._request_id(request), prev), user)
        return self._write_answer(request, key, result)

    def _write_answer(self, request: IRequest, key: str, result: Result) -> bytes:
        if result.get("ok"):
            return self._respond(request, 200, {"key": key, "revision": result["revision"]})
        if result.get("error") == "conflict":
            raise errors.Conflict(
                "prev_revision does not match", key=key,
                current_revision=result["current_revision"],
            )
        if result.get("error") == "not_found":
            raise errors.KeyNotFound(f"key not found: {key}", key=key)
        if result.get("error") == "lease_not_found":
            raise errors.NotFound("lease not found")
        raise errors.ApiError(f"unexpected result {result!r}")

    @app.route("/api/v1/keys/<key:key>", methods=["GET"])
    async def get(self, request: IRequest, key: str) -> bytes:
        user = self.caller(request)
        encoded = self._key(key)
        node = await self._barrier(request)
        self.access.permit_keys(node.store.auth, user, READ, [encoded])
        kv = node.store.get(encoded)
        if kv is None:
            raise errors.KeyNotFound(f"key not found: {key}", key=key)
        return self._respond(request, 200, kv.as_json())

    @app.route("/api/v1/keys", methods=["GET"])
    async def scan(self, request: IRequest) -> bytes:
        """Keys in order: by ``prefix``, or ``start``/``end``; paged with ``page_token``."""
        user = self.caller(request)
        prefix = _utf8(_query(request, "prefix") or "", "prefix")
        start = max(prefix, _utf8(_query(request, "start") or "", "start"))
        end = prefix_end(prefix)
        end_text = _query(request, "end")
        if end_text is not None:
            end = _utf8(end_text, "end") if end is None else min(end, _utf8(end_text, "end"))
        token = _query(request, "page_token")
        if token is not None:
            start = max(start, _decode_token(token))
        limit = _int_query(request, "limit")
        limit = DEFAULT_SCAN_LIMIT if limit is None else limit
        if not 0 < limit <= MAX_SCAN_LIMIT:
            raise errors.BadRequest(f"'limit' must be from 1 to {MAX_SCAN_LIMIT}")
        keys_only = _flag(request, "keys_only")
        count_only = _flag(request, "count_only")
        node = await self._barrier(request)
        # The whole range asked for, not just the page: a scan lies within a grant.
        self.access.permit_range(node.store.auth, user, READ, start, end)
        store = node.store
        if count_only:
            return self._respond(request, 200, {"count": store.count(start, end)})
        page = list(store.range(start, end, limit + 1))
        more = len(page) > limit
        page = page[:limit]
        kvs = [{"key": kv.key.decode("utf-8")} if keys_only else kv.as_json() for kv in page]
        body: dict[str, Any] = {"kvs": kvs, "count": len(kvs), "more": more}
        if more:
            body["next_page_token"] = _encode_token(page[-1].key + b"\x00")
        return self._respond(request, 200, body)

    # Transactions

    @app.route("/api/v1/txn", methods=["POST"])
    async def txn(self, request: IRequest) -> bytes:
        user = self.caller(request)
        compare, success, failure = parse_txn(self._body(request), self._key, self._value,
                                              self._ttl)
        # Every key it could touch, whichever branch runs; compares read.
        ops = [*success, *failure]
        reads = [c["k"] for c in compare] + [op["k"] for op in ops if op["op"] == "get"]
        auth = self._auth()
        self.access.permit_keys(auth, user, READ, reads)
        self.access.permit_keys(auth, user, WRITE, [op["k"] for op in ops if op["op"] != "get"])
        result = await self.propose(
            request, txn_command(compare, success, failure, self._request_id(request)), user)
        return self._respond(request, 200, render_result(result))

    # Watches

    @app.route("/api/v1/watch", methods=["GET"])
    def watch(self, request: IRequest) -> Deferred[None]:
        """Newline-delimited JSON events in revision order, from ``start_revision``."""
        user = self.caller(request)
        key, prefix = _query(request, "key"), _query(request, "prefix")
        if (key is None) == (prefix is None):
            raise errors.BadRequest("give exactly one of 'key' or 'prefix'")
        start_revision = _int_query(request, "start_revision")
        node = self.node()
        if key is not None:
            wanted = self._key(key)

            def matches(k: bytes) -> bool:
                return k == wanted
        else:
            wanted = _utf8(prefix or "", "prefix")

            def matches(k: bytes) -> bool:
                return k.startswith(wanted)

        self.access.permit_range(node.store.auth, user, READ, wanted,
                                 wanted + b"\x00" if key is not None else prefix_end(wanted))
        if len(self.watches) >= self.limits.max_watches:
            raise errors.TooMany(f"this node serves at most {self.limits.max_watches} watches")
        return Watch(self, request, node, matches, start_revision).start()

    # Users, roles, tokens

    @app.route("/api/v1/auth/authenticate", methods=["POST"])
    async def authenticate(self, request: IRequest) -> bytes:
        """A token for a name and password; failures are limited per user and source."""
        body = self._body(request)
        if not isinstance(body, dict):
            raise errors.BadRequest('body must be an object {"name": ..., "password": ...}')
        name, password = _name(body.get("name"), "name"), _password(body.get("password"))
        return self._respond(request, 200, {"token": await self.login(request, name, password)})

    async def login(self, request: IRequest, name: str, password: str) -> str:
        """A token for ``name`` if ``password`` is its password: 400 while auth is
        off, 429 after too many failures for the user from the request's source."""
        auth = self._auth()
        if not auth.enabled:
            raise errors.BadRequest("auth is not enabled", reason="auth_not_enabled")
        source = _source(request)
        wait = self.login_limiter.retry_after(name, source)
        if wait is not None:
            raise errors.TooMany(f"too many failed logins for {name}; try again later",
                                 retry_after=int(wait) + 1)
        stored = auth.password_hash(name)
        stamp = auth.stamp(name)
        # Counted before the hash, so that concurrent guesses count too; a success
        # clears it.
        self.login_limiter.failed(name, source)
        matches = await self._hash(_login_matches, stored, password)
        if not matches or self._auth().stamp(name) != stamp:
            raise errors.Unauthorized("wrong name or password")
        self.login_limiter.succeeded(name, source)
        try:
            return self.access.tokens.issue(name, stamp or 0)
        except NoKey:
            raise errors.NotReady("the cluster secret is not known yet") from None

    async def _hash(self, f: Callable[..., Any], *args: Any) -> Any:
        """Run a password hash in a thread, a few at a time; 429 when too many wait
        (each costs ~50 ms and 16 MiB, and the thread pool also writes snapshots)."""
        if len(self._hashing.waiting) >= MAX_WAITING_HASHES:
            raise errors.TooMany("too many logins at once; try again", retry_after=1)
        return await self._hashing.run(self._defer_to_thread, f, *args)

    async def _auth_change(self, request: IRequest, action: str, **fields: Any) -> bytes:
        """Propose one auth command (root only once auth is on) and render its result."""
        user = self._admin(request)
        result = await self.propose(request, {"op": "auth", "action": action,
                                             "rid": self._request_id(request), **fields}, user)
        if result.get("ok"):
            return self._respond(request, 200, {"ok": True})
        message = str(result.get("message", result.get("error")))
        if result.get("error") == "exists":
            raise errors.Conflict(message)
        if result.get("error") == "not_found":
            raise errors.NotFound(message)
        raise errors.BadRequest(message)

    def _admin(self, request: IRequest) -> str | None:
        """The caller, who must hold the root role once auth is on."""
        auth = self._auth()
        user = self.access.caller(request, auth)
        self.access.permit_admin(auth, user)
        return user

    @app.route("/api/v1/auth/status", methods=["GET"])
    def auth_status(self, request: IRequest) -> bytes:
        self.caller(request)
        return self._respond(request, 200, {"enabled": self._auth().enabled})

    @app.route("/api/v1/auth/enable", methods=["POST"])
    async def auth_enable(self, request: IRequest) -> bytes:
        return await self._auth_change(request, "enable")

    @app.route("/api/v1/auth/disable", methods=["POST"])
    async def auth_disable(self, request: IRequest) -> bytes:
        return await self._auth_change(request, "disable")

    @app.route("/api/v1/auth/users", methods=["GET"])
    def users(self, request: IRequest) -> bytes:
        self._admin(request)
        return self._respond(request, 200, {"users": self._auth().describe_users()})

    @app.route("/api/v1/auth/users/<name>", methods=["PUT"])
    async def user_add(self, request: IRequest, name: str) -> bytes:
        self._admin(request)
        return await self._set_password(request, "user_add", name)

    @app.route("/api/v1/auth/users/<name>/password", methods=["PUT"])
    async def user_passwd(self, request: IRequest, name: str) -> bytes:
        self._admin(request)
        return await self._set_password(request, "user_passwd", name)

    async def _set_password(self, request: IRequest, action: str, name: str) -> bytes:
        name = _name(name, "name")
        body = self._body(request)
        if not isinstance(body, dict):
            raise errors.BadRequest('body must be an object {"password": ...}')
        hashed = await self._hash(hash_password, _password(body.get("password")))
        return await self._auth_change(request, action, name=name, hash=hashed)

    @app.route("/api/v1/auth/users/<name>", methods=["DELETE"])
    async def user_delete(self, request: IRequest, name: str) -> bytes:
        return await self._auth_change(request, "user_delete", name=_name(name, "name"))

    @app.route("/api/v1/auth/users/<name>/roles/<role>", methods=["PUT", "DELETE"])
    async def user_role(self, request: IRequest, name: str, role: str) -> bytes:
        action = "user_grant" if request.method == b"PUT" else "user_revoke"
        return await self._auth_change(request, action, name=_name(name, "name"),
                                       role=_name(role, "role"))

    @app.route("/api/v1/auth/roles", methods=["GET"])
    def roles(self, request: IRequest) -> bytes:
        self._admin(request)
        return self._respond(request, 200, {"roles": self._auth().describe_roles()})

    @app.route("/api/v1/auth/roles/<role>", methods=["PUT", "DELETE"])
    async def role(self, request: IRequest, role: str) -> bytes:
        action = "role_add" if request.method == b"PUT" else "role_delete"
        return await self._auth_change(request, action, role=_name(role, "role"))

    @app.route("/api/v1/auth/roles/<role>/permissions", methods=["PUT"])
    async def role_grant(self, request: IRequest, role: str) -> bytes:
        self._admin(request)
        body = self._body(request)
        if not isinstance(body, dict) or not isinstance(body.get("prefix"), str):
            raise errors.BadRequest('body must be an object {"prefix": ..., "permission": ...}')
        permission = body.get("permission")
        if not isinstance(permission, str) or permission not in PERMISSIONS:
            raise errors.BadRequest("'permission' must be read, write or readwrite")
        return await self._auth_change(request, "role_grant", role=_name(role, "role"),
                                       prefix=self._prefix(body["prefix"]), perm=permission)

    @app.route("/api/v1/auth/roles/<role>/permissions", methods=["DELETE"])
    async def role_revoke(self, request: IRequest, role: str) -> bytes:
        self._admin(request)
        prefix = _query(request, "prefix")
        if prefix is None:
            raise errors.BadRequest("query parameter 'prefix' is required")
        return await self._auth_change(request, "role_revoke", role=_name(role, "role"),
                                       prefix=self._prefix(prefix))

    def _prefix(self, prefix: str) -> bytes:
        encoded = _utf8(prefix, "prefix")
        if len(encoded) > self.limits.max_key_bytes:
            raise errors.TooLarge(f"prefix longer than {self.limits.max_key_bytes} bytes")
        return encoded

    # Leases

    @app.route("/api/v1/leases", methods=["POST"])
    async def lease_grant(self, request: IRequest) -> bytes:
        """A new lease: ``{"ttl": seconds}``, with an ``id`` of the client's or not."""
        user = self.caller(request)
        body = self._body(request)
        if not isinstance(body, dict) or set(body) - {"ttl", "id"}:
            raise errors.BadRequest('body must be an object {"ttl": seconds, "id": optional}')
        ttl = optional_integer(body.get("ttl"), "ttl", 1, MAX_LEASE_TTL)
        if ttl is None:
            raise errors.BadRequest("'ttl' is required")
        lease = optional_integer(body.get("id"), "id", 1) or secrets.randbits(63) or 1
        result = await self.propose(
            request, lease_grant_command(lease, ttl, self._request_id(request)), user)
        if result.get("error") == "lease_exists":
            raise errors.Conflict(f"lease {lease} exists", id=lease)
        # A retried grant (same Idempotency-Key) answers the first grant's id.
        return self._respond(request, 200, {"id": result["id"], "ttl": result["ttl"]})

    @app.route("/api/v1/leases", methods=["GET"])
    async def lease_list(self, request: IRequest) -> bytes:
        self.caller(request)
        node = await self._barrier(request)
        return self._respond(request, 200, {"leases": [
            self._lease_json(node, lease) for lease in sorted(node.store.leases)]})

    @app.route("/api/v1/leases/<int:lease>", methods=["GET"])
    async def lease_show(self, request: IRequest, lease: int) -> bytes:
        """A lease, its time left and the keys attached to it."""
        user = self.caller(request)
        _lease_in_range(lease)
        node = await self._barrier(request)
        if lease not in node.store.leases:
            raise errors.NotFound(f"lease {lease} not found", id=lease)
        keys = sorted(node.store.lease_keys[lease])
        self.access.permit_keys(node.store.auth, user, READ, keys)
        return self._respond(request, 200, {**self._lease_json(node, lease),
                                            "keys": [text_fields("key", k) for k in keys]})

    def _lease_json(self, node: Node, lease: int) -> dict[str, Any]:
        granted = node.store.leases[lease]
        clock = self.lease_clock()
        return {"id": lease, "granted_ttl": granted,
                "ttl": granted if clock is None else clock.remaining(lease)}

    @app.route("/api/v1/leases/<int:lease>/keepalive", methods=["POST"])
    async def lease_keepalive(self, request: IRequest, lease: int) -> bytes:
        user = self.caller(request)
        _lease_in_range(lease)
        result = await self.propose(request, lease_keepalive_command(lease), user)
        if not result.get("ok"):
            raise errors.NotFound(f"lease {lease} not found", id=lease)
        return self._respond(request, 200, {"id": lease, "ttl": result["ttl"]})

    @app.route("/api/v1/leases/<int:lease>", methods=["DELETE"])
    async def lease_revoke(self, request: IRequest, lease: int) -> bytes:
        """Revoke a lease: its keys are deleted at one revision."""
        user = self.caller(request)
        _lease_in_range(lease)
        result = await self.propose(
            request, lease_revoke_command(lease, self._request_id(request)), user)
        if not result.get("ok"):
            raise errors.NotFound(f"lease {lease} not found", id=lease)
        return self._respond(request, 200, {"id": lease, "revision": result["revision"],
                                            "deleted": result.get("deleted", 0)})

    # Leadership

    @app.route("/api/v1/leader/transfer", methods=["POST"])
    async def leader_transfer(self, request: IRequest) -> bytes:
        """Hand leadership over (``{"target": id}``, or the most caught-up voter);
        answers once this node has resigned for it. Root only with auth on."""
        self._admin(request)
        body = self._body(request, required=False)
        if body is not None and not isinstance(body, dict):
            raise errors.BadRequest('body must be an object {"target": node id}')
        target = None if body is None else body.get("target")
        if target is not None and not isinstance(target, str):
            raise errors.BadRequest("'target' must be a node id")
        node = self.node()
        cluster = self._cluster()
        if cluster is None:
            raise errors.BadRequest("a standalone node has no one to hand leadership to")
        if node.leader is None:
            leader = (node.leader_info or {}).get("url")
            raise errors.NotReady(f"this node does not lead; ask the leader at {leader}")
        handed_to = await cluster.transfer(target)
        return self._respond(request, 200, {"target": handed_to})

    # Membership (safety rule 4)

    @app.route("/api/v1/members", methods=["GET"])
    def members(self, request: IRequest) -> bytes:
        """Every member with its role, whether it votes, and how far behind it is."""
        self.caller(request)
        node = self.node()
        cluster = self._cluster()
        rows = [node.own_member()] if cluster is None else cluster.describe_members()
        voters = node.voters()
        members = [{"node_id": row["node_id"], "url": row.get("url"),
                    "peer_url": row.get("peer_url"), "voter": row["node_id"] in voters,
                    "role": row.get("role"), "last_index": row.get("last_index"),
                    "lag": row.get("lag")} for row in rows]
        sets = node.voter_sets()
        answer: dict[str, Any] = {"members": members, "voters": sorted(sets[-1])}
        if len(sets) > 1:
            answer["joint_with"] = sorted(sets[0])
        return self._respond(request, 200, answer)

    def _voter_changes(self, request: IRequest) -> VoterChanges:
        self._admin(request)
        cluster = self._cluster()
        if cluster is None:
            raise errors.BadRequest("a standalone node has no voter set to change")
        return cluster.voter_changes

    @app.route("/api/v1/members/<node_id:node_id>/promote", methods=["POST"])
    async def member_promote(self, request: IRequest, node_id: str) -> bytes:
        """Make a caught-up learner a voter; answers once the change committed."""
        answer = await self._voter_changes(request).promote(node_id)
        return self._respond(request, 200, answer)

    @app.route("/api/v1/members/<node_id:node_id>", methods=["DELETE"])
    async def member_remove(self, request: IRequest, node_id: str) -> bytes:
        """Take a voter out of the set (the leader too: it hands over, then leaves)."""
        answer = await self._voter_changes(request).remove(node_id)
        return self._respond(request, 200, answer)

    @app.route("/api/v1/members/replace", methods=["POST"])
    async def member_replace(self, request: IRequest) -> bytes:
        """``{"old", "new"}``: one voter out, a caught-up learner in, in one change."""
        changes = self._voter_changes(request)
        body = self._body(request)
        if not isinstance(body, dict) or not all(
                isinstance(body.get(f), str) and body[f] for f in ("old", "new")):
            raise errors.BadRequest('body must be {"old": node id, "new": node id}')
        answer = await changes.replace(body["old"], body["new"])
        return self._respond(request, 200, answer)

    # Backups

    @app.route("/api/v1/snapshot", methods=["GET"])
    async def backup(self, request: IRequest) -> bytes:
        """The store at one applied index, as a snapshot file (``kvd/backup.py``).

        Copied on the reactor (a dict copy, as for a snapshot), encoded in a
        thread, sent with backpressure; root only once auth is on. A
        linearizable backup (the default) holds every write acknowledged
        before it was asked for.
        """
        self._admin(request)
        node = await self._barrier(request)
        self._admin(request)  # again after the barrier: a revoke committed before counts
        state = node.store.snapshot_state()
        epoch = node.rlog.epoch_at(state["applied_index"]) or 0
        data, digest = await self._defer_to_thread(backup.encode_with_checksum, epoch, state)
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"application/octet-stream")
        request.setHeader(b"Content-Length", str(len(data)).encode())
        request.setHeader(b"X-Kvd-Revision", str(state["revision"]).encode())
        request.setHeader(b"X-Kvd-Snapshot-Index", str(state["applied_index"]).encode())
        request.setHeader(b"X-Kvd-Snapshot-Sha256", digest.encode())
        await FileSender().beginFileTransfer(io.BytesIO(data), request)
        return b""

    # Cluster

    @app.route("/api/v1/cluster", methods=["GET"])
    def cluster(self, request: IRequest) -> bytes:
        self.caller(request)
        node = self.node()
        cluster = self._cluster()
        status = node.status()
        status["members"] = [node.own_member()] if cluster is None else cluster.describe_members()
        return self._respond(request, 200, status)


class Watch:
    """One client's event stream; it ends when the client goes or the store is replaced."""

    def __init__(self, api: ClientAPI, request: IRequest, node: Node,
                 matches: Callable[[bytes], bool], start_revision: int | None) -> None:
        self.api = api
        self.request = request
        self.node = node
        self.store = node.store
        self.matches = matches
        self.start_revision = start_revision
        self.done: Deferred[None] = Deferred(lambda _: self._close())

    def start(self) -> Deferred[None]:
        store = self.store
        backlog: list[Any] = []
        if self.start_revision:
            if self.start_revision <= store.history_start < store.revision:
                raise errors.Gone(
                    f"revision {self.start_revision} is compacted; the oldest available is "
                    f"{store.history_start + 1}", compact_revision=store.history_start)
            backlog = [e for e in store.events_since(self.start_revision)
                       if self.matches(e.key)]
        self.api.watches.add(self)
        self.api._respond(self.request, 200, None)
        self.request.setHeader(b"Content-Type", b"application/x-ndjson")
        # Send the headers now: a watcher learns at once that the stream is open.
        self.request.write(b"")
        # Registered in the same reactor turn as the backlog is read: no gap, no repeat.
        store.listeners.append(self._event)
        self.node.on_store_replaced.append(self._store_replaced)
        for event in backlog:
            self._event(event)
        return self.done

    def _event(self, event: Any) -> None:
        if self.matches(event.key):
            self.request.write(dumps(event.as_json()))

    def _store_replaced(self, old: Any) -> None:
        # A snapshot jumped over events: the client resumes from its last revision.
        self._close()
        if not self.done.called:
            self.done.callback(None)

    def _close(self) -> None:
        self.api.watches.discard(self)
        if self._event in self.store.listeners:
            self.store.listeners.remove(self._event)
        if self._store_replaced in self.node.on_store_replaced:
            self.node.on_store_replaced.remove(self._store_replaced)


def client_request_id(key: str, command: dict[str, Any], user: str | None) -> str:
    """The store's request id for a client's Idempotency-Key: per user and kind of
    request, so that nobody gets another's remembered result, nor a put's for a txn."""
    kind = str(command.get("op")) + (f".{command['action']}" if command.get("op") == "auth"
                                     else "")
    return f"c:{kind}:{user or ''}:{key}"


def _lease_in_range(lease: int) -> None:
    if not 0 < lease <= MAX_INTEGER:
        raise errors.BadRequest(f"a lease id is an integer from 1 to {MAX_INTEGER}")


@functools.cache
def _decoy_hash() -> bytes:
    return hash_password("a password no user has")


def _login_matches(stored: bytes | None, password: str) -> bool:
    """In a thread: an unknown name costs a hash too, so timing hides which names exist."""
    return password_matches(stored or _decoy_hash(), password) and stored is not None


def _name(value: Any, field: str) -> str:
    if not valid_name(value):
        raise errors.BadRequest(f"'{field}' must be 1 to 128 printable characters")
    assert isinstance(value, str)
    return value


def _password(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_PASSWORD:
        raise errors.BadRequest(f"'password' must be a string of 1 to {MAX_PASSWORD} "
                                "characters")
    _utf8(value, "password")
    return value


def _source(request: IRequest) -> str:
    address = request.getClientAddress()
    return str(getattr(address, "host", address))


def _refused_at_apply(results: list[Result]) -> Result:
    """The one result of a one-command submit; a 403 if the store refused its user."""
    result = results[0]
    if result.get("error") == "permission_denied":
        raise errors.PermissionDenied("the user's roles no longer allow this (checked when "
                                      "it applied)")
    return result


def _flag(request: IRequest, name: str) -> bool:
    text = _query(request, name)
    if text is None:
        return False
    if text not in ("true", "false", "1", "0"):
        raise errors.BadRequest(f"query parameter '{name}' must be true or false")
    return text in ("true", "1")


def _encode_token(key: bytes) -> str:
    return key.hex()


def _decode_token(token: str) -> bytes:
    try:
        return bytes.fromhex(token)
    except ValueError:
        raise errors.BadRequest("'page_token' is not a token this API gave out") from None


def _utf8(text: str, field: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise errors.BadRequest(f"'{field}' is not valid UTF-8 text") from None


def _query(request: IRequest, name: str) -> str | None:
    values = request.args.get(name.encode())
    if not values:
        return None
    try:
        return values[-1].decode("utf-8")
    except UnicodeDecodeError:
        raise errors.BadRequest(f"query parameter '{name}' is not UTF-8") from None


def _int_query(request: IRequest, name: str) -> int | None:
    text = _query(request, name)
    if text is None:
        return None
    if not text.isdigit() or len(text) > 19 or int(text) > MAX_INTEGER:
        raise errors.BadRequest(f"query parameter '{name}' must be an integer from 0 to "
                                f"{MAX_INTEGER}")
    return int(text)


__all__ = ["ClientAPI", "Limits", "dumps", "ensureDeferred"]

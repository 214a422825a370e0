"""
The Python client of kvd: Deferred-based, with failover across endpoints.

Every write carries an ``Idempotency-Key``, so a write whose answer was lost
can be retried on another node without applying twice (safety rule 9).
``BlockingClient`` wraps it for scripts that do not run a reactor.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import quote, urlencode

import treq
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ConnectError, ConnectionRefusedError, DNSLookupError
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import blockingCallFromThread
from twisted.web.client import Agent, HTTPConnectionPool, ResponseFailed
from twisted.web.iweb import IPolicyForHTTPS

#: Statuses after which the next endpoint is tried: the request certainly did nothing.
_TRY_NEXT = (503,)


class KvdError(Exception):
    """An error answer from kvd, or no answer at all."""

    def __init__(self, status: int, code: str, message: str, body: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body


class Unavailable(KvdError):
    """No endpoint could take the request (503 or unreachable everywhere)."""


class OutcomeUnknown(KvdError):
    """The write was sent but its fate is unknown (504 or a lost answer)."""


class KvdClient:
    """Calls the kvd client API on the first endpoint that answers."""

    def __init__(self, endpoints: list[str], reactor: Any = None, timeout: float = 10.0,
                 tls: IPolicyForHTTPS | None = None,
                 credentials: tuple[str, str] | None = None,
                 http: Any = None) -> None:
        """``tls`` (e.g. ``kvd.client.tls.ClientTLS``) for ``https://`` endpoints;
        ``credentials`` (name, password) to log in with once the cluster has auth on;
        ``http`` a treq client of one's own (``kvd.client.testing`` passes a stub)."""
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.endpoints = [e.rstrip("/") for e in endpoints]
        self.reactor = reactor
        self.timeout = timeout
        pool = HTTPConnectionPool(reactor, persistent=True)
        agent = Agent(reactor, pool=pool) if tls is None else Agent(
            reactor, contextFactory=tls, pool=pool)
        # treq's HTTPClient, or anything with its request/get (treq.testing.StubTreq).
        self._http = http if http is not None else treq.client.HTTPClient(agent)
        self._pool = pool
        self._tls = tls
        self.credentials = credentials
        #: The bearer token (None: not logged in; "": the cluster has auth off).
        self._token: str | None = None

    def close(self) -> Deferred[None]:
        return self._pool.closeCachedConnections()

    @inlineCallbacks
    def _auth_headers(self, renew: bool = False) -> Any:
        """``Authorization`` for the next request: logs in first if it has to."""
        if self.credentials is None:
            return {}
        if self._token is None or renew:
            name, password = self.credentials
            try:
                answer = yield self._call("POST", "/api/v1/auth/authenticate",
                                          {"name": name, "password": password}, None, None, {})
                self._token = str(answer["token"])
            except KvdError as e:
                error = e.body.get("error", {}) if isinstance(e.body, dict) else {}
                if error.get("reason") != "auth_not_enabled":
                    raise
                self._token = ""
        return {b"Authorization": [b"Bearer " + self._token.encode()]} if self._token else {}

    @inlineCallbacks
    def request(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None
                = None, write: bool = False) -> Any:
        """One call, failing over to the next endpoint when that is certainly safe.

        With credentials it logs in first, and once more if the token expired.
        """
        idempotency_key = uuid.uuid4().hex.encode() if write else None
        auth = yield self._auth_headers()
        try:
            return (yield self._call(method, path, body, query, idempotency_key, auth))
        except KvdError as e:
            if e.status != 401 or self.credentials is None:
                raise
        auth = yield self._auth_headers(renew=True)
        return (yield self._call(method, path, body, query, idempotency_key, auth))

    @inlineCallbacks
    def _call(self, method: str, path: str, body: Any, query: dict[str, Any] | None,
              idempotency_key: bytes | None, auth: dict[bytes | str, list[bytes | str]]) -> Any:
        headers: dict[bytes | str, list[bytes | str]] = {
            b"Content-Type": [b"application/json"], **auth}
        write = idempotency_key is not None
        if idempotency_key is not None:
            headers[b"Idempotency-Key"] = [idempotency_key]
        data = None if body is None else json.dumps(body).encode()
        url_tail = path + ("?" + urlencode(query) if query else "")
        last: KvdError | None = None
        for endpoint in self.endpoints:
            try:
                response = yield self._http.request(
                    method, endpoint + url_tail, data=data, headers=headers,
                    timeout=self.timeout)
                raw = yield response.content()
            except (ConnectError, ConnectionRefusedError, DNSLookupError) as e:
                last = Unavailable(0, "unreachable", f"{endpoint}: {e}")
                continue
            except (ResponseFailed, Exception) as e:  # timeout or lost answer
                if not write:
                    last = Unavailable(0, "no_answer", f"{endpoint}: {e}")
                    continue
                # The Idempotency-Key makes a retry elsewhere safe.
                last = OutcomeUnknown(0, "no_answer", f"{endpoint}: {e}")
                continue
            answer = _decode(raw)
            if response.code < 400:
                return answer
            error = answer.get("error", {}) if isinstance(answer, dict) else {}
            code, message = error.get("code", "error"), error.get("message", repr(answer))
            if response.code in _TRY_NEXT:
                last = Unavailable(response.code, code, f"{endpoint}: {message}", answer)
                continue
            if response.code == 504:
                last = OutcomeUnknown(response.code, code, message, answer)
                continue
            raise KvdError(response.code, code, message, answer)
        assert last is not None
        raise last

    def put(self, key: str, value: str, prev_revision: int | None = None,
            ttl: int | None = None, lease: int | None = None) -> Deferred[dict[str, Any]]:
        body: dict[str, Any] = {"value": value}
        if prev_revision is not None:
            body["prev_revision"] = prev_revision
        if ttl is not None:
            body["ttl"] = ttl
        if lease is not None:
            body["lease"] = lease
        return self.request("PUT", f"/api/v1/keys/{quote(key)}", body, write=True)

    def get(self, key: str, consistency: str = "linearizable") -> Deferred[dict[str, Any] | None]:
        d = self.request("GET", f"/api/v1/keys/{quote(key)}",
                         query={"consistency": consistency})

        def missing(failure: Any) -> None:
            failure.trap(KvdError)
            if failure.value.status == 404:
                return None
            return failure

        return d.addErrback(missing)

    def range(self, prefix: str = "", consistency: str = "linearizable",
              limit: int | None = None, **query: Any) -> Deferred[dict[str, Any]]:
        params: dict[str, Any] = {"prefix": prefix, "consistency": consistency, **query}
        if limit is not None:
            params["limit"] = limit
        return self.request("GET", "/api/v1/keys", query=params)

    def delete(self, key: str, prev_revision: int | None = None) -> Deferred[dict[str, Any]]:
        query = None if prev_revision is None else {"prev_revision": prev_revision}
        return self.request("DELETE", f"/api/v1/keys/{quote(key)}", query=query, write=True)

    def txn(self, body: dict[str, Any]) -> Deferred[dict[str, Any]]:
        return self.request("POST", "/api/v1/txn", body, write=True)

    @inlineCallbacks
    def save_snapshot(self, sink: Callable[[bytes], None],
                      consistency: str = "linearizable",
                      started: Callable[[dict[str, str]], object] | None = None) -> Any:
        """Stream a backup (``GET /api/v1/snapshot``) into ``sink``, from the first
        endpoint that serves one; fires with its headers (lower-case names), which
        ``started`` gets before the first byte."""
        last: KvdError | None = None
        for endpoint in self.endpoints:
            auth = yield self._auth_headers()
            try:
                response = yield self._http.get(
                    f"{endpoint}/api/v1/snapshot?consistency={consistency}", headers=auth,
                    timeout=self.timeout)
            except Exception as e:
                last = Unavailable(0, "unreachable", f"{endpoint}: {e}")
                continue
            if response.code != 200:
                answer = _decode((yield response.content()))
                error = answer.get("error", {}) if isinstance(answer, dict) else {}
                last = KvdError(response.code, error.get("code", "error"),
                                error.get("message", ""), answer)
                if response.code in _TRY_NEXT:
                    continue
                raise last
            headers = {k.decode().lower(): v[-1].decode()
                       for k, v in response.headers.getAllRawHeaders()}
            if started is not None:
                started(headers)
            yield treq.collect(response, sink)
            return headers
        assert last is not None
        raise last

    def authenticate(self, name: str, password: str) -> Deferred[str]:
        """A token for ``name`` (what ``credentials`` does by itself)."""
        d = self.request("POST", "/api/v1/auth/authenticate",
                         {"name": name, "password": password})
        return d.addCallback(lambda answer: str(answer["token"]))

    def auth_call(self, method: str, path: str, body: Any = None,
                  query: dict[str, Any] | None = None) -> Deferred[Any]:
        """A call under ``/api/v1/auth/`` (users, roles, enable); changes are writes."""
        return self.request(method, "/api/v1/auth/" + path, body, query,
                            write=method != "GET")

    def status(self, endpoint: str | None = None) -> Deferred[dict[str, Any]]:
        if endpoint is None:
            return self.request("GET", "/api/v1/cluster")
        single = KvdClient([endpoint], self.reactor, self.timeout, self._tls, self.credentials)
        d = single.request("GET", "/api/v1/cluster")
        return d.addBoth(lambda result: single.close().addCallback(lambda _: result))

    @inlineCallbacks
    def watch(self, on_event: Callable[[dict[str, Any]], object], key: str | None = None,
              prefix: str | None = None, start_revision: int | None = None,
              stop: Callable[[], bool] = lambda: False) -> Any:
        """Stream events to ``on_event``, resuming on the next endpoint after a break.

        Resumes from the revision after the last event seen, so a failover
        loses no event and repeats none.
        """
        next_revision = start_revision
        failures = 0
        while not stop():
            endpoint = self.endpoints[failures % len(self.endpoints)]
            query: dict[str, Any] = {"key": key} if key is not None else {"prefix": prefix}
            if next_revision:
                query["start_revision"] = next_revision
            buffer = bytearray()

            def chunk(data: bytes, buffer: bytearray = buffer) -> None:
                nonlocal next_revision
                buffer.extend(data)
                while b"\n" in buffer:
                    line, _, rest = bytes(buffer).partition(b"\n")
                    buffer[:] = rest
                    if line.strip():
                        event = json.loads(line)
                        next_revision = event["revision"] + 1
                        on_event(event)

            try:
                auth = yield self._auth_headers()
                response = yield self._http.get(endpoint + "/api/v1/watch?" + urlencode(query),
                                                headers=auth)
                if response.code == 401 and self.credentials is not None:
                    yield response.content()
                    self._token = None
                    failures += 1
                    continue
                if response.code != 200:
                    answer = _decode((yield response.content()))
                    error = answer.get("error", {}) if isinstance(answer, dict) else {}
                    if response.code in (400, 404, 410):
                        raise KvdError(response.code, error.get("code", "error"),
                                       error.get("message", ""), answer)
                    failures += 1
                    continue
                yield treq.collect(response, chunk)
            except KvdError:
                raise
            except Exception:
                pass
            failures += 1
            if failures > 3 * len(self.endpoints) * 20:
                raise Unavailable(0, "unreachable", "no endpoint keeps a watch open")
            yield _sleep(self.reactor, 0.2)


def _sleep(reactor: Any, seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return {"error": {"code": "bad_answer", "message": raw[:200].decode("latin-1")}}


class BlockingClient:
    """``KvdClient`` for code without a reactor: runs one in a daemon thread."""

    _lock = threading.Lock()
    _started = False

    def __init__(self, endpoints: list[str], timeout: float = 10.0,
                 tls: IPolicyForHTTPS | None = None) -> None:
        from twisted.internet import reactor

        self._reactor = reactor
        self._ensure_reactor()
        self._client = KvdClient(endpoints, reactor, timeout, tls)

    @classmethod
    def _ensure_reactor(cls) -> None:
        from twisted.internet import reactor

        with cls._lock:
            if not cls._started and not reactor.running:
                threading.Thread(target=reactor.run, kwargs={"installSignalHandlers": False},
                                 daemon=True, name="kvd-client-reactor").start()
                cls._started = True

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        reactor = cast(IReactorFromThreads, self._reactor)
        return blockingCallFromThread(reactor, getattr(self._client, method), *args, **kwargs)

    def put(self, key: str, value: str, prev_revision: int | None = None,
            ttl: int | None = None) -> dict[str, Any]:
        return self._call("put", key, value, prev_revision, ttl)

    def get(self, key: str, consistency: str = "linearizable") -> dict[str, Any] | None:
        return self._call("get", key, consistency)

    def range(self, prefix: str = "", **kwargs: Any) -> dict[str, Any]:
        return self._call("range", prefix, **kwargs)

    def delete(self, key: str, prev_revision: int | None = None) -> dict[str, Any]:
        return self._call("delete", key, prev_revision)

    def txn(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("txn", body)

    def status(self) -> dict[str, Any]:
        return self._call("status")

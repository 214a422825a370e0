"""
The history recorder: concurrent clients on the reactor, every call recorded.

Each client loops until told to stop: a put of a unique value, a
linearizable get, or a compare-and-set, on one of a few keys, through a node
chosen at random. Every call becomes one :class:`~kvd.torture.checker.Operation`
with monotonic invoke/complete times (seconds since the run's origin) and an
outcome the checker understands:

* ``ok``: a definite answer (200; 404 for a get; 409 for a CAS, as ``mismatch``);
* ``fail``: certainly no effect: a 503, or a write that never connected;
  a read that failed in any way is recorded as ``fail`` too, which the
  checker drops;
* ``unknown``: a write that may or may not apply: a 504, a timeout, a lost
  connection, any unexpected answer. It is first retried with the same
  ``Idempotency-Key`` (kvd must then answer the first result, never apply it
  twice); if it stays unknown it is pending forever, so the client goes on
  under a fresh client id, as in Jepsen.

Answers that break the client API's contract (a 500, a status the design does
not allow for the call, a malformed body) are kept as anomalies.
"""

from __future__ import annotations

import itertools
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import treq
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.error import ConnectError, DNSLookupError
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web.client import HTTPConnectionPool

from kvd.quietagent import quiet_agent
from kvd.torture.checker import CAS, FAIL, GET, MISMATCH, OK, PUT, UNKNOWN, Operation

log = Logger()

#: Request headers, as treq's ``HTTPClient.request`` takes them.
RequestHeaders = dict[bytes | str, list[bytes | str]]

JSON_HEADERS: RequestHeaders = {b"Content-Type": [b"application/json"]}


@dataclass(frozen=True)
class Workload:
    """What the clients do."""

    clients: int = 8
    keys: int = 5
    #: Relative weights of puts, gets and compare-and-sets.
    put_weight: float = 0.4
    get_weight: float = 0.4
    cas_weight: float = 0.2
    #: Timeout over a whole exchange (connect, request, answer body).
    request_timeout: float = 5.0
    #: Retries of a write whose outcome is unknown, with the same Idempotency-Key.
    retries: int = 1
    #: After a call that did not succeed, a client waits between half this and this (s).
    backoff: float = 0.1
    #: Each client waits a random time up to this between calls (seconds).
    think: float = 0.0
    key_prefix: str = "t"

    def key_names(self) -> list[str]:
        """The keys the clients work on."""
        return [f"{self.key_prefix}{i}" for i in range(self.keys)]


@dataclass
class Answer:
    """What one HTTP exchange gave: a status and JSON body, or an exception."""

    status: int | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    error: BaseException | None = None

    def describe(self) -> str:
        """Short text for logs and anomaly reports."""
        if self.error is not None:
            return f"{type(self.error).__name__}: {self.error}"[:200]
        return f"{self.status} {json.dumps(self.body)[:200]}"


def never_connected(error: BaseException | None) -> bool:
    """Whether a failed exchange certainly never reached the server (no TCP connection)."""
    return isinstance(error, ConnectError | DNSLookupError)


class Recorder:
    """Runs the clients and keeps the history."""

    def __init__(
        self,
        reactor: Any,
        urls: Sequence[str],
        workload: Workload,
        seed: int,
        origin: float,
    ) -> None:
        self.reactor = reactor
        self.urls = list(urls)
        #: Readable node names for reports: node0, node1, ...
        self.names = {url: f"node{i}" for i, url in enumerate(self.urls)}
        self.workload = workload
        self.keys = workload.key_names()
        self.origin = origin
        self._seed = seed
        self.history: list[Operation] = []
        #: Per history entry: the node that served it and its raw answer (for evidence).
        self.trace: list[dict[str, str | int]] = []
        self.anomalies: list[str] = []
        self.anomaly_kinds: Counter[str] = Counter()
        #: (kind, outcome) -> count, and (kind, status or error type) -> count.
        self.outcomes: Counter[tuple[str, str]] = Counter()
        self.answers: Counter[tuple[str, str]] = Counter()
        self.retried = 0
        self.settled_by_retry = 0
        self._client_ids = itertools.count()
        self._values = itertools.count()
        #: Latest revision anyone saw per key: CASes expect it.
        self._known: dict[str, int] = {}
        self._stopping = False
        self._workers: list[Deferred[None]] = []
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = max(2, workload.clients)
        self.pool.cachedConnectionTimeout = 30
        self.http = treq.client.HTTPClient(quiet_agent(reactor, self.pool, connect_timeout=2))

    def now(self) -> float:
        """Seconds since the run's origin (monotonic)."""
        return time.monotonic() - self.origin

    # Running

    def start(self) -> None:
        """Start every client."""
        for worker in range(self.workload.clients):
            rng = random.Random(self._seed * 1_000_003 + worker)
            d = ensureDeferred(self._worker(rng))
            d.addErrback(lambda f: log.failure("A torture client crashed", f))
            self._workers.append(d)

    async def stop(self) -> None:
        """Let every client finish its call in flight, then stop."""
        self._stopping = True
        await DeferredList(self._workers, consumeErrors=True)

    async def close(self) -> None:
        """Close the client connections."""
        await self.pool.closeCachedConnections()

    async def _worker(self, rng: random.Random) -> None:
        w = self.workload
        kinds, weights = (PUT, GET, CAS), (w.put_weight, w.get_weight, w.cas_weight)
        client = next(self._client_ids)
        while not self._stopping:
            kind = rng.choices(kinds, weights)[0]
            key = rng.choice(self.keys)
            url = rng.choice(self.urls)
            if kind == GET:
                op = await self.get(client, url, key)
            else:
                expected = None
                if kind == CAS:
                    expected = self._known.get(key, 0)
                    if rng.random() < 0.1:  # now and then one certain to mismatch
                        expected = max(0, expected - 1 - rng.randrange(3))
                op = await self.write(client, url, key, expected, rng)
                if op.outcome == UNKNOWN:
                    client = next(self._client_ids)
            if op.outcome != OK and w.backoff > 0:
                # kvd answers Retry-After on a 503: do not spin on a node that cannot serve
                await deferLater(self.reactor, rng.uniform(w.backoff / 2, w.backoff))
            if w.think > 0:
                await deferLater(self.reactor, rng.uniform(0, w.think))

    # One exchange

    async def _exchange(
        self,
        method: str,
        url: str,
        body: Any = None,
        headers: RequestHeaders | None = None,
    ) -> Answer:
        """One HTTP call with a timeout over the whole exchange."""
        data = None if body is None else json.dumps(body).encode()
        d = self.http.request(method, url, data=data, headers=headers or JSON_HEADERS)

        def read(response: Any) -> Deferred[tuple[Any, bytes]]:
            return response.content().addCallback(lambda content: (response, content))

        d.addCallback(read)
        d.addTimeout(self.workload.request_timeout, self.reactor)
        try:
            response, content = await d
        except Exception as e:
            return Answer(error=e)
        try:
            parsed = json.loads(content) if content else None
        except ValueError:
            parsed = content[:200].decode("utf-8", "replace")
        headers_out = {
            k.decode("latin-1").lower(): v[-1].decode("latin-1")
            for k, v in response.headers.getAllRawHeaders()
        }
        return Answer(response.code, parsed, headers_out)

    def _answered(self, kind: str, answer: Answer) -> str:
        """Count one exchange's answer (every attempt counts); returns its label."""
        label = str(answer.status) if answer.error is None else type(answer.error).__name__
        self.answers[(kind, label)] += 1
        return label

    def _record(self, op: Operation, url: str, answer: Answer, attempts: int = 1) -> None:
        """Append ``op`` to the history, and what served it (last attempt) to the trace."""
        self.history.append(op)
        label = str(answer.status) if answer.error is None else type(answer.error).__name__
        self.trace.append({
            "node": self.names.get(url, url), "answer": label, "attempts": attempts,
            "detail": answer.describe() if label not in ("200", "404") else "",
        })
        self.outcomes[(op.kind, op.outcome)] += 1

    def _anomaly(self, kind: str, key: str, problem: str, url: str, answer: Answer) -> None:
        """Keep an answer that breaks the API contract (grouped by kind in the report)."""
        shown = str(answer.status) if answer.error is None else type(answer.error).__name__
        self.anomaly_kinds[f"{kind}: {problem} ({shown})"] += 1
        text = (f"t={self.now():.3f} {kind} {key}: {problem} via "
                f"{self.names.get(url, url)}: {answer.describe()}")
        self.anomalies.append(text)
        log.warn("Contract anomaly: {text}", text=text)

    # Calls

    async def write(
        self,
        client: int | str,
        url: str,
        key: str,
        expected: int | None = None,
        rng: random.Random | None = None,
    ) -> Operation:
        """A put (``expected`` None) or a compare-and-set; records and returns the op.

        An unknown outcome is retried (``Workload.retries`` times, through a random node)
        with the same body and ``Idempotency-Key``: kvd must answer the first result, never
        apply twice (safety rule 9). Only a definite retry answer (200, 409) settles the op;
        a 503 to a retry says nothing of the first attempt, so the op stays unknown.
        """
        n = next(self._values)
        value = f"c{client}.{n}"
        body: dict[str, Any] = {"value": value}
        args: tuple[int | str, ...]
        kind, args = PUT, (value,)
        if expected is not None:
            body["prev_revision"] = expected
            kind, args = CAS, (expected, value)
        headers: RequestHeaders = {
            **JSON_HEADERS, b"Idempotency-Key": [f"torture-{self._seed}-{n}".encode()]}
        invoke = self.now()
        answer = await self._exchange("PUT", f"{url}/api/v1/keys/{key}", body, headers)
        self._answered(kind, answer)
        outcome, output = self._classify_write(kind, key, url, answer)
        attempts = 1
        while outcome == UNKNOWN and attempts <= self.workload.retries and not self._stopping:
            attempts += 1
            self.retried += 1
            chooser = rng or random
            await deferLater(self.reactor, chooser.uniform(0.1, 0.5))
            url = chooser.choice(self.urls)
            answer = await self._exchange("PUT", f"{url}/api/v1/keys/{key}", body, headers)
            self._answered(kind, answer)
            again, output = self._classify_write(kind, key, url, answer)
            if again == OK:
                outcome = OK
                self.settled_by_retry += 1
        complete = self.now()
        if outcome != OK:
            output = None
        op = Operation(client, key, kind, args, invoke, complete, outcome, output)
        self._record(op, url, answer, attempts)
        if outcome == OK and isinstance(output, int):
            self._learn(key, output)
        return op

    def _classify_write(self, kind: str, key: str, url: str, answer: Answer) -> tuple[str, Any]:
        """(outcome, output) of a put or CAS from its answer."""
        if answer.error is not None:
            return (FAIL, None) if never_connected(answer.error) else (UNKNOWN, None)
        status, body = answer.status, answer.body
        if status == 200:
            revision = body.get("revision") if isinstance(body, dict) else None
            if isinstance(revision, int) and not isinstance(revision, bool) and revision > 0:
                if body.get("key") != key:
                    self._anomaly(kind, key, "answer names another key", url, answer)
                return OK, revision
            self._anomaly(kind, key, "200 without a revision", url, answer)
            return UNKNOWN, None
        if status == 409 and kind == CAS:
            current = _error_field(body, "current_revision")
            if isinstance(current, int):
                self._learn(key, current)
            else:
                self._anomaly(CAS, key, "409 without current_revision", url, answer)
            return OK, MISMATCH
        if status == 503:
            return FAIL, None
        if status == 504:
            if _error_field(body, "outcome") != "unknown":
                self._anomaly(kind, key, "504 without outcome 'unknown'", url, answer)
            return UNKNOWN, None
        self._anomaly(kind, key, "unexpected status", url, answer)
        return UNKNOWN, None

    async def get(self, client: int | str, url: str, key: str) -> Operation:
        """A linearizable get; records and returns the op (a failed one as 'fail')."""
        invoke = self.now()
        answer = await self._exchange("GET", f"{url}/api/v1/keys/{key}")
        self._answered(GET, answer)
        complete = self.now()
        output: tuple[str | None, int] | None
        outcome, output = FAIL, None
        body = answer.body
        if answer.error is None and answer.status == 200 and isinstance(body, dict):
            value, revision = body.get("value"), body.get("revision")
            header = answer.headers.get("x-kvd-revision", "")
            if not isinstance(value, str) or not isinstance(revision, int) or revision <= 0:
                self._anomaly(GET, key, "malformed answer", url, answer)
            elif body.get("key") != key:
                self._anomaly(GET, key, "answer names another key", url, answer)
            else:
                outcome, output = OK, (value, revision)
                self._learn(key, revision)
                if not header.isdigit() or int(header) < revision:
                    self._anomaly(GET, key, "X-Kvd-Revision below the key's revision", url,
                                  answer)
        elif answer.error is None and answer.status == 404:
            if _error_field(body, "code") == "key_not_found":
                outcome, output = OK, (None, 0)
            else:
                self._anomaly(GET, key, "404 that is not key_not_found", url, answer)
        elif answer.error is None and answer.status not in (503, 504):
            self._anomaly(GET, key, "unexpected status", url, answer)
        op = Operation(client, key, GET, (), invoke, complete, outcome, output)
        self._record(op, url, answer)
        return op

    def _learn(self, key: str, revision: int) -> None:
        if revision > self._known.get(key, 0):
            self._known[key] = revision


def _error_field(body: Any, name: str) -> Any:
    """``body["error"][name]`` if the body has that shape."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"].get(name)
    return None

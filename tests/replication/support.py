"""In-process stand-ins for replication tests: nodes on real files, fake peers and links."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from typing import Any, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from kvd.node import Node, NodeSettings
from kvd.replica import open_replica
from kvd.replication.peer import PeerClient, entries_to_wire
from kvd.store import Command, put_command
from kvd.wal import record
from kvd.wal.layout import DataDir
from kvd.wal.record import LogEntry
from kvd.wal.storage import recover_store
from tests.support import (
    InlinePool,
    InlineReactor,
    _opened,
    follower_of,
    inline_defer_to_thread,
    replica_of,
)

__all__ = [
    "Answer", "FakeLink", "InlinePool", "InlineReactor", "ManualPool", "Peers",
    "follower_of", "replica_of",
    "answer", "config_entry", "entry", "inline_defer_to_thread", "member_of", "message",
    "open_member", "close_all", "prepare", "put", "reopen", "wal_payloads",
]


class ManualPool:
    """A thread pool that queues jobs until the test runs them: a slow disk."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[[bool, Any], None], Callable[..., Any], Any, Any]] = []

    def callInThreadWithCallback(
        self, onResult: Callable[[bool, Any], None], f: Callable[..., Any], *a: Any, **kw: Any
    ) -> None:
        self.jobs.append((onResult, f, a, kw))

    def run_one(self) -> None:
        """Run the oldest queued job and deliver its result."""
        on_result, f, a, kw = self.jobs.pop(0)
        try:
            value = f(*a, **kw)
        except BaseException:
            on_result(False, Failure())
        else:
            on_result(True, value)

    def run_all(self) -> int:
        """Run jobs (including those queued meanwhile) until none is left."""
        ran = 0
        while self.jobs:
            self.run_one()
            ran += 1
        return ran


def close_all() -> None:
    """Close the WAL of every node opened since the last call."""
    while _opened:
        _opened.popitem()[1].writer.close()


def open_member(
    path: str,
    reactor: InlineReactor,
    node_id: str,
    pool: Any = None,
    fsync: bool = True,
) -> Node:
    """A cluster node (role ``looking``) on real files in ``path``, as the service opens
    it; snapshots are read and written on the calling thread."""
    data_dir = DataDir(path)
    outcome = recover_store(data_dir, node_id)
    replica = open_replica(reactor, data_dir, outcome, NodeSettings(url=f"http://{node_id}"),
                           fsync, pool=pool if pool is not None else InlinePool(),
                           defer_to_thread=inline_defer_to_thread)
    _opened[replica.node] = replica
    return replica.node


def member_of(path: str, reactor: InlineReactor, node_id: str, voters: Iterable[str]) -> Node:
    """Node ``node_id`` of a cluster of ``voters``; the others' incarnation is OTHER_DISK."""
    node = open_member(path, reactor, node_id)
    node.bootstrap_voters = {v: OTHER_DISK for v in voters}
    node.bootstrap_voters[node_id] = node.identity.incarnation
    return node


def reopen(node: Node, reactor: InlineReactor, pool: Any = None) -> Node:
    """Close ``node``'s WAL and start it again from its data dir: a restart."""
    _opened.pop(node).writer.close()
    assert node.data_dir is not None
    reopened = open_member(node.data_dir.root, reactor, node.node_id, pool)
    reopened.bootstrap_voters = dict(node.bootstrap_voters)
    return reopened


def put(key: str, value: str = "v", rid: str | None = None,
        prev: int | None = None) -> Command:
    return put_command(key.encode(), value.encode(), rid or f"{key}={value}", prev)


def entry(epoch: int, index: int, *commands: Command) -> LogEntry:
    return LogEntry(epoch, index, list(commands) or [put(f"k{index}", f"e{epoch}")])


def config_entry(epoch: int, index: int, voters: dict[str, str]) -> LogEntry:
    return LogEntry(epoch, index, [{"op": "config",
                                    "voters": [[i, inc] for i, inc in sorted(voters.items())]}])


#: The incarnation ``member`` gives the other voters in a node's bootstrap config.
OTHER_DISK = "other-disk"


def message(sender: str, epoch: int, incarnation: str = OTHER_DISK,
            **fields: Any) -> dict[str, Any]:
    """A peer message from ``sender`` (on disk ``incarnation``) at ``epoch``."""
    return {"epoch": epoch, "node_id": sender, "url": f"http://{sender}",
            "peer_url": f"http://{sender}", "incarnation": incarnation, **fields}


def prepare(sender: str, epoch: int, prev: tuple[int, int], entries: Iterable[LogEntry],
            commit: int, incarnation: str = OTHER_DISK) -> dict[str, Any]:
    return message(sender, epoch, incarnation, prev=list(prev),
                   entries=entries_to_wire(list(entries)), commit=commit)


class Answer:
    """What a handler's Deferred fired with, once it has."""

    def __init__(self, d: Deferred[Any]) -> None:
        self.called = False
        self.value: Any = None
        self.failure: Failure | None = None
        d.addCallbacks(self._ok, self._failed)

    def _ok(self, value: Any) -> None:
        self.called, self.value = True, value

    def _failed(self, failure: Failure) -> None:
        self.called, self.failure = True, failure

    def get(self) -> Any:
        assert self.called, "no answer yet"
        if self.failure is not None:
            self.failure.raiseException()
        return self.value

    def reply(self) -> dict[str, Any]:
        """A follower's answer without its ``incarnation``, which every answer carries."""
        value = dict(self.get())
        assert isinstance(value.pop("incarnation"), str)
        return value


def answer(handler_result: Coroutine[Any, Any, Any] | Deferred[Any]) -> Answer:
    """Run a follower handler (a coroutine) and watch for its answer."""
    if isinstance(handler_result, Deferred):
        return Answer(handler_result)
    return Answer(Deferred.fromCoroutine(handler_result))


class Peers:
    """A fake ``PeerClient``: each URL answers through a handler; every call is recorded."""

    def __init__(self) -> None:
        self.handlers: dict[str, Callable[[str, dict[str, Any]], Any]] = {}
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def route_to(self, node: Node) -> None:
        """Send ``node``'s URL to its real follower handlers."""
        def handle(name: str, body: dict[str, Any]) -> Any:
            follower = follower_of(node)
            handler = {"newepoch": follower.new_epoch, "prepare": follower.prepare,
                       "snapshot": follower.install_snapshot, "fetch": follower.fetch}[name]
            return Deferred.fromCoroutine(handler(body))
        self.handlers[node.settings.url] = handle

    def call(self, url: str, name: str, body: dict[str, Any], timeout: float) -> Deferred[Any]:
        self.calls.append((url, name, body))
        handler = self.handlers.get(url)
        if handler is None:
            return fail(ConnectionError(f"{url} is unreachable"))
        try:
            outcome = handler(name, body)
        except Exception:
            return fail()
        return outcome if isinstance(outcome, Deferred) else succeed(outcome)

    def sent(self, name: str) -> list[str]:
        return [url for url, n, _ in self.calls if n == name]

    def client(self) -> PeerClient:
        """This fake where a ``PeerClient`` is expected."""
        return cast(PeerClient, self)


class FakeLink:
    """The leader's view of one follower, moved by hand."""

    def __init__(self, node_id: str, voter: bool = True) -> None:
        self.node_id = node_id
        self.voter = voter
        self.match_index = 0
        #: 1: the leader keeps its whole log in memory for this follower.
        self.next_index = 1
        self.sent_seq = 0
        self.confirmed_seq = 0
        self.last_ok = 0.0
        self.forced = 0
        self.stopped = False

    def wake(self, force: bool = False) -> None:
        self.forced += force

    def stop(self) -> None:
        self.stopped = True


def wal_payloads(path: str) -> list[list[Any]]:
    """Every record in the WAL of the data dir ``path``, in order."""
    data_dir = DataDir(path)
    payloads: list[list[Any]] = []
    for name in data_dir.segment_names():
        with open(data_dir.segment_path(name), "rb") as f:
            payloads.extend(record.iter_payloads(f.read()))
    return payloads

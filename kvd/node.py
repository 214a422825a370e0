"""
A node's role and its way of serving writes and reads.

The node owns the store and the replicated log. As leader (or standalone, a
leader of one) it proposes writes through ``Leader``; as follower it forwards
them. Committed entries are applied here, in index order, and only here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from twisted.internet.defer import Deferred, TimeoutError, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from kvd.errors import NotReady, OutcomeUnknown
from kvd.replication.leader import Leader
from kvd.replication.log import ReplicatedLog
from kvd.store import Command, Result, Store
from kvd.wal.layout import Identity


class Role(StrEnum):
    STANDALONE = "standalone"
    LOOKING = "looking"
    SYNCING = "syncing"
    LEADER = "leader"
    FOLLOWER = "follower"


@dataclass(frozen=True)
class NodeSettings:
    """The knobs of a node that matter beyond start-up."""

    url: str
    write_timeout: float = 5.0
    read_timeout: float = 5.0
    #: Take a snapshot every this many applied entries.
    snapshot_entries: int = 20_000
    #: Keep this many entries in memory after a snapshot for lagging followers.
    log_tail: int = 5_000


class Node:
    """One kvd node: role, store, log, and the way a write or read is served."""

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        identity: Identity,
        settings: NodeSettings,
        store: Store,
        replicated_log: ReplicatedLog,
    ) -> None:
        self.reactor = reactor
        self.identity = identity
        self.settings = settings
        self.store = store
        self.rlog = replicated_log
        self.role = Role.LOOKING
        self.epoch = 0
        self.leader: Leader | None = None
        self.leader_info: dict[str, str] | None = None
        #: Why the node cannot serve writes right now, or None.
        self.unavailable: str | None = "starting"
        self._applied_waiters: list[tuple[int, Deferred[None]]] = []
        self.on_applied: list[Callable[[int, list[Command], list[Result]], None]] = []
        self.snapshotter: Callable[[], object] | None = None
        self._last_snapshot_index = store.applied_index

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    # Roles

    def become_standalone(self) -> Deferred[None]:
        """Lead a cluster of one: take the next epoch and commit its marker."""
        epoch = self.rlog.promised_epoch + 1
        d = self.rlog.promise(epoch)
        self.role = Role.STANDALONE
        self.epoch = epoch
        self.leader = Leader(self.reactor, self.rlog, epoch, 1, self.apply_committed)
        marker = self.leader.start()
        self.leader_info = {"node_id": self.node_id, "url": self.settings.url}
        ready = self.wait_applied(marker)

        def serving(_: object) -> None:
            self.unavailable = None
            self.log.info("Standalone node {node_id} serving at epoch {epoch}",
                          node_id=self.node_id, epoch=epoch)

        d.addCallback(lambda _: ready)
        d.addCallback(serving)
        return d

    def step_down(self, reason: str) -> None:
        """Stop leading; writes in flight answer 504 (outcome unknown)."""
        if self.leader is None:
            return
        leader, self.leader = self.leader, None
        for proposal in leader.stop():
            if not proposal.done.called:
                proposal.done.errback(OutcomeUnknown(reason))

    # Writes

    def submit(self, commands: list[Command]) -> Deferred[list[Result]]:
        """Replicate and apply ``commands``; fire with their results."""
        if self.unavailable is not None or self.leader is None:
            raise NotReady(self.unavailable or "this node does not lead")
        d = self.leader.propose(commands)
        d.addTimeout(self.settings.write_timeout, self.reactor, self._write_timed_out)
        return d

    @staticmethod
    def _write_timed_out(result: object, timeout: float) -> object:
        raise OutcomeUnknown(f"not committed within {timeout:g}s; it may still commit")

    # Applying

    def apply_committed(self, commit_index: int) -> None:
        """Apply every committed entry not applied yet, in order."""
        while self.store.applied_index < self.rlog.commit_index:
            index = self.store.applied_index + 1
            entry = self.rlog.entry(index)
            results = self.store.apply(index, entry.commands)
            for observer in self.on_applied:
                observer(index, entry.commands, results)
            if self.leader is not None:
                self._answer(self.leader.waiting.pop(index, []), results)
        self._release_applied_waiters()
        if (
            self.snapshotter is not None
            and self.store.applied_index - self._last_snapshot_index
            >= self.settings.snapshot_entries
        ):
            self._last_snapshot_index = self.store.applied_index
            self.snapshotter()

    @staticmethod
    def _answer(proposals: list[Any], results: list[Result]) -> None:
        position = 0
        for proposal in proposals:
            count = len(proposal.commands)
            if not proposal.done.called:
                proposal.done.callback(results[position : position + count])
            position += count

    def wait_applied(self, index: int) -> Deferred[None]:
        """Fires once the store has applied ``index``."""
        if self.store.applied_index >= index:
            return succeed(None)
        d: Deferred[None] = Deferred(lambda d: self._forget_waiter(d))
        self._applied_waiters.append((index, d))
        return d

    def _forget_waiter(self, d: Deferred[None]) -> None:
        self._applied_waiters = [(i, w) for i, w in self._applied_waiters if w is not d]

    def _release_applied_waiters(self) -> None:
        ready = [w for w in self._applied_waiters if w[0] <= self.store.applied_index]
        if not ready:
            return
        self._applied_waiters = [w for w in self._applied_waiters
                                 if w[0] > self.store.applied_index]
        for _, d in ready:
            d.callback(None)

    # Reads

    def read_barrier(self, linearizable: bool, min_revision: int = 0) -> Deferred[None]:
        """Fires when a local read reflects what the caller asked for."""
        if linearizable:
            if self.role in (Role.STANDALONE, Role.LEADER) and self.leader is not None:
                d = self.wait_applied(self.rlog.commit_index)
            else:
                raise NotReady(self.unavailable or "no leader to confirm a linearizable read")
        else:
            d = succeed(None)
        if min_revision > self.store.revision:
            d.addCallback(lambda _: self._wait_revision(min_revision))
        d.addTimeout(self.settings.read_timeout, self.reactor, _read_timed_out)
        return d

    def _wait_revision(self, revision: int) -> Deferred[None]:
        d: Deferred[None] = Deferred()

        def check(index: int, commands: list[Command], results: list[Result]) -> None:
            if self.store.revision >= revision and not d.called:
                self.on_applied.remove(check)
                d.callback(None)

        d.addErrback(lambda f: (check in self.on_applied and self.on_applied.remove(check), f)[1])
        self.on_applied.append(check)
        return d

    def status(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "role": self.role.value,
            "leader": self.leader_info,
            "epoch": self.epoch,
            "commit_index": self.rlog.commit_index,
            "applied_index": self.store.applied_index,
            "members": [
                {"node_id": self.node_id, "url": self.settings.url, "role": self.role.value,
                 "last_index": self.rlog.last_index, "lag": 0}
            ],
        }


def _read_timed_out(result: object, timeout: float) -> object:
    raise NotReady(f"the read could not be confirmed within {timeout:g}s")


__all__ = ["Node", "NodeSettings", "Role", "TimeoutError"]

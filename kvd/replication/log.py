"""
The replicated log of one node: entries in memory, made durable by the WAL.

Every change (append, truncate, promise, snapshot install) is applied in
memory at once and returns a Deferred that fires when it is on disk. Callers
that vote or acknowledge wait for that Deferred (safety rule 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from kvd.wal import record
from kvd.wal.record import LogEntry
from kvd.wal.recovery import Recovered
from kvd.wal.writer import WalWriter

log = Logger()


def _has_config(entry: LogEntry) -> bool:
    return any(c.get("op") == "config" for c in entry.commands)


class FatalLogError(Exception):
    """The node was asked to do something that would corrupt committed state."""


class ReplicatedLog:
    """Entries after the snapshot base, the promised epoch and the commit mark."""

    def __init__(self, writer: WalWriter, recovered: Recovered) -> None:
        self._writer = writer
        self.base_epoch, self.base_index = recovered.base
        self.entries: list[LogEntry] = list(recovered.entries)
        self.promised_epoch = recovered.promised_epoch
        #: The one leader ``promised_epoch`` was promised to; "" until one is known (rule 15).
        self.promised_leader = recovered.promised_leader
        #: The highest promise known to be on disk, with its leader.
        self.durable_promised_epoch = recovered.promised_epoch
        self._durable_promised_leader = recovered.promised_leader
        self.commit_mark = recovered.commit_mark
        #: Highest index known to be on disk here.
        self.durable_index = self.last_index
        #: Commit index: committed entries are never truncated.
        # The snapshot base is committed by definition, whatever the marks say.
        self.commit_index = max(min(recovered.commit_mark, self.last_index), self.base_index)
        self.on_durable: list[Callable[[int], None]] = []
        # Bumped by each truncation, so that an append written before it
        # cannot vouch for the different entries now at its indexes.
        self._generation = 0
        self._durable_waiters: list[tuple[int, Deferred[None]]] = []
        #: Indexes of held entries that carry a config command, in order: the
        #: voter set is the newest one (rule 4), found without scanning the log.
        self.config_indexes = [e.index for e in self.entries if _has_config(e)]

    @property
    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.base_index

    @property
    def last_epoch(self) -> int:
        return self.entries[-1].epoch if self.entries else self.base_epoch

    @property
    def last(self) -> tuple[int, int]:
        return (self.last_epoch, self.last_index)

    def _forget_configs(self, dropped: Callable[[int], bool]) -> None:
        self.config_indexes = [i for i in self.config_indexes if not dropped(i)]

    def newest_config(self) -> dict[str, Any] | None:
        """The newest config command held in the log, if any."""
        if not self.config_indexes:
            return None
        for command in reversed(self.entry(self.config_indexes[-1]).commands):
            if command.get("op") == "config":
                return command
        return None

    @property
    def generation(self) -> int:
        """Bumped by every truncation: entries at an index may differ across it."""
        return self._generation

    def epoch_at(self, index: int) -> int | None:
        """The epoch of the entry at ``index``; None if not held (or compacted away)."""
        if index == self.base_index:
            return self.base_epoch
        if index < self.base_index or index > self.last_index:
            return None
        return self.entries[index - self.base_index - 1].epoch

    def entry(self, index: int) -> LogEntry:
        """The entry at ``index``, which must be held (above the base, at most the last)."""
        if not self.base_index < index <= self.last_index:
            raise FatalLogError(f"entry {index} is not held (base {self.base_index}, "
                                f"last {self.last_index})")
        return self.entries[index - self.base_index - 1]

    def tail_start(self, index: int, entries: int, max_bytes: int) -> int:
        """Where to compact up to so that at most ``entries`` entries, holding at
        most ``max_bytes`` packed bytes, stay held up to ``index`` (a lagging
        follower's catch-up; one further behind gets a snapshot)."""
        start = max(self.base_index, index - entries)
        held = 0
        for at in range(min(index, self.last_index), start, -1):
            held += len(self.entry(at).packed)
            if held > max_bytes:
                return at
        return start

    def entries_between(self, first: int, last: int) -> list[LogEntry]:
        """Entries ``first..last`` inclusive; ``first`` must be above the base."""
        return self.entries[first - self.base_index - 1 : last - self.base_index]

    def append(self, entries: list[LogEntry]) -> Deferred[None]:
        """Append contiguous entries; fires when they are durable."""
        if not entries:
            return self._writer.append([], self.last_index + 1)
        if entries[0].index != self.last_index + 1:
            raise FatalLogError(f"append of {entries[0].index} after {self.last_index}")
        # Encode first: an entry that cannot be written must not be in memory either.
        records = [record.entry(e.epoch, e.index, e.packed) for e in entries]
        configs = [e.index for e in entries if _has_config(e)]
        self.entries.extend(entries)
        self.config_indexes.extend(configs)
        last = entries[-1].index
        d = self._writer.append(records, entries[0].index, last)
        d.addCallback(self._durable, last, self._generation)
        return d

    def _durable(self, _: None, index: int, generation: int) -> None:
        if generation == self._generation and index > self.durable_index:
            self.durable_index = min(index, self.last_index)
            for callback in list(self.on_durable):
                callback(self.durable_index)
            waiting, self._durable_waiters = self._durable_waiters, []
            for wanted, d in waiting:
                if wanted <= self.durable_index:
                    d.callback(None)
                else:
                    self._durable_waiters.append((wanted, d))

    def wait_durable(self, index: int) -> Deferred[None]:
        """Fires once entries up to ``index`` are on disk here."""
        if index <= self.durable_index:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._durable_waiters.append((index, d))
        return d

    def truncate_from(self, first_dropped: int) -> Deferred[None]:
        """Drop entries ``first_dropped..``; refuses to touch committed entries."""
        if first_dropped <= self.commit_index:
            raise FatalLogError(
                f"asked to truncate from {first_dropped} at or below commit index "
                f"{self.commit_index}"
            )
        if first_dropped > self.last_index:
            return self._writer.append([], first_dropped)
        del self.entries[first_dropped - self.base_index - 1 :]
        self._forget_configs(lambda i: i >= first_dropped)
        self._generation += 1
        self.durable_index = min(self.durable_index, self.last_index)
        d = self._writer.append([record.truncate(first_dropped)], first_dropped,
                                force_sync=True)
        # The WAL writes in order: once the truncation is on disk, so is
        # every entry before it.
        d.addCallback(self._durable, first_dropped - 1, self._generation)
        return d

    def promise(self, epoch: int, leader: str = "") -> Deferred[None]:
        """Persist a promise to reject anything older than ``epoch``.

        ``leader`` binds the epoch to the one node it was promised to (safety
        rule 15); a promise of the same epoch to another node is refused here.
        """
        if epoch < self.promised_epoch:
            raise FatalLogError(f"promise {epoch} below {self.promised_epoch}")
        if epoch == self.promised_epoch and self.promised_leader and leader \
                and leader != self.promised_leader:
            raise FatalLogError(f"epoch {epoch} was promised to {self.promised_leader}, "
                                f"not {leader}")
        if epoch > self.promised_epoch:
            self.promised_leader = ""
        self.promised_epoch = epoch
        self.promised_leader = leader or self.promised_leader
        d = self._writer.append([record.promise(epoch, self.promised_leader)],
                                self.last_index + 1, force_sync=True)
        d.addCallback(self._promise_durable, epoch, self.promised_leader)
        return d

    def promised_to(self, epoch: int, leader: str) -> bool:
        """Is the promise exactly ``epoch``, made to ``leader``?"""
        return self.promised_epoch == epoch and self.promised_leader == leader

    def _promise_durable(self, _: None, epoch: int, leader: str) -> None:
        if (epoch, bool(leader)) > (self.durable_promised_epoch,
                                    bool(self._durable_promised_leader)):
            self.durable_promised_epoch, self._durable_promised_leader = epoch, leader

    def wait_promise_durable(self, epoch: int, leader: str = "") -> Deferred[None]:
        """Fires once a promise of at least ``epoch`` (to ``leader``) is on disk.

        An empty append queues behind the promise in flight, if any: the WAL
        writes in order.
        """
        if self.durable_promised_epoch > epoch or (
                self.durable_promised_epoch == epoch
                and (not leader or self._durable_promised_leader == leader)):
            return succeed(None)
        return self._writer.append([], self.last_index + 1, force_sync=True)

    def set_commit(self, commit_index: int) -> None:
        """Raise the commit index; its mark rides along with the next WAL batch."""
        if commit_index <= self.commit_index:
            return
        if commit_index > self.last_index:
            raise FatalLogError(f"commit {commit_index} beyond last index {self.last_index}")
        self.commit_index = commit_index
        # Advisory (rule 6 only bounds what a restart applies): no fsync of its own.
        self._writer.append_lazy([record.commit(commit_index)], self.last_index + 1)

    def install_snapshot(self, epoch: int, index: int) -> Deferred[None]:
        """Record that a snapshot at (epoch, index) is now the base (safety rule 11).

        Entries after it that we hold are kept if our log agrees at ``index``;
        otherwise they belong to a divergent history and are truncated first,
        durably, so that a restart cannot bring them back.
        """
        kept = [e for e in self.entries if e.index > index]
        agrees = self.epoch_at(index) == epoch and bool(kept) and kept[0].index == index + 1
        records = []
        if kept and not agrees:
            records.append(record.truncate(index + 1))
            kept = []
            self._generation += 1
        self.entries = kept
        held = {e.index for e in kept}
        self._forget_configs(lambda i: i not in held)
        self.base_epoch, self.base_index = epoch, index
        self.commit_index = max(self.commit_index, index)
        self.durable_index = max(min(self.durable_index, self.last_index), index)
        records.append(record.snapshot_installed(epoch, index))
        return self._writer.append(records, index + 1, force_sync=True)

    def compact(self, upto: int) -> None:
        """Forget in-memory entries up to ``upto`` (a snapshot holds them)."""
        upto = min(upto, self.commit_index)
        if upto <= self.base_index:
            return
        self.base_epoch = self.epoch_at(upto) or self.base_epoch
        del self.entries[: upto - self.base_index]
        self._forget_configs(lambda i: i <= upto)
        self.base_index = upto

"""
The leader's half of the two-phase commit: batching, counting, committing.

Writes that arrive within one reactor turn become one log entry. The entry
is appended to the local WAL and streamed to every follower in parallel
(phase 1); once W voters, this node included and only after its own fsync,
hold an index of this epoch, it commits (phase 2). Entries of earlier epochs
commit only through this epoch's marker (safety rule 3).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from kvd.commands import command_bytes
from kvd.errors import InDoubt
from kvd.replication import messages
from kvd.replication.log import ReplicatedLog
from kvd.replication.messages import MAX_BATCH_BYTES
from kvd.replication.quorum import Quorums
from kvd.store import Command, noop_command
from kvd.wal.record import LogEntry

#: How often late proposals are looked for.
SWEEP_SECONDS = 0.25
DEFAULT_WRITE_TIMEOUT = 5.0

#: Cap of commands in one log entry.
MAX_BATCH_COMMANDS = 4096
#: Cap of value bytes in one log entry.


class Proposal:
    """A slice of a log entry that one caller is waiting for."""

    __slots__ = ("commands", "deadline", "done")

    def __init__(self, commands: list[Command], deadline: float) -> None:
        self.commands = commands
        self.deadline = deadline
        self.done: Deferred[list[dict[str, Any]]] = Deferred()


class FollowerLink(Protocol):
    """What the leader needs of its stream to one follower."""

    node_id: str
    match_index: int
    #: The next entry it is sent; the leader holds entries from here on in memory.
    next_index: int
    sent_seq: int
    confirmed_seq: int
    last_ok: float

    @property
    def voter(self) -> bool: ...

    def wake(self, force: bool = False) -> None: ...

    def stop(self) -> None: ...


class RefusedBatch(Exception):
    """A batch could not be appended to the log; none of it was applied."""


class NotLeading(Exception):
    """A read index was asked of a node that does not (or no longer) lead."""


class _ReadRound:
    """One leadership confirmation shared by every read that joined it."""

    def __init__(self, commit_index: int, reads: list[Deferred[int]],
                 thresholds: dict[str, int]) -> None:
        self.commit_index = commit_index
        self.reads = reads
        self.thresholds = thresholds


class Leader:
    """Batches proposals into entries and decides when they commit."""

    log = Logger()

    def __init__(
        self,
        reactor: IReactorTime,
        replicated_log: ReplicatedLog,
        epoch: int,
        write_quorum: int,
        on_commit: Callable[[int], None],
        node_id: str = "",
        url: str = "",
        on_higher_epoch: Callable[[int], None] | None = None,
        clock: IReactorTime | None = None,
        peer_url: str = "",
        quorums: Callable[[int], Quorums] | None = None,
    ) -> None:
        self.reactor = reactor
        self._reactor = reactor
        #: Durations (write deadlines, liveness) on a monotonic clock (rule 12, bug 8).
        self.clock = clock if clock is not None else reactor
        self.node_id = node_id
        self.url = url
        self.peer_url = peer_url or url
        self.incarnation = ""
        self._on_higher_epoch = on_higher_epoch
        self._pending_reads: list[Deferred[int]] = []
        #: Seconds before a proposal answers 504 (outcome unknown).
        self.write_timeout = DEFAULT_WRITE_TIMEOUT
        self._sweeper: Any = None
        #: Called with (commands, seconds from proposal to commit) per entry.
        self.observe_round: Callable[[int, float], None] | None = None
        self._proposed_at: dict[int, tuple[int, float]] = {}
        self._round: _ReadRound | None = None
        self._log = replicated_log
        self.epoch = epoch
        self.write_quorum = write_quorum
        #: The voter sets in effect given our W (the node's log decides); None: one
        #: set, this node and every link, of ``write_quorum``.
        self._quorums = quorums
        #: A joint change whose second entry (the new set alone) this leader appended.
        self._finishing: int | None = None
        #: Called once an entry holding a config command is in the log.
        self.on_config_appended: Callable[[], None] | None = None
        #: Test-only: while it says True, a committed joint change is left joint (as
        #: if this leader died between the two entries).
        self.hold_joint: Callable[[], bool] | None = None
        self._on_commit = on_commit
        self.links: dict[str, FollowerLink] = {}
        self._queue: list[Proposal] = []
        self._flush_scheduled = False
        #: Entry index -> the proposals it carries, in order.
        self.waiting: dict[int, list[Proposal]] = {}
        self.marker_index = 0
        self.active = True
        #: Why new writes are refused for now (a hand-over in progress), or None.
        self.paused: str | None = None
        replicated_log.on_durable.append(self._local_durable)

    def identity_message(self) -> messages.Sender:
        """The fields every message of this leader carries."""
        return messages.sender(self.epoch, self.node_id, self.url, self.peer_url,
                               self.incarnation)

    def start(self, extra: list[Command] | None = None) -> int:
        """Append this epoch's marker entry; returns its index."""
        entry = LogEntry(self.epoch, self._log.last_index + 1, [noop_command(), *(extra or [])])
        self.marker_index = entry.index
        self._log.append([entry])
        self._wake_links()
        return entry.index

    def stop(self) -> list[Proposal]:
        """Stop leading; returns the proposals whose fate is now unknown."""
        self.active = False
        if self._sweeper is not None and self._sweeper.active():
            self._sweeper.cancel()
        self._sweeper = None
        if self._local_durable in self._log.on_durable:
            self._log.on_durable.remove(self._local_durable)
        for link in self.links.values():
            link.stop()
        orphans = [p for ps in self.waiting.values() for p in ps] + self._queue
        self.waiting.clear()
        self._queue = []
        reads = self._pending_reads + (self._round.reads if self._round else [])
        self._pending_reads, self._round = [], None
        for read in reads:
            if not read.called:
                read.errback(NotLeading("this node stopped leading"))
        return orphans

    @property
    def idle(self) -> bool:
        """No write taken and unanswered: none queued for a batch, none in the log."""
        return not self._queue and not self.waiting

    def propose(self, commands: list[Command]) -> Deferred[list[dict[str, Any]]]:
        """Fires with the commands' results once committed and applied, or fails with
        InDoubt after ``write_timeout``: it may still commit later.
        """
        if not isinstance(commands, list) or not all(isinstance(c, dict) for c in commands):
            # Entry points validate commands; this keeps a bad one out of any batch.
            return fail(RefusedBatch("commands must be a list of maps"))
        if self.paused is not None:
            # Certainly not applied: the client retries, and reaches the next leader.
            return fail(RefusedBatch(self.paused))
        proposal = Proposal(commands, self.clock.seconds() + self.write_timeout)
        self._queue.append(proposal)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._reactor.callLater(0, self._flush)
        if self._sweeper is None:
            self._sweeper = self.clock.callLater(SWEEP_SECONDS, self._sweep)
        return proposal.done

    def _sweep(self) -> None:
        """Time out late proposals: one timer for all, not one per write."""
        self._sweeper = None
        if not self.active:
            return
        now = self.clock.seconds()
        pending = 0
        for proposals in (self._queue, *self.waiting.values()):
            for proposal in proposals:
                if proposal.done.called:
                    continue
                if proposal.deadline <= now:
                    proposal.done.errback(InDoubt(
                        f"not committed within {self.write_timeout:g}s; it may still commit"))
                else:
                    pending += 1
        if pending:
            self._sweeper = self.clock.callLater(SWEEP_SECONDS, self._sweep)

    def _flush(self) -> None:
        """Turn the queue into log entries; every proposal taken gets exactly one answer."""
        self._flush_scheduled = False
        while self._queue and self.active:
            batch: list[Proposal] = []
            commands: list[Command] = []
            size = 0
            while self._queue and len(commands) < MAX_BATCH_COMMANDS and size < MAX_BATCH_BYTES:
                proposal = self._queue.pop(0)
                batch.append(proposal)
                commands.extend(proposal.commands)
                size += sum(command_bytes(c) for c in proposal.commands)
            entry = LogEntry(self.epoch, self._log.last_index + 1, commands)
            # Registered first: with an inline disk the entry commits inside append.
            self.waiting[entry.index] = batch
            self._proposed_at[entry.index] = (len(commands), self.clock.seconds())
            try:
                self._log.append([entry])
                if self.on_config_appended is not None and any(
                        c.get("op") == "config" for c in commands):
                    # The new voters count from now on (rule 4): their links first.
                    self.on_config_appended()
            except Exception as e:
                # Not in the log, so certainly never applied: refuse these writes.
                self.log.failure("Could not append a batch of {n} commands", n=len(commands))
                self.waiting.pop(entry.index, None)
                self._proposed_at.pop(entry.index, None)
                for proposal in batch:
                    if not proposal.done.called:
                        proposal.done.errback(RefusedBatch(f"the write could not be logged: {e}"))
        self._wake_links()

    def answer(self, index: int, results: list[dict[str, Any]]) -> None:
        """Entry ``index`` was applied with ``results``: answer the proposals it carried."""
        position = 0
        for proposal in self.waiting.pop(index, []):
            count = len(proposal.commands)
            if not proposal.done.called:
                proposal.done.callback(results[position : position + count])
            position += count

    def _wake_links(self) -> None:
        for link in self.links.values():
            link.wake()

    def _local_durable(self, _index: int) -> None:
        self.advance_commit()

    def stream_answered(self, stream: FollowerLink) -> None:
        """A follower answered at our epoch: count it for commits and read rounds."""
        self.advance_commit()
        self._check_round()

    def saw_higher_epoch(self, epoch: int, who: str) -> None:
        self.log.warn("Node {who} promised epoch {epoch} above ours ({ours}): stepping down",
                      who=who, epoch=epoch, ours=self.epoch)
        if self._on_higher_epoch is not None:
            self._on_higher_epoch(epoch)

    def quorums(self) -> Quorums:
        """The voter sets every decision needs a quorum of (rule 4)."""
        if self._quorums is not None:
            return self._quorums(self.write_quorum)
        return Quorums.single({self.node_id: "", **{i: "" for i in self.links}},
                              self.write_quorum)

    def quorum_seen_since(self) -> float:
        """When W voters of every set (this one included) last all answered: for
        liveness (rule 13)."""
        times = {link.node_id: link.last_ok for link in self.links.values() if link.voter}
        times[self.node_id] = max([self.clock.seconds(), *times.values()])  # ours: freshest
        return self.quorums().latest_quorum_time(times)

    # Read index (DESIGN section 6, safety rule 10)

    def read_index(self) -> Deferred[int]:
        """The commit index as of now, once a round shows this node still leads."""
        if not self.active:
            return fail(NotLeading("this node does not lead"))
        d: Deferred[int] = Deferred()
        self._pending_reads.append(d)
        if self._round is None:
            self._start_round()
        return d

    def _start_round(self) -> None:
        reads, self._pending_reads = self._pending_reads, []
        # Only answers to messages sent after the commit index was noted count,
        # and only from voters (a link counts once it answered as the voter set's disk).
        links = list(self.links.values())
        self._round = _ReadRound(self._log.commit_index, reads,
                                 {link.node_id: link.sent_seq + 1 for link in links})
        for link in links:
            link.wake(force=True)
        self._check_round()

    def _check_round(self) -> None:
        round_ = self._round
        if round_ is None:
            return
        confirmed = {self.node_id, *(
            link.node_id for link in self.links.values()
            if link.voter and link.confirmed_seq >= round_.thresholds.get(link.node_id, 1 << 62)
        )}
        if not self.quorums().reached(confirmed):
            return
        self._round = None
        for read in round_.reads:
            if not read.called:
                read.callback(round_.commit_index)
        if self._pending_reads:
            self._start_round()

    def advance_commit(self) -> None:
        """Commit the highest index of this epoch that W voters hold durably."""
        if not self.active:
            return
        if self._log.promised_epoch != self.epoch:
            # This node promised a newer epoch: nothing more commits by our count,
            # the marker included (rule 1); the node steps down.
            return
        held = {link.node_id: link.match_index for link in self.links.values() if link.voter}
        held[self.node_id] = self._log.durable_index
        candidate = self.quorums().highest_held(held)
        if candidate <= self._log.commit_index or candidate < self.marker_index:
            return
        if self._log.epoch_at(candidate) != self.epoch:
            return
        previous = self._log.commit_index
        self._log.set_commit(candidate)
        if self._proposed_at:
            now = self.clock.seconds()
            for index in range(previous + 1, candidate + 1):
                proposed = self._proposed_at.pop(index, None)
                if proposed is not None and self.observe_round is not None:
                    self.observe_round(proposed[0], now - proposed[1])
        self._on_commit(candidate)
        self._finish_joint_change()
        self._wake_links()

    def _finish_joint_change(self) -> None:
        """Once a joint config (old and new voters) has committed, append the new
        set alone, once; until then both sets decide (rule 4). A new leader that
        inherits a joint entry finishes it the same way once its marker commits."""
        config_indexes = self._log.config_indexes
        if config_indexes:
            at = config_indexes[-1]
            config = self._log.newest_config()
            if at > self._log.commit_index or config is None or not config.get("joint"):
                return
            new_voters = config["voters"]
        else:
            # No config entry above our snapshot: a joint change it recorded has
            # committed (a snapshot holds only committed entries); finish it too.
            quorums = self.quorums()
            if not quorums.joint:
                return
            at = self._log.base_index
            new_voters = [[i, inc] for i, inc in sorted(quorums.sets[-1].voters.items())]
        if self._finishing == at:
            return
        if self.hold_joint is not None and self.hold_joint():
            return
        self._finishing = at
        self.log.info("The joint configuration at {index} committed: appending the new "
                      "voter set alone", index=at)
        self.propose([{"op": "config", "voters": new_voters}]).addErrback(
            self._finish_failed, at)

    def _finish_failed(self, failure: Failure, at: int) -> None:
        """Tried again at the next commit (a hand-over may have paused writes)."""
        self.log.warn("Could not finish the change of voters: {error}",
                      error=failure.getErrorMessage())
        if self._finishing == at:
            self._finishing = None

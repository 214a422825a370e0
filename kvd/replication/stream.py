"""
One ordered stream of PREPAREs from the leader to one follower.

At most one message is in flight per follower, so PREPAREs reach it in
order whatever the connection pool does (safety rule 2); whatever was
appended meanwhile goes in the next message (batching). An idle stream
sends a heartbeat that carries the commit index.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from kvd.replication import messages
from kvd.replication.messages import MAX_MESSAGE_BYTES, NOT_A_VOTER, SNAPSHOT_CHUNK_BYTES
from kvd.replication.peer import PeerClient, entries_to_wire
from kvd.replication.quorum import names_voter, newest_config_sets

if TYPE_CHECKING:
    from kvd.replication.leader import Leader
    from kvd.replication.log import ReplicatedLog

HEARTBEAT_SECONDS = 0.1
#: A commit index with no entries to carry it goes out after this long (DESIGN:
#: "an idle leader sends it within a few ms"), so a busy leader piggybacks it.
COMMIT_DELAY_SECONDS = 0.005
RETRY_SECONDS = 0.2

#: How long a stream waits for a snapshot it asked for before it looks again.
SNAPSHOT_WAIT_SECONDS = 1.0
MESSAGE_TIMEOUT = 3.0
SNAPSHOT_TIMEOUT = 60.0
MAX_ENTRIES_PER_MESSAGE = 1024


class FollowerStream:
    """The leader's view of one follower: what it holds, and what to send next."""

    log = Logger()

    def __init__(
        self,
        leader: Leader,
        rlog: ReplicatedLog,
        peer: PeerClient,
        node_id: str,
        url: str | None,
        incarnation: str | None,
        read_snapshot: Callable[[], Deferred[tuple[int, int, bytes] | None]],
        request_snapshot: Callable[[int], object] | None = None,
    ) -> None:
        """``request_snapshot(index)`` asks for a snapshot at or past ``index``."""
        self.leader = leader
        self.rlog = rlog
        self.peer = peer
        self.node_id = node_id
        self.url = url
        #: The incarnation the leader's voter set has for this node, None for a learner.
        self.incarnation = incarnation
        #: The incarnation the follower last answered with.
        self.answered_incarnation: str | None = None
        self._read_snapshot = read_snapshot
        self._request_snapshot = request_snapshot
        #: Not before then: the newest snapshot was too old, and one was asked for.
        self._snapshot_wait_until = 0.0
        self.next_index = rlog.last_index + 1
        self.match_index = 0
        #: Sequence number of the last message sent, and of the last one answered
        #: at our epoch (read-index rounds count only answers to fresh messages).
        self.sent_seq = 0
        self.confirmed_seq = 0
        self.last_ok = 0.0
        self._sent_commit = -1
        self._inflight = False
        self._want_send = False
        self._active = True
        self._timer: IDelayedCall | None = None
        #: The follower's log does not name us as a voter yet: send it entries up to
        #: the config entry that does (rule 4: it judges us by its own log).
        self._through_config = False

    @property
    def reactor(self) -> Any:
        return self.leader.reactor

    @property
    def voter(self) -> bool:
        """Counted in quorums: a voter of the log, answering as that very disk (rule 5)."""
        return self.incarnation is not None and self.answered_incarnation == self.incarnation

    def start(self) -> None:
        self.wake(force=True)

    def stop(self) -> None:
        self._active = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def wake(self, force: bool = False) -> None:
        """Send now if there is something to say (or ``force``: a heartbeat)."""
        if not self._active:
            return
        if self._inflight:
            self._want_send = self._want_send or force
            return
        if force or self.next_index <= self.rlog.last_index:
            self._send()
        elif self._sent_commit < self.rlog.commit_index:
            self._soon()

    def _soon(self) -> None:
        """A new commit index alone waits a moment for entries to travel with."""
        if self._timer is not None and self._timer.active() \
                and self._timer.getTime() <= self.reactor.seconds() + COMMIT_DELAY_SECONDS:
            return
        self._schedule(COMMIT_DELAY_SECONDS)

    def _schedule(self, delay: float) -> None:
        self._cancel_timer()
        self._timer = self.reactor.callLater(delay, self.wake, True)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _send(self) -> None:
        if self.url is None:
            self._schedule(RETRY_SECONDS)
            return
        if self.next_index <= self.rlog.base_index:
            # Entries may leave memory before a snapshot covers them (Node._release_log):
            # one older than the base would leave the follower short of entries.
            self._send_snapshot(at_least=self.rlog.base_index)
            return
        prev = self.next_index - 1
        prev_epoch = self.rlog.epoch_at(prev)
        assert prev_epoch is not None, "base_index < next_index <= last_index + 1"
        last = min(self.rlog.last_index, self.next_index + MAX_ENTRIES_PER_MESSAGE - 1)
        entries = _within_bytes(self.rlog.entries_between(self.next_index, last))
        if self._through_config:
            naming = self._config_naming_leader()
            if naming >= self.next_index + len(entries):
                # Beyond one message's reach: a snapshot at or past it names us.
                if self.leader.clock.seconds() < self._snapshot_wait_until:
                    self._schedule(RETRY_SECONDS)
                else:
                    self._send_snapshot(at_least=naming)
                return
            if naming:
                # Up to that entry only: a later one (our own removal, say) would
                # not name us, and the follower judges by the newest it is given.
                entries = [e for e in entries if e.index <= naming]
        commit = self.rlog.commit_index
        message = messages.prepare(self.leader.identity_message(), (prev_epoch, prev),
                                   entries_to_wire(entries), commit)
        self._dispatch("prepare", message, MESSAGE_TIMEOUT, commit)

    def _config_naming_leader(self) -> int:
        """The first config entry from ``next_index`` on that names this leader."""
        me, incarnation = self.leader.node_id, self.leader.incarnation
        for at in self.rlog.config_indexes:
            if at >= self.next_index and names_voter(
                    newest_config_sets([self.rlog.entry(at)]), me, incarnation):
                return at
        return 0

    def _send_snapshot(self, at_least: int = 0) -> None:
        """The newest snapshot, in chunks of ``SNAPSHOT_CHUNK_BYTES``, one at a time;
        if it is older than ``at_least``, a newer one is asked for first.

        The follower assembles them and answers the last one as an install;
        any refusal on the way goes to ``_answered`` (a newer epoch, say), and
        the next try starts from the first chunk again.
        """
        self._inflight = True
        self.sent_seq += 1
        seq = self.sent_seq

        def got(found: tuple[int, int, bytes] | None) -> Deferred[Any]:
            if at_least and (found is None or found[1] < at_least):
                self._snapshot_wait_until = self.leader.clock.seconds() + SNAPSHOT_WAIT_SECONDS
                if self._request_snapshot is not None:
                    self._request_snapshot(at_least)
                raise RuntimeError(f"no snapshot at or past {at_least} yet; one was asked for")
            if found is None or not self._active:
                raise RuntimeError("no snapshot to send")
            epoch, index, data = found
            self.log.info("Sending a snapshot at {index} ({size} bytes) to {node_id}",
                          index=index, size=len(data), node_id=self.node_id)
            return send_from(0, epoch, index, data)

        def send_from(offset: int, epoch: int, index: int, data: bytes) -> Deferred[Any]:
            chunk = data[offset:offset + SNAPSHOT_CHUNK_BYTES]
            message = messages.snapshot_chunk(self.leader.identity_message(), epoch, index,
                                              offset, len(data), chunk)
            assert self.url is not None
            d = self.peer.call(self.url, "snapshot", message, SNAPSHOT_TIMEOUT)
            end = offset + len(chunk)

            def answered(reply: dict[str, Any]) -> Any:
                if end < len(data) and reply.get("ok") and self._active:
                    return send_from(end, epoch, index, data)
                return reply

            return d.addCallback(answered)

        d = self._read_snapshot()
        d.addCallback(got)
        d.addCallbacks(self._answered, self._failed, callbackArgs=(seq, -1),
                       errbackArgs=(seq,))

    def _dispatch(self, name: str, message: Mapping[str, Any], timeout: float,
                  commit: int) -> None:
        self._inflight = True
        self._want_send = False
        self.sent_seq += 1
        # This message carries the newest commit index and counts as a heartbeat:
        # a timer set for either would only send a redundant one after it
        # (its answer, or its failure, schedules what comes next).
        self._cancel_timer()
        assert self.url is not None
        d = self.peer.call(self.url, name, message, timeout)
        d.addCallbacks(self._answered, self._failed, callbackArgs=(self.sent_seq, commit),
                       errbackArgs=(self.sent_seq,))

    def _answered(self, reply: dict[str, Any], seq: int, commit: int) -> None:
        self._inflight = False
        if not self._active:
            return
        problem = _reply_problem(reply)
        if problem is not None:
            # A peer's answer crosses a trust boundary too: nothing of it is used.
            self.log.warn("Follower {node_id} answered malformed ({problem})",
                          node_id=self.node_id, problem=problem)
            self._schedule(RETRY_SECONDS)
            return
        promised = int(reply.get("promised", 0))
        incarnation = reply.get("incarnation")
        if incarnation != self.answered_incarnation:
            # Another disk under this node id: what the old one held proves nothing.
            self.answered_incarnation = incarnation
            self.match_index = 0
        if promised > self.leader.epoch:
            # Whatever else it says, this follower no longer answers at our epoch.
            self.leader.saw_higher_epoch(promised, self.node_id)
            return
        if not reply.get("ok") and not reply.get("nack"):
            if reply.get("reject") == NOT_A_VOTER and "last_index" in reply:
                # Its log lags behind the change that made us a voter: resume
                # where it matches, through that change. Nothing counted: it
                # promised nothing.
                self.next_index = max(1, min(self.next_index, int(reply["last_index"]) + 1))
                self._through_config = True
            self.log.warn("Follower {node_id} refused: {why}", node_id=self.node_id,
                          why=reply.get("reject"))
            self._schedule(RETRY_SECONDS)
            return
        self.confirmed_seq = seq
        self.last_ok = self.leader.clock.seconds()
        if reply.get("ok"):
            self._through_config = False
            self.match_index = max(self.match_index, int(reply["index"]))
            self.next_index = int(reply["index"]) + 1
            self._sent_commit = max(self._sent_commit, commit)
        else:
            # NACK: back up to what the follower says it may hold, then retry.
            self.next_index = max(1, min(self.next_index - 1, int(reply["last_index"]) + 1))
        self.leader.stream_answered(self)
        if self._active and not self._inflight:
            if self._want_send or self.next_index <= self.rlog.last_index:
                self._send()
            elif self._sent_commit < self.rlog.commit_index:
                self._soon()
            else:
                self._schedule(HEARTBEAT_SECONDS)

    def _failed(self, failure: Failure, seq: int) -> None:
        self._inflight = False
        if not self._active:
            return
        self.log.debug("Message to {node_id} failed: {error}", node_id=self.node_id,
                       error=failure.getErrorMessage())
        self._schedule(RETRY_SECONDS)


def _reply_problem(reply: Any) -> str | None:
    """What makes a follower's answer unusable, or None."""
    if not isinstance(reply, dict):
        return "not a map"
    wanted = ["promised", *(["index"] if reply.get("ok") else []),
              *(["last_index"] if reply.get("nack") or "last_index" in reply else [])]
    for name in wanted:
        value = reply.get(name, 0 if name == "promised" else None)
        if type(value) is not int or value < 0:
            return f"{name!r} is not a non-negative integer"
    return None


def _within_bytes(entries: list[Any]) -> list[Any]:
    """The first entries that add up to ``MAX_MESSAGE_BYTES`` (at least one), so a
    PREPARE stays within what a follower's peer listener accepts."""
    size = 0
    for n, entry in enumerate(entries):
        size += len(entry.packed)
        if size > MAX_MESSAGE_BYTES and n > 0:
            return entries[:n]
    return entries

"""
A node's role and its way of serving writes and reads.

The node owns the store and the replicated log. As leader (or standalone, a
leader of one) it proposes writes through ``Leader``; as follower it forwards
them. Committed entries are applied here, in index order, and only here.

Role changes have one owner: the transition methods below (``looking``,
``syncing``, ``lead``, ``serving_as_leader``, ``follow``, ``step_down`` and
the ZooKeeper session ones). They keep the invariants in one place: a node is
a candidate or leader only for ``epoch == promised_epoch``; leaving a role
cancels its timers, answers its pending writes (504) and leaves the node
``looking``, from where the election runs again. Nobody else assigns
``role``, ``epoch``, ``leader_info`` or ``unavailable``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure

from kvd.errors import BadRequest, InDoubt, NotReady
from kvd.replication import messages
from kvd.replication.leader import Leader, NotLeading, RefusedBatch
from kvd.replication.log import ReplicatedLog
from kvd.replication.peer import NotDelivered, PeerClient, PeerError
from kvd.replication.quorum import Quorums, VoterSet, config_voter_sets, write_quorum_for
from kvd.roles import Role
from kvd.store import Command, Result, Store
from kvd.wal import snapshot
from kvd.wal.layout import DataDir, Identity

#: Unavailability reasons that the ZooKeeper session's recovery clears.
_SESSION_REASONS = ("waiting for ZooKeeper", "ZooKeeper session")


class Superseded(Exception):
    """This node promised a newer epoch than the one it was to sync or lead."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"this node promised epoch {epoch} meanwhile")
        self.epoch = epoch


@dataclass(frozen=True)
class NodeSettings:
    """The knobs of a node that matter beyond start-up."""

    url: str
    #: Where peers reach this node's peer listener ("" in tests: the same as ``url``).
    peer_url: str = ""
    write_timeout: float = 5.0
    read_timeout: float = 5.0
    #: Take a snapshot every this many applied entries.
    snapshot_entries: int = 20_000
    #: ... or every this many applied commands: batched entries hold many, and
    #: the log in memory between snapshots grows with commands, not entries.
    snapshot_commands: int = 100_000
    #: ... or every this many packed bytes of applied entries: with large
    #: values 100,000 commands would be gigabytes of log held in memory.
    snapshot_bytes: int = 64 << 20
    #: Keep this many entries in memory after a snapshot for lagging followers ...
    log_tail: int = 5_000
    #: ... holding at most this many packed bytes: a batched entry holds many
    #: writes, and 5,000 of them were 8 MiB (etcd keeps 5,000 single requests).
    log_tail_bytes: int = 1 << 20


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
        data_dir: DataDir | None = None,
        clock: IReactorTime | None = None,
        peer: PeerClient | None = None,
        snapshotter: Callable[[Node], object] | None = None,
        on_fatal: Callable[[str], None] | None = None,
        observe_round: Callable[[int, float], None] | None = None,
        defer_to_thread: Callable[..., Deferred[Any]] = deferToThread,
    ) -> None:
        """``peer`` reaches the leader (None: standalone); ``snapshotter`` takes a
        snapshot when the log has grown; ``on_fatal`` stops the process when the
        node finds its state unsafe; ``observe_round`` sees every replication round;
        ``defer_to_thread`` decodes and writes snapshots off the reactor."""
        self._defer_to_thread = defer_to_thread
        self.reactor = reactor
        #: Durations (TTLs, write deadlines, liveness): monotonic in production.
        self.clock = clock if clock is not None else reactor
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
        #: Called with the old store when a snapshot from the leader replaces it.
        self.on_store_replaced: list[Callable[[Store], None]] = []
        self.snapshotter = snapshotter
        self._last_snapshot_index = store.applied_index
        self._commands_since_snapshot = 0
        self._bytes_since_snapshot = 0
        # Counted up to the tail's bounds, then applied entries beyond the tail
        # leave memory; a node starts at the bound (recovery read them all).
        self._entries_since_release = settings.log_tail
        self._bytes_since_release = settings.log_tail_bytes
        self.data_dir = data_dir
        #: Dropped a torn tail and has not acknowledged entries from a leader since;
        #: the flag file was written before the tail was cut (recovery, rule 5).
        self.torn_unacked = data_dir is not None and data_dir.torn_tail_marked()
        #: Voters from the ZooKeeper config znode; only used while the log has none.
        self.bootstrap_voters: dict[str, str] = {}
        self.snapshot_voters: dict[str, str] = {}
        #: The old voters of a joint change in effect at the snapshot's index.
        self.snapshot_joint: dict[str, str] = {}
        #: The cluster's configured N (for a voter set's W: see quorum.write_quorum_for);
        #: None: every voter set takes the W it is given.
        self.replicas: int | None = None
        self._voters_cache: tuple[tuple[int, int], list[dict[str, str]]] | None = None
        #: A standalone node is its own voter set (kept, so its quorums are cached).
        self._standalone_set = [{identity.node_id: identity.incarnation}]
        self._quorums_cache: tuple[list[dict[str, str]], tuple[int, int | None],
                                   Quorums] | None = None
        self.peer = peer
        #: Reads waiting for the next read-index ask (None: none waiting) ...
        self._read_batch: Deferred[int] | None = None
        #: ... and the leader peer URL of the ask in flight (None: none in flight).
        self._read_asking: str | None = None
        self.on_fatal = on_fatal
        self.observe_round = observe_round
        #: Called with True when this node starts serving as leader (or standalone),
        #: with False when it stops leading (the TTL timers follow it).
        self.on_leading: list[Callable[[bool], None]] = []
        #: Called when this node hears of a newer epoch (the coordinator steps down).
        self.on_newer_epoch: list[Callable[[int], None]] = []

    @property
    def node_id(self) -> str:
        return self.identity.node_id

    # Roles: the only place they change

    def become_standalone(self) -> Deferred[None]:
        """Lead a cluster of one: take the next epoch and commit its marker."""
        epoch = self.rlog.promised_epoch + 1
        d = self.rlog.promise(epoch, self.node_id)
        self.role = Role.STANDALONE
        marker = self._start_leader(epoch, 1, [])
        self.leader_info = self._own_info()
        ready = self.wait_applied(marker)

        def serving(_: object) -> None:
            self.unavailable = None
            self._leading(True)
            self.log.info("Standalone node {node_id} serving at epoch {epoch}",
                          node_id=self.node_id, epoch=epoch)

        d.addCallback(lambda _: ready)
        d.addCallback(serving)
        return d

    def _check_promised(self, epoch: int) -> None:
        if not self.rlog.promised_to(epoch, self.node_id):
            raise Superseded(self.rlog.promised_epoch)

    def step_down(self, reason: str) -> None:
        """Stop syncing or leading; writes in flight answer 504 (outcome unknown)."""
        if self.role in (Role.LEADER, Role.SYNCING):
            self.role = Role.LOOKING
            self.leader_info = None
            if self.unavailable is None:
                self.unavailable = f"no leader: {reason}"
        if self.leader is None:
            return
        self.log.info("Stepping down from epoch {epoch}: {reason}", epoch=self.epoch,
                      reason=reason)
        self._leading(False)
        leader, self.leader = self.leader, None
        for proposal in leader.stop():
            if not proposal.done.called:
                proposal.done.errback(InDoubt(reason))

    def looking(self, reason: str) -> None:
        """Not leading or syncing any more; the election may run. A node that
        follows a newer leader meanwhile keeps following it."""
        self.step_down(reason)
        if self.role == Role.LOOKING:
            self.unavailable = reason

    def syncing(self, epoch: int) -> None:
        """Elected with ``epoch``, promised to ourselves: sync before leading."""
        self._check_promised(epoch)
        self.step_down(f"syncing epoch {epoch}")
        self.role = Role.SYNCING
        self.epoch = epoch
        self.leader_info = None
        self.unavailable = "electing a leader"

    def lead(self, epoch: int, write_quorum: int, extra: list[Command]) -> int:
        """Start leading ``epoch`` after sync: append the marker; returns its index.

        Raises ``Superseded`` if this node promised a newer epoch meanwhile (rule 1).
        """
        self._check_promised(epoch)
        if self.role != Role.SYNCING or self.epoch != epoch:
            raise Superseded(self.epoch)
        return self._start_leader(epoch, write_quorum, extra)

    def _start_leader(self, epoch: int, write_quorum: int, extra: list[Command]) -> int:
        self.epoch = epoch
        leader = Leader(self.reactor, self.rlog, epoch, write_quorum, self.apply_committed,
                        self.node_id, self.settings.url, self.saw_epoch, clock=self.clock,
                        peer_url=self.peer_url, quorums=self.quorums)
        leader.incarnation = self.identity.incarnation
        leader.observe_round = self.observe_round
        leader.write_timeout = self.settings.write_timeout
        self.leader = leader
        return leader.start(extra)

    def serving_as_leader(self, epoch: int) -> None:
        """The marker of ``epoch`` committed and ``leader`` is written: serve."""
        self._check_promised(epoch)
        if self.leader is None or self.epoch != epoch:
            raise Superseded(self.epoch)
        self.role = Role.LEADER
        self.unavailable = None
        self._leading(True)
        self.leader_info = self._own_info()

    def _leading(self, leading: bool) -> None:
        for callback in list(self.on_leading):
            callback(leading)

    def saw_epoch(self, epoch: int) -> None:
        """A newer epoch exists: a leader or candidate of an older one stops at once (rule 1)."""
        if epoch > self.epoch and self.role in (Role.LEADER, Role.SYNCING):
            self.step_down(f"epoch {epoch} superseded ours ({self.epoch})")
        for callback in list(self.on_newer_epoch):
            callback(epoch)

    @property
    def url(self) -> str:
        """The URL clients reach this node at."""
        return self.settings.url

    @property
    def peer_url(self) -> str:
        return self.settings.peer_url or self.settings.url

    def _own_info(self) -> dict[str, str]:
        return {"node_id": self.node_id, "url": self.settings.url, "peer_url": self.peer_url}

    def follow(self, epoch: int, leader_id: str, url: str, peer_url: str) -> None:
        if self.role in (Role.LEADER, Role.SYNCING) and epoch > self.epoch:
            self.step_down(f"following {leader_id} at epoch {epoch}")
        if self.leader is None and self.role != Role.SYNCING:
            if self.role != Role.FOLLOWER or self.epoch != epoch:
                self.log.info("Following {leader} at epoch {epoch}", leader=leader_id,
                              epoch=epoch)
            self.role = Role.FOLLOWER
            self.epoch = epoch
            self.leader_info = {"node_id": leader_id, "url": url, "peer_url": peer_url}
            self.unavailable = None

    def leader_announced(self, info: dict[str, Any] | None) -> None:
        """The ``leader`` znode changed (None: deleted)."""
        if self.leader is not None or self.role == Role.SYNCING:
            return
        if info is None:
            if self.role == Role.FOLLOWER:
                self.role = Role.LOOKING
            self.leader_info = None
        elif info["epoch"] >= self.rlog.promised_epoch:
            self.leader_info = {"node_id": info["node_id"], "url": info["url"],
                                "peer_url": info.get("peer_url") or info["url"]}

    def session_waiting(self, reason: str) -> None:
        """Not connected to ZooKeeper yet."""
        self.unavailable = reason

    def session_suspended(self, was_leading: bool) -> None:
        """ZooKeeper's session is suspended: a leader or candidate stops taking writes."""
        if was_leading or self.leader is not None or self.role == Role.SYNCING:
            self.step_down("ZooKeeper session suspended")
            self.unavailable = "ZooKeeper session suspended; waiting to reconnect"

    def session_lost(self) -> None:
        self.step_down("ZooKeeper session lost")
        if self.role == Role.FOLLOWER:
            self.role = Role.LOOKING

    def session_connected(self) -> None:
        if self.unavailable and self.unavailable.startswith(_SESSION_REASONS):
            self.unavailable = None if self.role == Role.FOLLOWER else "looking for a leader"

    def learner_waiting(self, reason: str) -> None:
        """A node that cannot stand for election yet says why it does not serve writes."""
        if self.role != Role.FOLLOWER:
            self.unavailable = reason

    def advance_follower_commit(self, commit_index: int) -> None:
        if commit_index > self.rlog.commit_index:
            self.rlog.set_commit(commit_index)
            self.apply_committed(commit_index)

    def fatal(self, message: str) -> None:
        self.log.critical("{message}", message=message)
        self.unavailable = message
        if self.on_fatal is not None:
            self.on_fatal(message)

    # Forgetful disks (safety rule 5)

    def clear_torn(self) -> None:
        """Acknowledged entries from a leader: counted in R again."""
        if not self.torn_unacked:
            return
        self.torn_unacked = False
        if self.data_dir is not None:
            self.data_dir.clear_torn_tail()

    def adopt_snapshot_meta(self, meta: dict[str, Any]) -> None:
        """Voters recorded with a snapshot: the log's config before its base."""
        voters = meta.get("voters")
        if voters:
            self.snapshot_voters = {str(i): str(inc) for i, inc in voters}
            self.snapshot_joint = {str(i): str(inc) for i, inc in meta.get("joint") or ()}
            self._voters_cache = None

    def replace_store(self, store: Store) -> None:
        """Adopt a store installed from a leader's snapshot."""
        old, self.store = self.store, store
        self._last_snapshot_index = store.applied_index
        for callback in list(self.on_store_replaced):
            callback(old)
        self._release_applied_waiters()

    # Voters (safety rule 4)

    def voter_sets(self) -> list[dict[str, str]]:
        """node id -> incarnation of each voter set in effect: the newest config
        entry in the log (even uncommitted, as in Raft), else the snapshot's, else
        bootstrap. Two sets, old then new, while a change is joint."""
        config = self.rlog.newest_config()
        if config is not None:
            # A truncation may put another config entry at the same index.
            key = (self.rlog.config_indexes[-1], self.rlog.generation)
            if self._voters_cache is None or self._voters_cache[0] != key:
                self._voters_cache = (key, config_voter_sets(config))
            return self._voters_cache[1]
        return self._voter_sets_without_log()

    def voter_sets_at(self, index: int) -> list[dict[str, str]]:
        """The voter sets in effect at entry ``index`` (for a snapshot taken there:
        a config entry above it may yet be truncated)."""
        for at in reversed(self.rlog.config_indexes):
            if at <= index:
                for command in reversed(self.rlog.entry(at).commands):
                    if command.get("op") == "config":
                        return config_voter_sets(command)
        return self._voter_sets_without_log()

    def _voter_sets_without_log(self) -> list[dict[str, str]]:
        """With no config entry to go by: the snapshot's sets, else bootstrap."""
        if self.snapshot_voters:
            return ([self.snapshot_joint, self.snapshot_voters] if self.snapshot_joint
                    else [self.snapshot_voters])
        return [self.bootstrap_voters]

    def voters(self) -> dict[str, str]:
        """node id -> incarnation of every voter in effect (both sets while joint):
        who gets NEWEPOCH and PREPAREs as a voter, and whose messages count."""
        sets = self.voter_sets()
        if len(sets) == 1:
            return sets[0]
        return {**sets[0], **sets[1]}

    def quorums(self, write_quorum: int) -> Quorums:
        """What a write, a read round and a sync need: a quorum of every voter set."""
        sets = self._standalone_set if self.role == Role.STANDALONE else self.voter_sets()
        cached = self._quorums_cache
        if cached is not None and cached[0] is sets and cached[1] == (write_quorum,
                                                                       self.replicas):
            return cached[2]  # asked at every acknowledgement: built once per config
        replicas = self.replicas if self.replicas is not None else len(sets[-1])
        quorums = Quorums([VoterSet(s, write_quorum_for(len(s), replicas, write_quorum))
                           for s in sets])
        self._quorums_cache = (sets, (write_quorum, self.replicas), quorums)
        return quorums

    def voter_ids(self) -> set[str]:
        if self.role == Role.STANDALONE:
            return {self.node_id}
        return set(self.voters())

    def is_voter(self) -> bool:
        return self.voters().get(self.node_id) == self.identity.incarnation

    def log_has_config(self) -> bool:
        return bool(self.rlog.config_indexes) or bool(self.snapshot_voters)

    def read_snapshot_file(self) -> Deferred[tuple[int, int, bytes] | None]:
        """The newest snapshot as on disk, with its (epoch, index); read off the reactor."""
        if self.data_dir is None:
            return succeed(None)
        return self._defer_to_thread(snapshot.read_newest_raw, self.data_dir)

    async def read_snapshot_data(self, data: bytes) -> tuple[snapshot.Snapshot, Store]:
        """Decode a snapshot from a peer and build its store; nothing is written yet.

        Raises ValueError for a snapshot that does not read back whole, so that
        a bad one is refused before any promise, file or WAL record.
        """
        try:
            decoded = await self._defer_to_thread(snapshot.decode, data)
            snapshot.check_meta(decoded.meta)
            store = await self._defer_to_thread(Store.from_snapshot, decoded.store,
                                        history=self.store.history_limit, check=True)
        except Exception as e:
            raise ValueError(f"the snapshot does not read back ({e})") from None
        return decoded, store

    async def install_snapshot(self, data: bytes, decoded: snapshot.Snapshot,
                               store: Store) -> None:
        """Make a checked snapshot our base and our store (safety rule 11)."""
        assert self.data_dir is not None
        await self._defer_to_thread(snapshot.write_bytes, self.data_dir, decoded.index, data)
        await self.rlog.install_snapshot(decoded.epoch, decoded.index)
        self.adopt_snapshot_meta(decoded.meta)
        self.replace_store(store)

    async def install_snapshot_data(self, data: bytes) -> snapshot.Snapshot:
        """Check, then install, a snapshot received from a peer."""
        decoded, store = await self.read_snapshot_data(data)
        await self.install_snapshot(data, decoded, store)
        return decoded

    # Writes

    def submit(self, commands: list[Command]) -> Deferred[list[Result]]:
        """Replicate and apply ``commands``; fire with their results.

        A follower forwards them to the leader it knows of.
        """
        if self.unavailable is not None:
            raise NotReady(self.unavailable)
        if self.leader is None or self.role not in (Role.LEADER, Role.STANDALONE):
            if self.role == Role.SYNCING:
                raise NotReady("a leader is being elected")
            return self._forward(commands)
        d = self.leader.propose(commands)
        d.addErrback(_refused)
        return d

    def _forward(self, commands: list[Command]) -> Deferred[list[Result]]:
        leader = self.leader_info
        if leader is None or self.peer is None or leader["node_id"] == self.node_id:
            raise NotReady("no leader is known right now; retry shortly")
        d = self.peer.call(leader["peer_url"], "forward", messages.forward(commands),
                           self.settings.write_timeout + 1)

        def failed(failure: Failure) -> None:
            if failure.check(NotDelivered):
                raise NotReady(f"the leader at {leader['url']} is unreachable")
            if failure.check(PeerError):
                error = failure.value
                assert isinstance(error, PeerError)
                body = error.body if isinstance(error.body, dict) else {}
                message = body.get("message", "the leader refused the write")
                if error.status == 503:
                    raise NotReady(message)
                raise InDoubt(message)
            raise InDoubt(f"forwarding to the leader failed after it was sent: "
                                 f"{failure.getErrorMessage()}")

        d.addCallbacks(lambda answer: answer["results"], failed)
        return d

    # Applying

    def apply_committed(self, commit_index: int) -> None:
        """Apply every committed entry not applied yet, in order."""
        while self.store.applied_index < self.rlog.commit_index:
            index = self.store.applied_index + 1
            entry = self.rlog.entry(index)
            results = self.store.apply(index, entry.commands)
            self._commands_since_snapshot += len(entry.commands)
            self._bytes_since_snapshot += len(entry.packed)
            self._entries_since_release += 1
            self._bytes_since_release += len(entry.packed)
            # A copy: an observer may remove itself (a read waiting for a revision).
            for observer in list(self.on_applied):
                try:
                    observer(index, entry.commands, results)
                except Exception:
                    # An observer's bug (a watch, a timer) must not cost the writers
                    # of this entry their answers, nor stop the entries after it.
                    self.log.failure("An observer of applied entry {index} failed",
                                     index=index)
            entry.release()
            if self.leader is not None:
                self.leader.answer(index, results)
        self._release_applied_waiters()
        # Between snapshots too, applied entries beyond the tail leave memory.
        if (self._entries_since_release >= self.settings.log_tail
                or self._bytes_since_release >= self.settings.log_tail_bytes):
            self._release_log()
        if self.snapshotter is not None and (
            self.store.applied_index - self._last_snapshot_index
            >= self.settings.snapshot_entries
            or self._commands_since_snapshot >= self.settings.snapshot_commands
            or self._bytes_since_snapshot >= self.settings.snapshot_bytes
        ):
            self._take_snapshot()

    def _release_log(self) -> None:
        """Forget applied entries before the catch-up tail (``log_tail`` entries,
        ``log_tail_bytes``) without waiting for a snapshot: the WAL keeps them for
        a restart, and a follower further behind gets a snapshot at or past the
        new base (``FollowerStream``, ``Follower.fetch``).

        Two things hold entries back: a config entry, since voters live in the log
        (safety rule 4) and only a snapshot records the sets it leaves; and the
        next entry of each follower stream, so that a follower catching up (or
        just installing a snapshot) is not sent one snapshot after another.
        """
        self._entries_since_release = self._bytes_since_release = 0
        rlog = self.rlog
        upto = rlog.tail_start(self.store.applied_index, self.settings.log_tail,
                               self.settings.log_tail_bytes)
        if rlog.config_indexes:
            upto = min(upto, rlog.config_indexes[0] - 1)
        if self.leader is not None:
            for link in self.leader.links.values():
                upto = min(upto, link.next_index - 1)
        rlog.compact(min(upto, self.store.applied_index))

    def snapshot_now(self, at_least: int) -> None:
        """Take a snapshot now if the store has applied ``at_least`` (a voter whose
        log lags behind a change may take the change only from one)."""
        if self.snapshotter is not None and self.store.applied_index >= at_least:
            self._take_snapshot()

    def _take_snapshot(self) -> None:
        assert self.snapshotter is not None
        self._last_snapshot_index = self.store.applied_index
        self._commands_since_snapshot = 0
        self._bytes_since_snapshot = 0
        self.snapshotter(self)

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
            if self.unavailable is not None:
                # Starting, electing, or cut off from ZooKeeper: nothing to confirm with.
                raise NotReady(self.unavailable)
            if self.role == Role.STANDALONE and self.leader is not None:
                d = self.wait_applied(self.rlog.commit_index)
            elif self.role == Role.LEADER and self.leader is not None:
                index = self.leader.read_index()
                index.addErrback(_not_leading)
                d = index.addCallback(self.wait_applied)
            elif self.role == Role.FOLLOWER and self.leader_info is not None:
                d = self._follower_read_index().addCallback(self.wait_applied)
            else:
                raise NotReady(self.unavailable or "no leader to confirm a linearizable read")
        else:
            d = succeed(None)
        if min_revision > self.store.revision and self.leader is not None \
                and self.unavailable is None \
                and self.rlog.commit_index == self.store.applied_index:
            # A serving leader has applied all it committed: no client can have seen this.
            raise BadRequest(f"min_revision {min_revision} is a future revision "
                             f"(current {self.store.revision})")
        if min_revision > self.store.revision:
            d.addCallback(lambda _: self._wait_revision(min_revision))
        if not d.called or d.paused:
            # Still waiting. A read answered already (stale, or a standalone node's)
            # skips the callLater and its cancel.
            d.addTimeout(self.settings.read_timeout, self.reactor, _read_timed_out)
        return d

    def _follower_read_index(self) -> Deferred[int]:
        """Ask the leader for a read index, one ask at a time: reads that arrive while
        one is in flight share the next, sent when it answers. Never the one in
        flight: its index was noted before they arrived (rule 10)."""
        if self._read_batch is None:
            self._read_batch = Deferred()
            leader = self.leader_info
            if self._read_asking is None or leader is None \
                    or leader["peer_url"] != self._read_asking:
                # Nothing in flight, or it went to a former leader: ask now.
                self.reactor.callLater(0, self._send_read_batch)
        mine: Deferred[int] = Deferred()
        self._read_batch.addBoth(_chain, mine)
        return mine

    def _send_read_batch(self) -> None:
        batch, self._read_batch = self._read_batch, None
        if batch is None:
            return  # sent already, when the ask before it answered
        leader = self.leader_info
        if leader is None or self.peer is None:
            batch.errback(NotReady("no leader to confirm a linearizable read"))
            return
        url = self._read_asking = leader["peer_url"]
        d = self.peer.call(url, "readindex", {}, self.settings.read_timeout)
        d.addCallback(lambda answer: int(answer["index"]))
        d.addErrback(lambda f: _raise(NotReady(
            f"the leader could not confirm a read: {f.getErrorMessage()}")))
        d.addBoth(self._read_answered, url)
        d.chainDeferred(batch)
        # Each waiter got the failure through its own chain; the batch is handled.
        batch.addErrback(lambda _: None)

    def _read_answered(self, result: object, url: str) -> object:
        """The ask to ``url`` is over: send the reads that waited for it."""
        if self._read_asking == url:
            self._read_asking = None
            if self._read_batch is not None:
                self._send_read_batch()
        return result

    def _wait_revision(self, revision: int) -> Deferred[None]:
        d: Deferred[None] = Deferred()

        def check(index: int, commands: list[Command], results: list[Result]) -> None:
            if self.store.revision >= revision and not d.called:
                self.on_applied.remove(check)
                d.callback(None)

        def forget(failure: Failure) -> Failure:
            if check in self.on_applied:
                self.on_applied.remove(check)
            return failure

        d.addErrback(forget)
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
        }

    def own_member(self) -> dict[str, Any]:
        """This node as a row of the member table (all of it without a cluster)."""
        return {"node_id": self.node_id, "url": self.settings.url, "peer_url": self.peer_url,
                "role": self.role.value, "last_index": self.rlog.last_index, "lag": 0}


def _not_leading(failure: Failure) -> None:
    failure.trap(NotLeading)
    raise NotReady(f"the read could not be confirmed: {failure.getErrorMessage()}")


def _refused(failure: Failure) -> None:
    failure.trap(RefusedBatch)
    raise NotReady(failure.getErrorMessage())


def _chain(result: Any, d: Deferred[Any]) -> Any:
    """Pass a shared batch's outcome to one waiter, and on to the next waiter."""
    if isinstance(result, Failure):
        d.errback(result)
    else:
        d.callback(result)
    return result


def _raise(error: Exception) -> None:
    raise error


def _read_timed_out(result: object, timeout: float) -> object:
    raise NotReady(f"the read could not be confirmed within {timeout:g}s")


__all__ = ["Node", "NodeSettings", "Role"]

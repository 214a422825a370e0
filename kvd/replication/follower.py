"""
The follower's half: answering NEWEPOCH, PREPARE and snapshot installs.

Messages are handled one at a time (a ``DeferredLock``), so a message from
a new leader never interleaves with one from an old leader half-way through
a truncation. Every answer that votes is sent only after what it vouches for
is durable, and only if the promise still equals the message's epoch
(safety rule 1).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, DeferredLock
from twisted.logger import Logger

from kvd.replication.log import FatalLogError, ReplicatedLog
from kvd.replication.messages import NOT_A_VOTER, BadMessage
from kvd.replication.peer import entries_from_wire, entries_to_wire
from kvd.replication.quorum import names_voter, newest_config_sets
from kvd.roles import Role
from kvd.store import Store
from kvd.wal.layout import Identity
from kvd.wal.snapshot import Snapshot, snapshot_voter_sets

T = TypeVar("T")


class FollowerHost(Protocol):
    """What a follower needs of its node (``kvd.node.Node`` is one)."""

    rlog: ReplicatedLog
    store: Store
    identity: Identity
    role: Role
    torn_unacked: bool

    def voters(self) -> dict[str, str]: ...

    def is_voter(self) -> bool: ...

    def saw_epoch(self, epoch: int) -> None: ...

    def follow(self, epoch: int, leader_id: str, url: str, peer_url: str) -> None: ...

    def advance_follower_commit(self, commit_index: int) -> None: ...

    def fatal(self, message: str) -> None: ...

    def clear_torn(self) -> None: ...

    def read_snapshot_file(self) -> Deferred[tuple[int, int, bytes] | None]: ...

    def snapshot_now(self, at_least: int) -> None: ...

    async def read_snapshot_data(self, data: bytes) -> tuple[Snapshot, Store]: ...

    async def install_snapshot(self, data: bytes, decoded: Snapshot, store: Store) -> None: ...

#: Most entries a FETCH answer carries.
FETCH_LIMIT = 4096


class Follower:
    """Peer message handlers of one node."""

    log = Logger()

    def __init__(self, node: FollowerHost) -> None:
        self.node = node
        self.lock = DeferredLock()
        #: A snapshot arriving in chunks: (who sends it, which one, its size) and
        #: the bytes so far. Memory only; a chunk at offset 0 starts again.
        self._incoming: tuple[tuple[Any, ...], bytearray] | None = None

    async def _serialised(self, handler: Any, message: dict[str, Any]) -> dict[str, Any]:
        reply: dict[str, Any] = await self.locked(lambda: handler(message))
        # Every answer says which disk gave it: votes count only from the voter
        # set's incarnation (safety rule 5).
        reply["incarnation"] = self.node.identity.incarnation
        return reply

    async def locked(self, f: Callable[[], Awaitable[T]]) -> T:
        """Run ``f`` while no peer message is handled (a candidate's own log changes)."""
        await self.lock.acquire()
        try:
            return await f()
        finally:
            self.lock.release()

    def _refusal(self, message: dict[str, Any],
                 named_by: Callable[[], list[dict[str, str]]] | None = None
                 ) -> dict[str, Any] | None:
        """Why this message must be refused: an old epoch, a non-voter sender, or
        an epoch already promised to another leader. ``named_by``: the voter sets
        the message itself would put in effect here (a PREPARE's config entry),
        asked only of a sender our log does not name."""
        rlog = self.node.rlog
        epoch, sender = message["epoch"], message["node_id"]
        if epoch < rlog.promised_epoch:
            return {"ok": False, "reject": "stale epoch", "promised": rlog.promised_epoch}
        if epoch == rlog.promised_epoch and rlog.promised_leader not in ("", sender):
            # One leader per epoch (rule 15): ZooKeeper's counter may have been reset.
            return {"ok": False, "reject": f"epoch {epoch} was promised to another leader",
                    "promised": rlog.promised_epoch}
        voters = self.node.voters() if self.node.role != Role.STANDALONE else {}
        incarnation = message.get("incarnation")
        if voters.get(sender) != incarnation and not (
                named_by is not None and names_voter(named_by(), sender, incarnation)):
            return {"ok": False, "reject": NOT_A_VOTER, "promised": rlog.promised_epoch}
        return None

    async def _promise(self, epoch: int, leader: str) -> None:
        """Persist a promise of ``epoch`` to ``leader`` first; a leader of an older
        epoch steps down."""
        rlog = self.node.rlog
        if epoch > rlog.promised_epoch:
            self.node.saw_epoch(epoch)
            await rlog.promise(epoch, leader)
        elif not rlog.promised_leader:
            await rlog.promise(epoch, leader)
        else:
            # Promised already, perhaps by another path whose write is in flight.
            await rlog.wait_promise_durable(epoch, leader)

    def _still_promised(self, epoch: int) -> dict[str, Any] | None:
        promised = self.node.rlog.promised_epoch
        if promised != epoch:
            return {"ok": False, "reject": "promised a newer epoch meanwhile",
                    "promised": promised}
        return None

    # NEWEPOCH

    def new_epoch(self, message: dict[str, Any]) -> Any:
        return self._serialised(self._new_epoch, message)

    async def _new_epoch(self, message: dict[str, Any]) -> dict[str, Any]:
        refusal = self._refusal(message)
        if refusal is not None:
            return refusal
        if not self.node.is_voter():
            # Not the disk the voter set knows (a wiped dir under an old id): a
            # learner, whatever it holds, never answers as a voter (rule 5).
            return {"ok": False, "reject": "this node is not a voter of its log",
                    "promised": self.node.rlog.promised_epoch}
        epoch = message["epoch"]
        await self._promise(epoch, message["node_id"])
        rlog = self.node.rlog
        await rlog.wait_durable(rlog.last_index)
        refusal = self._still_promised(epoch)
        if refusal is not None:
            return refusal
        return {
            "ok": True, "promised": epoch, "last": list(rlog.last),
            "commit_index": rlog.commit_index, "torn": self.node.torn_unacked,
        }

    # PREPARE

    def prepare(self, message: dict[str, Any]) -> Any:
        return self._serialised(self._prepare, message)

    def _hint(self, prev_index: int) -> int:
        """Where a leader should resume when our entry at ``prev_index`` differs."""
        rlog = self.node.rlog
        hint = rlog.last_index if prev_index > rlog.last_index else prev_index - 1
        return max(hint, rlog.commit_index)

    def _matches_at(self, prev_epoch: int, prev_index: int) -> bool:
        """Does our log hold entry ``prev`` (below our snapshot: committed, so equal)?"""
        rlog = self.node.rlog
        return prev_index < rlog.base_index or rlog.epoch_at(prev_index) == prev_epoch

    def _named_after(self, prev_epoch: int, prev_index: int,
                     entries: list[Any]) -> list[dict[str, str]]:
        """The voter sets this PREPARE's entries would put in effect, if they extend
        our log at ``prev``: a voter whose log lags behind the change that named its
        leader must still take the change from that leader (rule 4)."""
        if not self._matches_at(prev_epoch, prev_index):
            return []
        base = self.node.rlog.base_index
        return newest_config_sets([e for e in entries if e.index > base])

    async def _prepare(self, message: dict[str, Any]) -> dict[str, Any]:
        entries = entries_from_wire(message["entries"])
        prev_epoch, prev_index = message["prev"]
        refusal = self._refusal(message, lambda: self._named_after(prev_epoch, prev_index, entries))
        if refusal is not None:
            if refusal["reject"] == NOT_A_VOTER:
                # Nothing promised: where our log matches, so that the leader can send
                # from there through the config entry that names it.
                refusal["last_index"] = (
                    max(prev_index, self.node.rlog.base_index)
                    if self._matches_at(prev_epoch, prev_index) else self._hint(prev_index))
            return refusal
        epoch = message["epoch"]
        await self._promise(epoch, message["node_id"])
        refusal = self._still_promised(epoch)
        if refusal is not None:
            return refusal
        node, rlog = self.node, self.node.rlog
        node.follow(epoch, message["node_id"], message["url"], message["peer_url"])
        if prev_index < rlog.base_index:
            # Below our snapshot: those entries are committed, hence equal here.
            entries = [e for e in entries if e.index > rlog.base_index]
            prev_index = rlog.base_index
        elif rlog.epoch_at(prev_index) != prev_epoch:
            return {"ok": False, "nack": True, "last_index": self._hint(prev_index),
                    "promised": epoch}
        try:
            self.append_missing(entries)
        except FatalLogError as e:
            node.fatal(f"refusing to corrupt the log: {e}")
            raise
        acknowledged = prev_index + len(entries)
        await rlog.wait_durable(acknowledged)
        refusal = self._still_promised(epoch)
        if refusal is not None:
            return refusal
        if entries:
            node.clear_torn()
        node.advance_follower_commit(min(message["commit"], acknowledged))
        return {"ok": True, "index": acknowledged, "promised": epoch}

    def append_missing(self, entries: list[Any]) -> None:
        """Append what we lack; truncate only from the first epoch that differs."""
        rlog = self.node.rlog
        for position, entry in enumerate(entries):
            held = rlog.epoch_at(entry.index)
            if held == entry.epoch:
                continue
            if held is not None:
                self.log.info("Truncating a divergent suffix from {index}", index=entry.index)
                rlog.truncate_from(entry.index)
            rlog.append(entries[position:])
            return

    # Snapshots

    def install_snapshot(self, message: dict[str, Any]) -> Any:
        return self._serialised(self._install_snapshot, message)

    def _assemble(self, message: dict[str, Any]) -> bytes | dict[str, Any]:
        """Add a chunk; the whole snapshot once it is complete, else the answer."""
        which = (message["epoch"], message["node_id"], message["snapshot_epoch"],
                 message["snapshot_index"], message["total"])
        offset, chunk = message["offset"], message["data"]
        if offset == 0:
            self._incoming = (which, bytearray())
        incoming = self._incoming
        if incoming is None or incoming[0] != which or len(incoming[1]) != offset:
            self._incoming = None
            return {"ok": False, "reject": "snapshot chunk out of order",
                    "promised": self.node.rlog.promised_epoch}
        incoming[1].extend(chunk)
        if len(incoming[1]) < message["total"]:
            return {"ok": True, "received": len(incoming[1]),
                    "promised": self.node.rlog.promised_epoch}
        self._incoming = None
        return bytes(incoming[1])

    async def _install_snapshot(self, message: dict[str, Any]) -> dict[str, Any]:
        refusal = self._refusal(message)
        # A sender our log does not name may be named by the snapshot (rule 4):
        # it is judged once the snapshot is whole and read back.
        if refusal is not None and refusal["reject"] != NOT_A_VOTER:
            return refusal
        assembled = self._assemble(message)
        if isinstance(assembled, dict):
            return assembled
        data = assembled
        # Read whole before the promise: a snapshot that does not read back is a
        # bad message, refused with nothing changed.
        try:
            decoded, store = await self.node.read_snapshot_data(data)
        except ValueError as e:
            raise BadMessage(str(e)) from None
        found = (decoded.epoch, decoded.index)
        if found != (message["snapshot_epoch"], message["snapshot_index"]):
            raise BadMessage(f"the snapshot is at {found}, not where the message says")
        if refusal is not None:
            # Every check again, the snapshot's own sets counted this time.
            refusal = self._refusal(message, lambda: snapshot_voter_sets(decoded.meta))
            if refusal is not None:
                return refusal
        epoch = message["epoch"]
        await self._promise(epoch, message["node_id"])
        refusal = self._still_promised(epoch)
        if refusal is not None:
            return refusal
        node = self.node
        node.follow(epoch, message["node_id"], message["url"], message["peer_url"])
        snap_index = message["snapshot_index"]
        if snap_index <= node.store.applied_index:
            return {"ok": True, "index": snap_index, "promised": epoch}
        await node.install_snapshot(data, decoded, store)
        self.log.info("Installed a snapshot at index {index} from the leader", index=snap_index)
        refusal = self._still_promised(epoch)
        if refusal is not None:
            return refusal
        return {"ok": True, "index": snap_index, "promised": epoch}

    # FETCH: a new leader reads the most advanced log from its owner

    def fetch(self, message: dict[str, Any]) -> Any:
        return self._serialised(self._fetch, message)

    async def _fetch(self, message: dict[str, Any]) -> dict[str, Any]:
        refusal = self._refusal(message)
        if refusal is not None:
            return refusal
        rlog = self.node.rlog
        first = message["from"]
        if first <= rlog.base_index:
            found = await self.node.read_snapshot_file()
            if found is None or found[1] < rlog.base_index:
                # Entries leave memory before a snapshot covers them: an older one
                # could be older than the new leader's own store. Take one; the
                # new leader's next sync attempt gets it.
                self.node.snapshot_now(rlog.base_index)
                return {"ok": False, "reject": "no snapshot at or past the log's base yet; "
                                               "one is being taken"}
            return {"ok": True, "snapshot": found[2], "entries": []}
        last = min(rlog.last_index, first + FETCH_LIMIT - 1)
        return {"ok": True, "entries": entries_to_wire(rlog.entries_between(first, last)),
                "last": list(rlog.last)}

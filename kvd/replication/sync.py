"""
The sync phase of a new leader (ZAB's discovery and synchronisation).

The candidate persists its promise, sends NEWEPOCH to every voter of its log,
waits for R answers of every voter set (itself included), adopts the most advanced log among
them, compared by (epoch of last entry, last index), fetching what it lacks
from its owner. Making followers equal to it is then the PREPARE/NACK
stream's job; the marker entry of the new epoch commits everything before it.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Protocol

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger

from kvd.replication import messages
from kvd.replication.follower import Follower
from kvd.replication.log import ReplicatedLog
from kvd.replication.peer import PeerClient, entries_from_wire
from kvd.replication.quorum import Quorums
from kvd.wal.layout import Identity
from kvd.wal.snapshot import Snapshot

log = Logger()

NEWEPOCH_TIMEOUT = 2.0
FETCH_TIMEOUT = 30.0


class Candidate(Protocol):
    """What a sync needs of the node that stands (``kvd.node.Node`` is one)."""

    rlog: ReplicatedLog
    identity: Identity
    torn_unacked: bool

    @property
    def node_id(self) -> str: ...

    @property
    def peer_url(self) -> str: ...

    @property
    def url(self) -> str: ...

    def voters(self) -> dict[str, str]: ...

    def quorums(self, write_quorum: int) -> Quorums: ...

    async def install_snapshot_data(self, data: bytes) -> Snapshot: ...


class SyncFailed(Exception):
    """Not enough voters answered, or the adopted log could not be fetched."""


class HigherEpoch(Exception):
    """A voter has promised an epoch at or above ours: take a newer one."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"a voter promised epoch {epoch}")
        self.epoch = epoch


class LostCommits(Exception):
    """A voter reports a commit index beyond the adopted log: data was lost."""


def _still_candidate(node: Candidate, epoch: int) -> None:
    """Go on only while our promise is ``epoch``, to ourselves (rule 1): a promise
    of a newer epoch, made to another candidate meanwhile, ends this sync."""
    if not node.rlog.promised_to(epoch, node.node_id):
        raise HigherEpoch(node.rlog.promised_epoch)


async def synchronise(
    node: Candidate, follower: Follower, epoch: int, urls: dict[str, str], peer: PeerClient,
    write_quorum: int,
) -> None:
    """Bring this candidate's log to the most advanced of R voters' logs (R of every
    voter set); changes of our log take ``follower``'s lock, so that no PREPARE
    interleaves with them.

    A log adopted from another voter may name newer voter sets (a change the
    candidate had not seen yet): their voters are asked too, and R of each
    must have answered, or a write the new set alone committed could be
    missed (rule 4). Configs only change by adopting a more advanced log, so
    this ends.
    """
    rlog = node.rlog
    await rlog.promise(epoch, node.node_id)
    _still_candidate(node, epoch)
    await rlog.wait_durable(rlog.last_index)
    _still_candidate(node, epoch)
    answers: dict[str, dict[str, Any]] = {}
    if not node.torn_unacked:
        answers[node.node_id] = {"last": list(rlog.last), "commit_index": rlog.commit_index,
                                 "incarnation": node.identity.incarnation}
    message = messages.new_epoch(messages.sender(epoch, node.node_id, node.url, node.peer_url,
                                                 node.identity.incarnation))
    asked = {node.node_id}
    # A torn voter is not counted in R, but what it knows was committed still counts.
    highest_commit = rlog.commit_index
    for _ in range(MAX_CONFIG_ROUNDS):
        quorums = node.quorums(write_quorum)
        voters = quorums.union()
        highest_commit = max(highest_commit, await _ask(
            node, epoch, peer, message, urls, [v for v in voters if v not in asked], answers))
        asked.update(voters)
        # Only answers from the disks these sets name count (rule 5).
        counted = {v: a for v, a in answers.items() if voters.get(v) == a.get("incarnation")}
        if not quorums.sync_reached(counted):
            needed = " and ".join(str(s.sync_quorum) for s in quorums.sets)
            raise SyncFailed(f"{len(counted)} of the {needed} voters needed answered NEWEPOCH")
        best_id = max(counted, key=lambda v: tuple(counted[v]["last"]))
        best_last = tuple(counted[best_id]["last"])
        if best_last > rlog.last:
            log.info("Adopting the log of {owner} (last {last}, ours {ours})", owner=best_id,
                     last=best_last, ours=rlog.last)
            await _fetch_log(node, follower, epoch, counted[best_id]["url"], best_last, peer)
        if node.quorums(write_quorum) == quorums:
            break
        log.info("The adopted log names other voters: asking them too")
    else:
        raise SyncFailed("the voter sets kept changing during sync")
    if highest_commit > rlog.last_index:
        raise LostCommits(
            f"a voter committed index {highest_commit} but the most advanced log of the "
            f"sync quorum ends at {rlog.last_index}: acknowledged writes may be lost"
        )
    _still_candidate(node, epoch)


#: How many times a sync follows a newer voter set found in an adopted log.
MAX_CONFIG_ROUNDS = 4


async def _ask(node: Candidate, epoch: int, peer: PeerClient, message: messages.NewEpoch,
               urls: dict[str, str], voters: list[str],
               answers: dict[str, dict[str, Any]]) -> int:
    """Send NEWEPOCH to ``voters``; note each untorn answer in ``answers``.
    Returns the highest commit index any of them reported."""
    calls: list[Deferred[Any]] = []
    for voter in voters:
        url = urls.get(voter)
        if url is None:
            continue
        d = peer.call(url, "newepoch", message, NEWEPOCH_TIMEOUT)
        d.addCallback(_from, voter, url)
        calls.append(d)
    results = await DeferredList(calls, consumeErrors=True)
    _still_candidate(node, epoch)
    highest_rejection = 0
    highest_commit = 0
    expected = node.voters()
    for ok, value in results:
        if not ok:
            continue
        voter, url, reply = value
        if not reply.get("ok"):
            highest_rejection = max(highest_rejection, int(reply.get("promised", 0)))
            continue
        highest_commit = max(highest_commit, int(reply["commit_index"]))
        if reply.get("incarnation") != expected.get(voter):
            # The voter's id on another disk: it forgot what it acknowledged (rule 5).
            log.warn("Not counting {voter}: incarnation {got}, the voter set has {want}",
                     voter=voter, got=reply.get("incarnation"), want=expected.get(voter))
        if not reply.get("torn"):
            answers[voter] = {**reply, "url": url}  # counted only if its disk is the voter's
    if highest_rejection >= epoch:
        raise HigherEpoch(highest_rejection)
    return highest_commit


async def _fetch_log(node: Candidate, follower: Follower, epoch: int, url: str,
                     target: tuple[int, int], peer: PeerClient) -> None:
    """Copy the owner's log from our commit index on, truncating where we diverge."""
    rlog = node.rlog
    first = rlog.commit_index + 1
    while rlog.last < target:
        reply = await peer.call(url, "fetch", messages.fetch(
            epoch, node.node_id, node.identity.incarnation, first), FETCH_TIMEOUT)
        _still_candidate(node, epoch)
        if not reply.get("ok"):
            raise SyncFailed(f"fetch from {url} refused: {reply.get('reject')}")
        if reply.get("snapshot") is not None:
            data = reply["snapshot"]
            decoded = await follower.locked(partial(_install, node, epoch, data))
            first = decoded.index + 1
            continue
        entries = entries_from_wire(reply["entries"])
        if not entries:
            raise SyncFailed(f"{url} sent no entries from {first}")
        await follower.locked(partial(_append, node, follower, epoch, entries))
        first = entries[-1].index + 1
    await rlog.wait_durable(rlog.last_index)


async def _append(node: Candidate, follower: Follower, epoch: int,
                  entries: list[Any]) -> None:
    # Under the follower's lock: no PREPARE interleaves with this change of our log.
    _still_candidate(node, epoch)
    follower.append_missing(entries)


async def _install(node: Candidate, epoch: int, data: bytes) -> Any:
    _still_candidate(node, epoch)
    return await node.install_snapshot_data(data)


def _from(reply: dict[str, Any], voter: str, url: str) -> tuple[str, str, dict[str, Any]]:
    """A NEWEPOCH answer with who gave it."""
    return voter, url, reply

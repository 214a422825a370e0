"""Helpers shared by the safety tests: cluster members, leaders, sync, snapshots."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed

from kvd.node import Node
from kvd.replication.leader import Leader
from kvd.replication.stream import FollowerStream
from kvd.replication.sync import synchronise
from kvd.store import Store
from kvd.wal import snapshot
from kvd.wal.record import LogEntry, RecordType
from tests.replication.support import (
    OTHER_DISK,
    Answer,
    FakeLink,
    InlineReactor,
    Peers,
    answer,
    message,
    open_member,
    wal_payloads,
)
from tests.support import follower_of

VOTERS = ("a", "b", "c")


def member(tmp_path: Any, reactor: InlineReactor, node_id: str, pool: Any = None,
           fsync: bool = True) -> Node:
    """Node ``node_id`` of a cluster whose voters are a, b and c (bootstrap config)."""
    node = open_member(str(tmp_path / node_id), reactor, node_id, pool, fsync)
    node.bootstrap_voters = {v: OTHER_DISK for v in VOTERS}
    if node_id in VOTERS:
        node.bootstrap_voters[node_id] = node.identity.incarnation
    return node


def cluster(tmp_path: Any, reactor: InlineReactor) -> dict[str, Node]:
    """Voters a, b and c, each knowing the others' incarnations."""
    nodes = {i: open_member(str(tmp_path / i), reactor, i) for i in VOTERS}
    voters = {i: n.identity.incarnation for i, n in nodes.items()}
    for node in nodes.values():
        node.bootstrap_voters = dict(voters)
    return nodes


def give_log(node: Node, entries: list[LogEntry], commit: int = 0, promised: int = 0) -> None:
    """Put ``entries`` in ``node``'s log (durably, inline), commit and apply up to ``commit``."""
    if promised > node.rlog.promised_epoch:
        node.rlog.promise(promised)
    node.rlog.append(entries)
    node.advance_follower_commit(commit)


def lead(node: Node, epoch: int, quorum: int, *links: Any) -> Leader:
    """Make ``node`` the leader of ``epoch`` (marker appended) with these follower links."""
    if epoch > node.rlog.promised_epoch:
        node.rlog.promise(epoch, node.node_id)
    node.syncing(epoch)
    node.lead(epoch, quorum, [])
    leader = node.leader
    assert leader is not None
    for link in links:
        leader.links[link.node_id] = link
    return leader


def serve(node: Node, link: FakeLink) -> Leader:
    """Commit the leader's marker through ``link`` and start serving."""
    leader = node.leader
    assert leader is not None
    link.match_index = leader.marker_index
    leader.advance_commit()
    assert node.rlog.commit_index == leader.marker_index
    node.serving_as_leader(leader.epoch)
    return leader


def submit(node: Node, reactor: InlineReactor, *commands: dict[str, Any]) -> Answer:
    """Submit a write and let the leader's batcher run."""
    watched = Answer(node.submit(list(commands)))
    reactor.advance(0)
    return watched


def payloads(node: Node, kind: RecordType) -> list[list[Any]]:
    assert node.data_dir is not None
    return [p[1:] for p in wal_payloads(node.data_dir.root) if p[0] == kind]


def epochs(node: Node) -> list[int]:
    return [e.epoch for e in node.rlog.entries]


def snapshot_of(entries: list[LogEntry]) -> tuple[Store, bytes]:
    """The store a leader has after applying ``entries``, and its snapshot bytes."""
    store = Store()
    for e in entries:
        store.apply(e.index, e.commands)
    last = entries[-1]
    data = snapshot.encode(snapshot.Snapshot(last.epoch, last.index, store.snapshot_state(), {}))
    return store, data


def install(node: Node, sender: str, epoch: int, snap: LogEntry, data: bytes,
            incarnation: str = OTHER_DISK) -> Answer:
    return answer(follower_of(node).install_snapshot(message(
        sender, epoch, incarnation, snapshot_epoch=snap.epoch, snapshot_index=snap.index,
        offset=0, total=len(data), data=data)))


def run_sync(node: Node, epoch: int, peers: Peers, quorum: int,
             urls: dict[str, str] | None = None) -> Answer:
    """Sync ``node`` as a candidate of ``epoch`` that needs ``quorum`` answers (R)."""
    urls = urls if urls is not None else {v: f"http://{v}" for v in VOTERS}
    write_quorum = len(node.voters()) - quorum + 1
    return Answer(Deferred.fromCoroutine(synchronise(node, follower_of(node), epoch, urls,
                                                       peers.client(), write_quorum)))


def stream_to(leader_node: Node, peers: Peers, node_id: str) -> FollowerStream:
    """The leader's real ordered stream to follower ``node_id`` (a voter), through ``peers``."""
    leader = leader_node.leader
    assert leader is not None
    incarnation = leader_node.voters()[node_id]
    stream = FollowerStream(leader, leader_node.rlog, peers.client(), node_id,
                            f"http://{node_id}", incarnation, lambda: succeed(None))
    leader.links[node_id] = stream
    return stream

"""
One or more tests per replication safety rule of DESIGN.md section 5.

Every test runs in process: nodes on real files in ``tmp_path``, driven by an
``InlineReactor`` clock, their WAL writer either inline or behind a
``ManualPool`` (a disk that finishes only when the test says so), peers and
follower links faked. Above each test, "Fails if" names the one-line change
to ``kvd`` that the test was checked to catch. Rule 13's ZooKeeper half is
covered by the integration tests.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionLost

from kvd import node as node_module
from kvd.errors import NotReady, OutcomeUnknown
from kvd.node import Node, NodeSettings, Role
from kvd.replication import follower as follower_module
from kvd.replication.leader import Leader, NotLeading
from kvd.replication.log import FatalLogError
from kvd.replication.peer import NotDelivered
from kvd.replication.stream import FollowerStream
from kvd.replication.sync import HigherEpoch, LostCommits, SyncFailed, synchronise
from kvd.service import open_node, recover_store
from kvd.store import Store, expire_command, put_command
from kvd.wal import snapshot
from kvd.wal.layout import DataDir, Identity
from kvd.wal.record import LogEntry, RecordType
from kvd.wal.recovery import recover
from kvd.wal.writer import LAZY_DELAY
from tests.replication.support import (
    OTHER_DISK,
    Answer,
    FakeLink,
    InlineReactor,
    ManualPool,
    Peers,
    answer,
    close_all,
    config_entry,
    entry,
    inline_defer_to_thread,
    message,
    open_member,
    prepare,
    put,
    reopen,
    wal_payloads,
)
from tests.support import open_inline_node

VOTERS = ("a", "b", "c")


@pytest.fixture(autouse=True)
def no_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Snapshot files are read and written on the calling thread; WALs closed after."""
    # Snapshot files are read and installed through the node only.
    monkeypatch.setattr(node_module, "deferToThread", inline_defer_to_thread)
    yield
    close_all()


@pytest.fixture
def reactor() -> InlineReactor:
    return InlineReactor()


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
    return answer(node.follower.install_snapshot(message(
        sender, epoch, incarnation, snapshot_epoch=snap.epoch, snapshot_index=snap.index,
        offset=0, total=len(data), data=data)))


def run_sync(node: Node, epoch: int, peers: Peers, quorum: int,
             urls: dict[str, str] | None = None) -> Answer:
    urls = urls if urls is not None else {v: f"http://{v}" for v in VOTERS}
    return Answer(Deferred.fromCoroutine(synchronise(node, epoch, urls, peers.client(), quorum)))


def stream_to(leader_node: Node, peers: Peers, node_id: str) -> FollowerStream:
    """The leader's real ordered stream to follower ``node_id`` (a voter), through ``peers``."""
    leader = leader_node.leader
    assert leader is not None
    incarnation = leader_node.voters()[node_id]
    stream = FollowerStream(leader, leader_node.rlog, peers.client(), node_id,
                            f"http://{node_id}", incarnation, lambda: succeed(None))
    leader.links[node_id] = stream
    return stream


# Rule 1: what is durable before a vote


# Fails if: Follower._prepare drops `await rlog.wait_durable(acknowledged)`.
def test_rule1_ack_waits_for_the_entries_fsync(tmp_path: Any, reactor: InlineReactor) -> None:
    """A PREPARE's ACK is not produced before its entries are on disk."""
    pool = ManualPool()
    node = member(tmp_path, reactor, "b", pool)
    node.rlog.promise(1, "a")
    pool.run_all()
    ack = answer(node.follower.prepare(prepare("a", 1, (0, 0), [entry(1, 1), entry(1, 2)], 0)))
    assert not ack.called and pool.jobs, "the WAL write is still queued"
    assert payloads(node, RecordType.ENTRY) == []
    pool.run_all()
    assert ack.reply() == {"ok": True, "index": 2, "promised": 1}
    assert [p[:2] for p in payloads(node, RecordType.ENTRY)] == [[1, 1], [1, 2]]


# Fails if: Follower._promise does not await `rlog.promise(epoch)` (fire and forget).
def test_rule1_newepoch_answer_waits_for_the_promise_fsync(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A NEWEPOCH answer is sent only once the promise of its epoch is on disk."""
    pool = ManualPool()
    node = member(tmp_path, reactor, "b", pool)
    vote = answer(node.follower.new_epoch(message("a", 3)))
    assert not vote.called
    assert recover(DataDir(str(tmp_path / "b"))).promised_epoch == 0
    pool.run_all()
    assert vote.get()["ok"] and vote.get()["promised"] == 3
    assert recover(DataDir(str(tmp_path / "b"))).promised_epoch == 3


# Fails if: Follower._prepare appends the entries before `await self._promise(epoch)`.
def test_rule1_prepare_with_a_higher_epoch_persists_the_promise_first(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """The promise of a PREPARE's newer epoch reaches the WAL before its entries and its ACK."""
    pool = ManualPool()
    node = member(tmp_path, reactor, "b", pool)
    node.rlog.promise(1)
    pool.run_all()
    ack = answer(node.follower.prepare(prepare("a", 2, (0, 0), [entry(2, 1)], 0)))
    while not ack.called:
        assert pool.jobs, "the ACK waits for the disk and nothing else"
        pool.run_one()
    assert ack.reply() == {"ok": True, "index": 1, "promised": 2}
    assert recover(DataDir(str(tmp_path / "b"))).promised_epoch == 2
    kinds = [(p[0], p[1]) for p in wal_payloads(str(tmp_path / "b"))]
    assert kinds.index((RecordType.PROMISE, 2)) < kinds.index((RecordType.ENTRY, 2))


# Fails if: Node.saw_epoch no longer calls step_down.
def test_rule1_promising_a_higher_epoch_stops_leading_and_pending_writes_answer_504(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A leader that promises a newer epoch stops at once; its pending writes get 504."""
    pool = ManualPool()
    node = member(tmp_path, reactor, "a", pool)
    link = FakeLink("b")
    lead(node, 1, 2, link, FakeLink("c"))
    pool.run_all()
    serve(node, link)
    write = submit(node, reactor, put("k"))
    pool.run_all()
    assert not write.called, "b has not acknowledged: the write is pending"
    vote = answer(node.follower.new_epoch(message("b", 2)))
    # At once: before the promise is even on disk.
    assert not vote.called
    assert write.called and write.failure is not None
    error = write.failure.value
    assert isinstance(error, OutcomeUnknown) and error.status == 504
    assert error.as_json()["error"]["outcome"] == "unknown"
    assert node.leader is None and node.role == Role.LOOKING
    pool.run_all()
    assert vote.get()["ok"]
    with pytest.raises(NotReady):
        node.submit([put("k2")])


# Fails if: FollowerStream._answered drops `self.leader.saw_higher_epoch(promised, ...)`.
def test_rule1_a_follower_reporting_a_higher_promise_stops_the_leader(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A refusal that carries a newer promise makes the leader step down; writes get 504."""
    node = member(tmp_path, reactor, "a")
    link = FakeLink("c")
    lead(node, 1, 2, link)
    serve(node, link)
    write = submit(node, reactor, put("k"))
    assert not write.called
    peers = Peers()
    peers.handlers["http://b"] = lambda name, body: {
        "ok": False, "reject": "stale epoch", "promised": 4}
    stream = stream_to(node, peers, "b")
    stream.start()
    assert peers.sent("prepare") == ["http://b"]
    assert node.leader is None
    assert write.failure is not None and isinstance(write.failure.value, OutcomeUnknown)


# Fails if: Follower._still_promised always returns None.
@pytest.mark.parametrize("kind", ["prepare", "newepoch"])
def test_rule1_vote_refused_if_the_promise_changed_meanwhile(
    tmp_path: Any, reactor: InlineReactor, kind: str
) -> None:
    """An answer is not a vote if a newer epoch was promised while its fsync ran."""
    pool = ManualPool()
    node = member(tmp_path, reactor, "b", pool)
    node.rlog.promise(1)
    pool.run_all()
    if kind == "prepare":
        vote = answer(node.follower.prepare(prepare("a", 1, (0, 0), [entry(1, 1)], 0)))
    else:
        vote = answer(node.follower.new_epoch(message("a", 2)))
    assert not vote.called
    # This node stands for election meanwhile: its own sync promises epoch 3.
    node.rlog.promise(3)
    pool.run_all()
    assert vote.reply() == {"ok": False, "reject": "promised a newer epoch meanwhile",
                          "promised": 3}


# Fails if: Leader.advance_commit counts `self._log.last_index` instead of `durable_index`.
def test_rule1_the_leader_counts_itself_only_after_its_own_fsync(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A follower's ACK alone does not commit what the leader has not fsynced itself."""
    pool = ManualPool()
    node = member(tmp_path, reactor, "a", pool)
    link = FakeLink("b")
    leader = lead(node, 1, 2, link)
    link.match_index = leader.marker_index  # the follower was faster than our disk
    leader.stream_answered(link)
    assert node.rlog.commit_index == 0
    pool.run_all()
    assert node.rlog.commit_index == leader.marker_index


# Fails if: synchronise does not await `rlog.promise(epoch)`.
def test_rule1_a_candidate_persists_its_promise_before_counting_itself(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """Sync does not finish (count the candidate itself) before its promise is durable."""
    pool = ManualPool()
    nodes = cluster(tmp_path, reactor)
    candidate = member(tmp_path / "slow", reactor, "a", pool)
    candidate.bootstrap_voters = dict(nodes["a"].bootstrap_voters)
    candidate.bootstrap_voters["a"] = candidate.identity.incarnation
    for other in ("b", "c"):  # this disk is the voter "a" now
        nodes[other].bootstrap_voters["a"] = candidate.identity.incarnation
    peers = Peers()
    peers.route_to(nodes["b"])
    peers.route_to(nodes["c"])
    synced = run_sync(candidate, 1, peers, 2)
    assert not synced.called
    pool.run_all()
    synced.get()
    assert recover(DataDir(str(tmp_path / "slow" / "a"))).promised_epoch == 1


# Fails if: Follower._prepare skips the `_still_promised` check right after `_promise`
# (a NACK has no fsync to wait for: that check is the one that covers it).
def test_rule1_a_nack_sent_after_a_newer_promise_is_not_a_read_confirmation(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A NACK counts as an answer at the leader's epoch only if the promise is still that."""
    pool = ManualPool()
    node = member(tmp_path, reactor, "a")
    follower = member(tmp_path, reactor, "b", pool)
    follower.rlog.promise(1)
    pool.run_all()
    node.bootstrap_voters["b"] = follower.identity.incarnation
    follower.bootstrap_voters["a"] = node.identity.incarnation
    link = FakeLink("c")
    leader = lead(node, 2, 2, link)
    serve(node, link)
    peers = Peers()
    peers.route_to(follower)
    stream_to(node, peers, "b")
    read = Answer(leader.read_index())  # forces a PREPARE(2) to b, which lacks its prev
    assert peers.sent("prepare") == ["http://b"] and not read.called
    follower.rlog.promise(3)  # b stands for election while its promise of 2 is written
    pool.run_all()
    assert follower.rlog.promised_epoch == 3
    assert not (read.called and read.failure is None), (
        f"read confirmed at index {read.value} by a node that promised epoch 3")


# Fails if: Follower._promise does not wait for an in-flight promise of `epoch`.
def test_rule1_newepoch_waits_for_a_promise_of_its_epoch_already_in_flight(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """The promise of the message's epoch is on disk before the answer, whoever wrote it."""
    pool = ManualPool()
    node = member(tmp_path, reactor, "b", pool)
    node.rlog.promise(5)  # what the coordinator does on reading ZooKeeper's epoch
    vote = answer(node.follower.new_epoch(message("a", 5)))
    assert not vote.called, "answered before the promise of epoch 5 is on disk"


# Rule 2: exact acknowledgements


def _stale_suffix(tmp_path: Any, reactor: InlineReactor) -> Node:
    """Follower b holding (1,1..5) from an old leader, nothing committed."""
    node = member(tmp_path, reactor, "b")
    ack = answer(node.follower.prepare(prepare(
        "a", 1, (0, 0), [entry(1, i) for i in range(1, 6)], 0)))
    assert ack.get()["index"] == 5
    return node


# Fails if: Follower._prepare sets `acknowledged = rlog.last_index`.
def test_rule2_ack_is_prev_plus_len_entries_not_the_last_index(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A follower holding more than it was sent acknowledges only what it was sent."""
    node = _stale_suffix(tmp_path, reactor)
    ack = answer(node.follower.prepare(prepare("c", 2, (1, 1), [entry(1, 2)], 0)))
    assert ack.reply() == {"ok": True, "index": 2, "promised": 2}
    assert node.rlog.last_index == 5


# Fails if: Follower._prepare advances its commit to `message["commit"]` without the min.
def test_rule2_follower_commit_is_min_of_leader_commit_and_ack(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """The leader's commit index does not commit the follower's own divergent entries."""
    node = _stale_suffix(tmp_path, reactor)
    # Leader c of epoch 2 committed its own entries 3 and 4 (not the ones b holds).
    ack = answer(node.follower.prepare(prepare("c", 2, (1, 1), [entry(1, 2)], 4)))
    assert ack.get()["index"] == 2
    assert node.rlog.commit_index == 2
    assert node.store.applied_index == 2 and node.store.get(b"k3") is None
    reactor.advance(LAZY_DELAY)  # commit marks need no fsync of their own
    assert payloads(node, RecordType.COMMIT) == [[2]]


# Fails if: Follower.append_missing truncates even where the held epoch matches
# (drop the `if held == entry.epoch: continue`).
def test_rule2_truncates_only_from_the_first_index_whose_epoch_differs(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """Entries that agree are kept; the divergent suffix goes, from its first index on."""
    node = member(tmp_path, reactor, "b")
    answer(node.follower.prepare(prepare(
        "a", 1, (0, 0), [entry(1, i) for i in range(1, 5)], 2))).get()
    ack = answer(node.follower.prepare(prepare(
        "c", 2, (0, 0), [entry(1, 1), entry(1, 2), entry(2, 3)], 2)))
    assert ack.reply() == {"ok": True, "index": 3, "promised": 2}
    assert epochs(node) == [1, 1, 2]
    assert payloads(node, RecordType.TRUNCATE) == [[3]]
    assert node.unavailable is None
    assert epochs(reopen(node, reactor)) == [1, 1, 2]


# Fails if: ReplicatedLog.truncate_from drops its `first_dropped <= self.commit_index` check.
def test_rule2_truncating_at_or_below_the_commit_index_is_fatal(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A PREPARE that would rewrite a committed entry stops the node; the log is untouched."""
    node = member(tmp_path, reactor, "b")
    answer(node.follower.prepare(prepare(
        "a", 1, (0, 0), [entry(1, i) for i in range(1, 4)], 2))).get()
    ack = answer(node.follower.prepare(prepare(
        "c", 2, (0, 0), [entry(1, 1), entry(2, 2), entry(2, 3)], 0)))
    assert ack.called and ack.failure is not None and ack.failure.check(FatalLogError)
    assert node.unavailable is not None and "refusing to corrupt" in node.unavailable
    assert epochs(node) == [1, 1, 1]
    assert payloads(node, RecordType.TRUNCATE) == []
    assert epochs(reopen(node, reactor)) == [1, 1, 1]


# Fails if: FollowerStream.wake sends while a message is in flight (drop the `_inflight` check).
def test_rule2_prepares_reach_a_follower_in_order_one_at_a_time(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """One message in flight per follower; what was appended meanwhile goes in the next."""
    node = member(tmp_path, reactor, "a")
    link = FakeLink("c")
    lead(node, 1, 2, link)
    serve(node, link)
    pending: list[Deferred[Any]] = []

    def held(name: str, body: dict[str, Any]) -> Deferred[Any]:
        pending.append(Deferred())
        return pending[-1]

    peers = Peers()
    peers.handlers["http://b"] = held
    stream = stream_to(node, peers, "b")
    stream.next_index = 1
    stream.start()
    submit(node, reactor, put("x"))
    submit(node, reactor, put("y"))
    assert len(peers.calls) == 1
    first = peers.calls[0][2]
    assert first["prev"] == [0, 0] and [e[1] for e in first["entries"]] == [1]
    pending[0].callback({"ok": True, "index": 1, "promised": 1})
    assert len(peers.calls) == 2
    second = peers.calls[1][2]
    assert second["prev"] == [1, 1] and [e[1] for e in second["entries"]] == [2, 3]


# Rule 3: commit by counting only in the current epoch


# Fails if: Leader.advance_commit loses both its `candidate < self.marker_index` and its
# `epoch_at(candidate) != self.epoch` guards (each alone is enough: they are redundant).
def test_rule3_older_epoch_entries_commit_only_through_the_marker(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """Entries of epoch 1 held by W voters stay uncommitted until epoch 2's marker is."""
    node = member(tmp_path, reactor, "a")
    give_log(node, [entry(1, 1), entry(1, 2)], commit=0, promised=1)
    link = FakeLink("b")
    leader = lead(node, 2, 2, link, FakeLink("c"))
    assert leader.marker_index == 3
    link.match_index = 2
    leader.stream_answered(link)
    assert node.rlog.commit_index == 0 and node.store.applied_index == 0
    link.match_index = 3
    leader.stream_answered(link)
    assert node.rlog.commit_index == 3 and node.store.applied_index == 3


# Rule 4: voters live in the log


# Fails if: Follower._refusal drops its `node_id not in voter_ids()` check.
def test_rule4_nodes_refuse_newepoch_and_prepare_from_a_non_voter(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A learner's NEWEPOCH or PREPARE changes nothing, not even the promise."""
    node = member(tmp_path, reactor, "b")
    vote = answer(node.follower.new_epoch(message("x", 5))).reply()
    ack = answer(node.follower.prepare(prepare("x", 5, (0, 0), [entry(5, 1)], 0))).reply()
    for reply in (vote, ack):
        assert reply == {"ok": False, "reject": "sender is not a voter", "promised": 0}
    assert node.rlog.promised_epoch == 0 and node.rlog.last_index == 0
    assert recover(DataDir(str(tmp_path / "b"))).promised_epoch == 0
    assert node.role == Role.LOOKING


# Fails if: Leader.advance_commit counts every link (drop `if link.voter`).
def test_rule4_the_leader_never_counts_a_non_voter(tmp_path: Any, reactor: InlineReactor) -> None:
    """A learner holding an entry does not make up a write quorum."""
    node = member(tmp_path, reactor, "a")
    voter, learner = FakeLink("b"), FakeLink("x", voter=False)
    leader = lead(node, 1, 2, voter, learner)
    learner.match_index = leader.marker_index
    leader.stream_answered(learner)
    assert node.rlog.commit_index == 0
    voter.match_index = leader.marker_index
    leader.stream_answered(voter)
    assert node.rlog.commit_index == leader.marker_index


# Fails if: Node.voters scans the log oldest entry first (drop `reversed`); also if the
# bootstrap voters take precedence over the log's.
def test_rule4_voters_are_the_newest_config_entry_of_the_log(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """The log's newest config decides who may lead, not an older one nor ZooKeeper's."""
    node = member(tmp_path, reactor, "c")
    me = node.identity.incarnation
    old = {"a": "ia", "b": "ib", "c": me}
    new = {"a": "ia", "c": me, "d": "id"}
    give_log(node, [config_entry(1, 1, old), entry(1, 2), config_entry(1, 3, new)],
             commit=3, promised=1)
    assert node.voters() == new and node.is_voter()
    refused = answer(node.follower.new_epoch(message("b", 2, "ib"))).get()
    assert refused["reject"] == "sender is not a voter"
    assert answer(node.follower.new_epoch(message("d", 2, "id"))).get()["ok"]


# Fails if: Node.voters keys its cache on (last_index, len(entries)) only.
def test_rule4_voters_follow_a_truncated_config_entry(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """When a new leader truncates an uncommitted config entry, its voters go with it."""
    node = member(tmp_path, reactor, "d")
    me = node.identity.incarnation
    old = {"a": "ia", "b": "ib", "c": "ic", "d": me, "e": "ie"}
    proposed = {"a": "ia", "b": "ib", "c": "ic", "d": me, "f": "if"}
    answer(node.follower.prepare(prepare(
        "a", 2, (0, 0), [config_entry(1, 1, old), config_entry(2, 2, proposed)], 1))).get()
    assert node.voters() == proposed
    # b leads epoch 3, elected by b, c and e (none holds entry 2): its marker replaces entry 2.
    ack = answer(node.follower.prepare(prepare("b", 3, (1, 1), [entry(3, 2)], 1, "ib"))).get()
    assert ack["ok"] and epochs(node) == [1, 3]
    assert node.voters() == old
    assert answer(node.follower.new_epoch(message("e", 4, "ie"))).get()["ok"]


# Rule 5: identity and forgetful disks


# Fails if: DataDir.identity reuses the requested id as the incarnation
# (`Identity(requested_id or ..., requested_id or uuid.uuid4().hex, fresh)`).
def test_rule5_explicit_node_id_on_a_wiped_data_dir_is_a_new_incarnation(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """Same --node-id, new disk: a new incarnation, hence a learner."""
    path = str(tmp_path / "n1")
    before = DataDir(path)
    before.create()
    first = before.identity("n1")
    assert first.fresh
    assert before.identity("n1") == Identity("n1", first.incarnation, fresh=False)
    shutil.rmtree(path)
    after = DataDir(path)
    after.create()
    second = after.identity("n1")
    assert second.node_id == "n1" and second.fresh
    assert second.incarnation != first.incarnation
    node = open_member(path, reactor, "n1")
    node.bootstrap_voters = {"n1": first.incarnation, "b": "ib", "c": "ic"}
    assert node.node_id == "n1" and not node.is_voter()


def _torn_member(tmp_path: Any, reactor: InlineReactor, node_id: str) -> Node:
    """Voter ``node_id`` holding (1,1..2), restarted after dropping a torn WAL tail."""
    node = member(tmp_path, reactor, node_id)
    give_log(node, [entry(1, 1), entry(1, 2)], commit=1, promised=1)
    assert node.data_dir is not None
    data_dir = node.data_dir
    with open(data_dir.segment_path(data_dir.segment_names()[-1]), "ab") as f:
        f.write(b"\x30\x00\x00\x00torn")
    node = reopen(node, reactor)
    assert node.torn_unacked
    return node


# Fails if: synchronise counts torn answers (drop `and not reply.get("torn")`).
def test_rule5_a_node_that_dropped_a_torn_tail_is_not_counted_in_r(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """Its NEWEPOCH answer says torn and sync does not count it until it acknowledged entries."""
    nodes = cluster(tmp_path, reactor)
    torn = _torn_member(tmp_path / "torn", reactor, "b")
    torn.bootstrap_voters = dict(nodes["a"].bootstrap_voters)
    torn.bootstrap_voters["b"] = torn.identity.incarnation
    nodes["a"].bootstrap_voters["b"] = torn.identity.incarnation  # this disk is the voter b
    vote = answer(torn.follower.new_epoch(
        message("c", 2, nodes["c"].identity.incarnation))).get()
    assert vote["ok"] and vote["torn"] is True
    peers = Peers()
    peers.route_to(torn)  # c is down: a and the torn b would make R = 2
    with pytest.raises(SyncFailed):
        run_sync(nodes["a"], 3, peers, 2).get()
    # Once it acknowledged entries from a leader it counts again.
    ack = answer(torn.follower.prepare(prepare("a", 3, (1, 2), [entry(3, 3)], 0,
                                               nodes["a"].identity.incarnation))).get()
    assert ack["ok"] and not torn.torn_unacked
    run_sync(nodes["a"], 4, peers, 2).get()


# Fails if: synchronise counts the candidate itself even when torn (drop
# `if not node.torn_unacked`).
def test_rule5_a_torn_candidate_does_not_count_itself(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A candidate that dropped a torn tail needs R other answers."""
    nodes = cluster(tmp_path, reactor)
    candidate = _torn_member(tmp_path / "torn", reactor, "a")
    candidate.bootstrap_voters = dict(nodes["b"].bootstrap_voters)
    candidate.bootstrap_voters["a"] = candidate.identity.incarnation
    for other in ("b", "c"):  # this disk is the voter "a" now
        nodes[other].bootstrap_voters["a"] = candidate.identity.incarnation
    peers = Peers()
    peers.route_to(nodes["b"])
    with pytest.raises(SyncFailed):
        run_sync(candidate, 2, peers, 2).get()
    peers.route_to(nodes["c"])
    run_sync(candidate, 3, peers, 2).get()


# Fails if: synchronise no longer raises LostCommits.
def test_rule5_a_commit_index_beyond_the_adopted_log_stops_the_candidate(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A voter that says index 5 committed, when the best log ends at 3: stop loudly."""
    node = member(tmp_path, reactor, "a")
    give_log(node, [entry(1, i) for i in range(1, 4)], commit=1, promised=1)
    peers = Peers()
    peers.handlers["http://b"] = lambda name, body: {
        "ok": True, "promised": body["epoch"], "last": [1, 3], "commit_index": 5,
        "torn": False, "incarnation": OTHER_DISK}
    with pytest.raises(LostCommits):
        run_sync(node, 2, peers, 2).get()


# Fails if: synchronise does not raise HigherEpoch (or compares with `>` instead of `>=`).
@pytest.mark.parametrize("promised", [4, 5])
def test_rule5_a_voter_promised_at_or_above_our_epoch_means_a_higher_epoch(
    tmp_path: Any, reactor: InlineReactor, promised: int
) -> None:
    """Sync with enough other answers still stops when one voter has promised as much."""
    nodes = cluster(tmp_path, reactor)
    peers = Peers()
    peers.route_to(nodes["c"])
    peers.handlers["http://b"] = lambda name, body: {
        "ok": False, "reject": "stale epoch", "promised": promised}
    with pytest.raises(HigherEpoch) as raised:
        run_sync(nodes["a"], 4, peers, 2).get()
    assert raised.value.epoch == promised


# Fails if: Follower._refusal's stale-epoch refusal omits "promised".
def test_rule5_rejections_carry_the_promised_epoch(tmp_path: Any, reactor: InlineReactor) -> None:
    """A real voter's refusal tells the candidate how far to bump the epoch."""
    nodes = cluster(tmp_path, reactor)
    nodes["b"].rlog.promise(7)
    assert answer(nodes["b"].follower.prepare(prepare("a", 3, (0, 0), [], 0))).reply() == {
        "ok": False, "reject": "stale epoch", "promised": 7}
    peers = Peers()
    peers.route_to(nodes["b"])
    peers.route_to(nodes["c"])
    with pytest.raises(HigherEpoch) as raised:
        run_sync(nodes["a"], 3, peers, 2).get()
    assert raised.value.epoch == 7


# Fails if: ReplicatedLog.promise (or truncate_from) drops `force_sync=True`.
def test_rule5_promises_and_truncations_are_fsynced_even_with_fsync_none(
    tmp_path: Any, reactor: InlineReactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--fsync none skips the fdatasync of entries only."""
    synced: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(fd), real(fd))[1])
    node = member(tmp_path, reactor, "b", fsync=False)
    node.rlog.append([entry(1, 1), entry(1, 2)])
    assert synced == []
    node.rlog.promise(2)
    assert len(synced) == 1
    node.rlog.truncate_from(2)
    assert len(synced) == 2


# Fails if: synchronise drops the commit index of torn answers.
def test_rule5_a_torn_voters_commit_index_still_counts_for_lost_commits(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """Torn or not, a durable commit mark of 5 proves index 5 was committed."""
    nodes = cluster(tmp_path, reactor)
    give_log(nodes["a"], [entry(1, i) for i in range(1, 4)], commit=1, promised=1)
    give_log(nodes["c"], [entry(1, i) for i in range(1, 4)], commit=1, promised=1)
    give_log(nodes["b"], [entry(1, i) for i in range(1, 6)], commit=5, promised=1)
    nodes["b"].data_dir.mark_torn_tail()
    nodes["b"].torn_unacked = True
    peers = Peers()
    peers.route_to(nodes["b"])
    peers.route_to(nodes["c"])
    with pytest.raises(LostCommits):
        run_sync(nodes["a"], 2, peers, 2).get()


# Rule 6: restart


# Fails if: recover_store applies every recovered entry (drop the commit-mark `break`).
def test_rule6_restart_applies_only_up_to_the_last_persisted_commit_mark(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """The log comes back whole; the store only as far as the commit mark."""
    node = member(tmp_path, reactor, "b")
    answer(node.follower.prepare(prepare(
        "a", 1, (0, 0), [entry(1, i) for i in range(1, 5)], 2))).get()
    reactor.advance(LAZY_DELAY)  # commit marks ride with the next write, or follow shortly
    node = reopen(node, reactor)
    assert node.rlog.last == (1, 4)
    assert node.rlog.commit_index == 2 and node.store.applied_index == 2
    assert node.store.get(b"k2") is not None and node.store.get(b"k3") is None


# Rule 7: sync details


def _divergent_cluster(tmp_path: Any, reactor: InlineReactor) -> dict[str, Node]:
    """a: (1,1)(1,2)(2,3); b: ...(3,3)(3,4); c: (1,1..5). Index 2 committed everywhere."""
    nodes = cluster(tmp_path, reactor)
    common = [entry(1, 1), entry(1, 2)]
    give_log(nodes["a"], [*common, entry(2, 3)], commit=2, promised=2)
    give_log(nodes["b"], [*common, entry(3, 3), entry(3, 4)], commit=2, promised=3)
    give_log(nodes["c"], [*common, entry(1, 3), entry(1, 4), entry(1, 5)], commit=2,
             promised=1)
    return nodes


# Fails if: synchronise picks the best log by last index alone
# (`key=lambda v: answers[v]["last"][1]`).
def test_rule7_sync_adopts_the_log_with_the_highest_last_epoch_then_index(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """b's (3,4) beats c's longer (1,5); the candidate's own (2,3) is truncated."""
    nodes = _divergent_cluster(tmp_path, reactor)
    peers = Peers()
    peers.route_to(nodes["b"])
    peers.route_to(nodes["c"])
    run_sync(nodes["a"], 4, peers, 3).get()
    assert peers.sent("fetch") == ["http://b"]
    assert nodes["a"].rlog.last == (3, 4) and epochs(nodes["a"]) == [1, 1, 3, 3]
    assert payloads(nodes["a"], RecordType.TRUNCATE) == [[3]]
    assert epochs(reopen(nodes["a"], reactor)) == [1, 1, 3, 3]


# Fails if: Follower.append_missing skips `rlog.truncate_from(entry.index)` (sync then fails).
def test_rule7_the_candidate_truncates_its_own_longer_divergent_suffix(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A candidate whose own uncommitted tail is longer than the adopted log loses all of it."""
    nodes = cluster(tmp_path, reactor)
    common = [entry(1, 1), entry(1, 2)]
    give_log(nodes["a"], [*common, entry(2, 3), entry(2, 4), entry(2, 5)], commit=2,
             promised=2)
    give_log(nodes["b"], [*common, entry(3, 3)], commit=2, promised=3)
    peers = Peers()
    peers.route_to(nodes["b"])
    run_sync(nodes["a"], 4, peers, 2).get()
    assert nodes["a"].rlog.last == (3, 3) and epochs(nodes["a"]) == [1, 1, 3]
    assert epochs(reopen(nodes["a"], reactor)) == [1, 1, 3]


# Fails if: synchronise sends NEWEPOCH to the members it has URLs for
# (`others = [v for v in urls if v != node.node_id]`).
def test_rule7_newepoch_goes_to_every_voter_of_the_log_and_no_one_else(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """members/ only supplies URLs: a learner with a URL is not asked, a log voter is."""
    node = member(tmp_path, reactor, "a")
    voters = {"a": node.identity.incarnation, "b": "ib", "d": "id"}
    give_log(node, [config_entry(1, 1, voters)], commit=1, promised=1)
    peers = Peers()
    urls = {v: f"http://{v}" for v in ("a", "b", "c", "d", "x")}
    for url in urls.values():
        peers.handlers[url] = lambda name, body, url=url: {
            "ok": True, "promised": body["epoch"], "last": [1, 1], "commit_index": 1,
            "torn": False, "incarnation": "i" + url[-1]}
    run_sync(node, 2, peers, 2, urls).get()
    assert sorted(peers.sent("newepoch")) == ["http://b", "http://d"]


# Fails if: _fetch_log fetches once (`while rlog.last < target` -> `if ...`).
def test_rule7_a_fetch_that_fails_midway_fails_the_sync(
    tmp_path: Any, reactor: InlineReactor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner of the adopted log dying mid-fetch fails sync (it is run again)."""
    monkeypatch.setattr(follower_module, "FETCH_LIMIT", 1)
    nodes = _divergent_cluster(tmp_path, reactor)
    peers = Peers()
    peers.route_to(nodes["b"])
    peers.route_to(nodes["c"])
    real = peers.handlers["http://b"]

    def dies_after_one_fetch(name: str, body: dict[str, Any]) -> Any:
        if name == "fetch" and peers.sent("fetch").count("http://b") > 1:
            return fail(ConnectionLost("b died"))
        return real(name, body)

    peers.handlers["http://b"] = dies_after_one_fetch
    synced = run_sync(nodes["a"], 4, peers, 3)
    assert synced.called and synced.failure is not None
    assert synced.failure.check(ConnectionLost)
    assert nodes["a"].rlog.last == (3, 3), "one entry fetched, then b died"


# Rule 8: answers that depend on pending state


# Fails if: Node.submit answers a compare that fails against the applied store at once
# (insert `if (f := self.store._check_prev(commands[0]["k"], commands[0])): return succeed([f])`).
def test_rule8_a_failed_compare_is_answered_only_once_its_entry_commits(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """The 409 of a CAS waits for the commit of the entry it was evaluated in, in log order."""
    node = member(tmp_path, reactor, "a")
    link = FakeLink("b")
    lead(node, 1, 2, link)
    leader = serve(node, link)
    write = submit(node, reactor, put("k", "1", "w1"))
    mismatch = submit(node, reactor, put("k", "2", "cas1", prev=7))
    must_not_exist = submit(node, reactor, put("k", "3", "cas2", prev=0))
    assert not (write.called or mismatch.called or must_not_exist.called)
    link.match_index = node.rlog.last_index
    leader.stream_answered(link)
    assert write.get() == [{"ok": True, "revision": 1}]
    assert mismatch.get()[0]["error"] == "conflict"
    # Evaluated after the pending put, not against the store as it was on arrival.
    assert must_not_exist.get()[0] == {"ok": False, "error": "conflict", "revision": 1,
                                       "current_revision": 1}


# Rule 9: idempotent retries


# Fails if: Store._apply_one ignores the remembered result of a request id.
def test_rule9_a_retried_request_id_returns_the_first_result_and_applies_once(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A retried CAS gets its first answer (not a conflict), also after a restart."""
    path = str(tmp_path / "standalone")
    node = open_inline_node(path, reactor)
    cas = put("k", "v", "req-1", prev=0)
    first = submit(node, reactor, cas).get()
    assert first == [{"ok": True, "revision": 1}]
    assert submit(node, reactor, cas).get() == first
    kv = node.store.get(b"k")
    assert kv is not None and kv.version == 1 and node.store.revision == 1
    assert submit(node, reactor, put("k", "v", "req-2", prev=0)).get()[0]["error"] == "conflict"
    node.rlog._writer.close()
    node = open_inline_node(path, reactor)
    assert submit(node, reactor, cas).get() == first
    kv = node.store.get(b"k")
    assert kv is not None and kv.version == 1
    node.rlog._writer.close()


# Fails if: Store.from_snapshot starts with an empty request window.
def test_rule9_the_request_window_travels_in_snapshots(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A follower that installed a snapshot answers a retry with the first result."""
    entries = [entry(1, 1, put("k", "v", "req-1", prev=0)), entry(1, 2)]
    leader_store, data = snapshot_of(entries)
    node = member(tmp_path, reactor, "b")
    assert install(node, "a", 1, entries[-1], data).get()["ok"]
    assert node.store.result_for("req-1") == {"ok": True, "revision": 1}
    retry = node.store.apply(3, [put("k", "v", "req-1", prev=0)])
    assert retry == [{"ok": True, "revision": 1}]
    assert node.store.digest() == leader_store.digest()


# Fails if: Node._forward answers NotReady (503) for a forward that failed after sending.
def test_rule9_a_forward_that_fails_after_it_was_sent_answers_504(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """Only a forward that certainly did not reach the leader is a 503."""
    node = member(tmp_path, reactor, "b")
    answer(node.follower.prepare(prepare("a", 1, (0, 0), [], 0))).get()
    assert node.role == Role.FOLLOWER
    peers = Peers()
    node.peer = peers  # type: ignore[assignment]
    peers.handlers["http://a"] = lambda name, body: fail(ConnectionLost("reset"))
    lost = Answer(node.submit([put("k")]))
    assert lost.failure is not None and isinstance(lost.failure.value, OutcomeUnknown)
    assert lost.failure.value.status == 504
    peers.handlers["http://a"] = lambda name, body: fail(NotDelivered("refused"))
    refused = Answer(node.submit([put("k")]))
    assert refused.failure is not None and isinstance(refused.failure.value, NotReady)


# Rule 10: read-index batching


def _reading_leader(tmp_path: Any, reactor: InlineReactor) -> tuple[Node, Leader, FakeLink]:
    node = member(tmp_path, reactor, "a")
    b, c = FakeLink("b"), FakeLink("c")
    leader = lead(node, 1, 2, b, c)
    serve(node, b)
    return node, leader, b


def _answer(leader: Leader, link: FakeLink, sent: bool = True) -> None:
    """``link`` sends its next message (if ``sent``) and the follower answers it."""
    if sent:
        link.sent_seq += 1
    link.confirmed_seq = link.sent_seq
    link.last_ok = 1.0
    leader.stream_answered(link)


# Fails if: Leader.read_index lets a read join the round in flight
# (`(self._round.reads if self._round else self._pending_reads).append(d)`).
def test_rule10_a_read_arriving_during_a_round_waits_for_the_next(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A write acknowledged before the read arrived is always visible to it."""
    node, leader, b = _reading_leader(tmp_path, reactor)
    first = Answer(leader.read_index())
    noted = node.rlog.commit_index
    write = submit(node, reactor, put("k"))
    b.match_index = node.rlog.last_index
    leader.advance_commit()
    assert write.get()[0]["ok"]
    second = Answer(leader.read_index())
    _answer(leader, b)
    assert first.get() == noted
    assert not second.called, "the round in flight noted its index before this read came"
    _answer(leader, b)
    assert second.get() == node.rlog.commit_index > noted


# Fails if: Leader._start_round's threshold is `link.sent_seq` instead of `sent_seq + 1`.
def test_rule10_an_answer_to_a_message_sent_before_the_read_does_not_confirm_it(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """Only answers to messages sent after the commit index was noted count."""
    node, leader, b = _reading_leader(tmp_path, reactor)
    b.sent_seq, b.confirmed_seq = 5, 4  # message 5 is in flight
    forced = b.forced
    read = Answer(leader.read_index())
    assert b.forced == forced + 1, "the round asks for a fresh message"
    _answer(leader, b, sent=False)  # the answer to message 5
    assert not read.called
    _answer(leader, b)  # message 6, sent after the read
    assert read.get() == node.rlog.commit_index


# Fails if: Leader.stop no longer fails the reads of the round in flight.
def test_rule10_reads_in_flight_fail_when_the_leader_steps_down(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A round that cannot finish does not leave its reads hanging or answer them."""
    node, leader, _ = _reading_leader(tmp_path, reactor)
    read = Answer(leader.read_index())
    node.step_down("lost the ZooKeeper session")
    assert read.failure is not None and read.failure.check(NotLeading)


# Rule 11: snapshot install


# Fails if: Follower._install_snapshot skips `snapshot.write_raw` (the file).
def test_rule11_install_writes_the_snapshot_file_and_a_wal_record(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """The snapshot is a file and a WAL record; a restart recovers from it."""
    entries = [entry(1, i) for i in range(1, 6)]
    leader_store, data = snapshot_of(entries)
    node = member(tmp_path, reactor, "b")
    assert install(node, "a", 1, entries[-1], data).reply() == {
        "ok": True, "index": 5, "promised": 1}
    assert node.data_dir is not None
    assert node.data_dir.snapshot_indexes() == [5]
    with open(node.data_dir.snapshot_path(5), "rb") as f:
        assert f.read() == data
    assert payloads(node, RecordType.SNAPSHOT) == [[1, 5]]
    assert node.store.digest() == leader_store.digest()
    node = reopen(node, reactor)
    assert (node.rlog.base_epoch, node.rlog.base_index) == (1, 5)
    assert node.store.applied_index == 5 and node.store.digest() == leader_store.digest()
    ack = answer(node.follower.prepare(prepare("a", 1, (1, 5), [entry(1, 6)], 6))).reply()
    assert ack == {"ok": True, "index": 6, "promised": 1} and node.store.applied_index == 6


# Fails if: ReplicatedLog.install_snapshot always drops the entries it holds after the
# snapshot (`kept = []`).
def test_rule11_entries_after_the_snapshot_that_agree_are_kept(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A follower that holds (1,6) and (1,7) keeps them across the install and a restart."""
    entries = [entry(1, i) for i in range(1, 8)]
    node = member(tmp_path, reactor, "b")
    answer(node.follower.prepare(prepare("a", 1, (0, 0), entries, 2))).get()
    _, data = snapshot_of(entries[:5])
    assert install(node, "a", 1, entries[4], data).get()["ok"]
    assert node.rlog.last == (1, 7) and node.rlog.base_index == 5
    assert node.store.applied_index == 5
    restarted = reopen(node, reactor)
    assert restarted.rlog.last == (1, 7)
    assert [e.index for e in restarted.rlog.entries] == [6, 7]


# Fails if: ReplicatedLog.install_snapshot does not write the truncate record of a
# divergent suffix (drop `records.append(record.truncate(index + 1))`).
def test_rule11_divergent_entries_are_not_resurrected_by_a_restart(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """Entries of a deposed leader beyond the snapshot stay gone after a restart."""
    node = member(tmp_path, reactor, "b")
    held = [entry(1, 1), entry(1, 2), entry(1, 3), entry(2, 4), entry(2, 5), entry(2, 6)]
    answer(node.follower.prepare(prepare("a", 2, (0, 0), held, 3))).get()
    leaders = [entry(1, 1), entry(1, 2), entry(1, 3), entry(3, 4), entry(3, 5)]
    leader_store, data = snapshot_of(leaders)
    assert install(node, "c", 3, leaders[-1], data).get()["ok"]
    assert node.rlog.last == (3, 5) and node.rlog.entries == []
    restarted = reopen(node, reactor)
    assert restarted.rlog.last == (3, 5) and restarted.rlog.entries == []
    assert restarted.store.digest() == leader_store.digest()


# Fails if: Follower.prepare does not take the lock (`return self._prepare(message)`).
def test_rule11_a_prepare_waits_for_the_snapshot_install_in_progress(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A PREPARE that arrives during an install is answered only once its record is durable."""
    pool = ManualPool()
    node = member(tmp_path, reactor, "b", pool)
    node.rlog.promise(1)
    pool.run_all()
    entries = [entry(1, i) for i in range(1, 6)]
    _, data = snapshot_of(entries)
    installed = install(node, "a", 1, entries[-1], data)
    heartbeat = answer(node.follower.prepare(prepare("a", 1, (1, 5), [], 5)))
    assert not installed.called and not heartbeat.called
    pool.run_all()
    assert installed.get()["ok"]
    assert heartbeat.reply() == {"ok": True, "index": 5, "promised": 1}


# Fails if: the commit index after a restart may be below the snapshot base.
def test_rule11_a_node_restarted_after_an_install_can_still_adopt_a_log(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """Entries up to the installed snapshot are committed, before and after a restart."""
    nodes = cluster(tmp_path, reactor)
    entries = [entry(1, i) for i in range(1, 6)]
    give_log(nodes["b"], [*entries, entry(1, 6)], commit=5, promised=1)
    _, data = snapshot_of(entries)
    assert install(nodes["a"], "b", 1, entries[-1], data,
                   nodes["b"].identity.incarnation).get()["ok"]
    assert nodes["a"].rlog.commit_index == 5
    candidate = reopen(nodes["a"], reactor)
    peers = Peers()
    peers.route_to(nodes["b"])
    synced = run_sync(candidate, 2, peers, 2)
    assert synced.called and synced.failure is None, synced.failure
    assert candidate.rlog.last == (1, 6)
    assert candidate.rlog.commit_index >= candidate.rlog.base_index == 5


# Rule 12: TTL


# Fails if: expire_command drops its `"prev": mod_revision` (an unconditional delete).
def test_rule12_expiry_is_a_delete_if_unchanged_evaluated_at_its_log_position(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A TTL firing while a newer put is pending deletes nothing: the put comes first in the log."""
    node = member(tmp_path, reactor, "a")
    link = FakeLink("b")
    lead(node, 1, 2, link)
    leader = serve(node, link)
    first = submit(node, reactor, put_command(b"k", b"v1", "w1", ttl=3))
    link.match_index = node.rlog.last_index
    leader.stream_answered(link)
    revision = first.get()[0]["revision"]
    newer = submit(node, reactor, put("k", "v2", "w2"))  # proposed, not committed
    reactor.advance(3)
    assert node.rlog.entries[-1].commands == [expire_command(b"k", revision)]
    assert node.store.get(b"k") is not None, "nothing expires before the log says so"
    link.match_index = node.rlog.last_index
    leader.stream_answered(link)
    assert newer.get()[0]["ok"]
    kv = node.store.get(b"k")
    assert kv is not None and kv.value == b"v2"


# Fails if: ExpiryScheduler.start does not arm the TTLs of the keys it finds in the store.
def test_rule12_a_new_leader_rearms_ttls_for_their_full_duration_on_its_own_clock(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """Time spent as a follower does not count: the new leader waits the whole TTL."""
    node = member(tmp_path, reactor, "b")
    ttl_put = entry(1, 1, put_command(b"k", b"v", "w1", ttl=10))
    answer(node.follower.prepare(prepare("a", 1, (0, 0), [ttl_put], 1))).get()
    reactor.advance(8)
    assert node.rlog.last_index == 1, "a follower never expires keys itself"
    link = FakeLink("c")
    lead(node, 2, 2, link)
    serve(node, link)
    marker = node.rlog.last_index
    reactor.advance(9)
    assert node.rlog.last_index == marker
    reactor.advance(1)
    assert node.rlog.last_index == marker + 1
    assert node.rlog.entries[-1].commands == [expire_command(b"k", 1)]


# Rule 13: liveness


# Fails if: Leader.quorum_seen_since counts learners too (drop `if link.voter`).
def test_rule13_quorum_seen_since_is_the_wth_most_recent_voter_answer(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """The leader has had W acknowledgements as of the W-th freshest voter answer."""
    node = member(tmp_path, reactor, "a")
    b, c, d, learner = (FakeLink("b"), FakeLink("c"), FakeLink("d"),
                        FakeLink("x", voter=False))
    leader = lead(node, 1, 2, b, c, d, learner)
    b.last_ok, c.last_ok, d.last_ok, learner.last_ok = 10.0, 30.0, 20.0, 1e12
    assert leader.quorum_seen_since() == 30.0
    leader.write_quorum = 3
    assert leader.quorum_seen_since() == 20.0
    leader.write_quorum = 5
    assert leader.quorum_seen_since() == 0.0, "fewer voters than W: never had a quorum"


# Fails if: Node.step_down fails pending writes with NotReady (503) instead of OutcomeUnknown.
def test_rule13_stepping_down_answers_writes_in_flight_504(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """On SUSPENDED or LOST the leader steps down: every write in flight gets 504."""
    node = member(tmp_path, reactor, "a")
    link = FakeLink("b")
    lead(node, 1, 2, link)
    serve(node, link)
    proposed = submit(node, reactor, put("proposed"))
    queued = Answer(node.submit([put("queued")]))  # not even batched yet
    node.step_down("ZooKeeper session SUSPENDED")
    for write in (queued, proposed):
        assert write.failure is not None and isinstance(write.failure.value, OutcomeUnknown)
    assert link.stopped


# Findings of the protocol review: one test per finding, under the rule it breaks.


# Rule 5: every vote carries the voter's incarnation


def _wiped(tmp_path: Any, reactor: InlineReactor, nodes: dict[str, Node], node_id: str) -> Node:
    """Voter ``node_id`` restarted on an empty data dir under its old id (a new disk)."""
    wiped = open_member(str(tmp_path / f"{node_id}-wiped"), reactor, node_id)
    wiped.bootstrap_voters = dict(nodes["a"].bootstrap_voters)
    assert not wiped.is_voter()
    return wiped


# Fails if: synchronise counts a NEWEPOCH answer whatever its incarnation (drop the
# `reply.get("incarnation") != voters[voter]` branch).
def test_rule5_sync_does_not_count_an_answer_from_another_disk_of_a_voter(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """Committed (1,1..3) on a and b; b's disk wiped; a down: c must not sync with b."""
    nodes = cluster(tmp_path, reactor)
    peers = Peers()
    peers.handlers["http://b"] = lambda name, body: {
        "ok": True, "promised": body["epoch"], "last": [0, 0], "commit_index": 0,
        "torn": False, "incarnation": "a-new-disk"}
    with pytest.raises(SyncFailed):
        run_sync(nodes["c"], 2, peers, 2).get()
    assert nodes["c"].rlog.last_index == 0, "no marker of epoch 2 over the committed entries"


# Fails if: Follower._new_epoch drops its `if not self.node.is_voter()` refusal.
def test_rule5_a_voter_id_on_a_new_disk_never_answers_newepoch_as_a_voter(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    nodes = cluster(tmp_path, reactor)
    wiped = _wiped(tmp_path, reactor, nodes, "b")
    vote = answer(wiped.follower.new_epoch(
        message("c", 2, nodes["c"].identity.incarnation))).reply()
    assert not vote["ok"] and vote["reject"] == "this node is not a voter of its log"
    peers = Peers()
    peers.route_to(wiped)
    with pytest.raises(SyncFailed):
        run_sync(nodes["c"], 3, peers, 2).get()


# Fails if: FollowerStream.voter ignores the incarnation of the answer
# (`return self.incarnation is not None`).
def test_rule5_the_leader_does_not_count_acks_from_another_disk_of_a_voter(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    nodes = cluster(tmp_path, reactor)
    wiped = _wiped(tmp_path, reactor, nodes, "b")
    wiped.bootstrap_voters["a"] = nodes["a"].identity.incarnation
    leader = lead(nodes["a"], 1, 2)
    peers = Peers()
    peers.route_to(wiped)
    stream = stream_to(nodes["a"], peers, "b")
    stream.start()
    assert peers.sent("prepare") and stream.match_index == leader.marker_index
    assert nodes["a"].rlog.commit_index == 0, "b's new disk acknowledged, b's old one did not"
    assert not stream.voter


# Rule 4: nodes refuse messages from a voter id on another disk


# Fails if: Follower._refusal skips the incarnation (`voters[sender] != message.get(...)`
# check dropped).
def test_rule4_a_prepare_from_a_voter_id_with_another_incarnation_is_refused(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    nodes = cluster(tmp_path, reactor)
    reply = answer(nodes["b"].follower.prepare(
        prepare("a", 2, (0, 0), [entry(2, 1)], 1, incarnation="a-new-disk"))).reply()
    assert reply == {"ok": False, "reject": "sender is not a voter", "promised": 0}
    assert nodes["b"].rlog.last_index == 0 and nodes["b"].rlog.promised_epoch == 0
    assert nodes["b"].role == Role.LOOKING


# Rule 1: a node that promised a newer epoch stops syncing or leading


# Fails if: synchronise skips `_still_candidate` after the NEWEPOCH round.
def test_rule1_a_candidate_that_promised_a_newer_epoch_during_sync_stops(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """Syncing epoch 5, a promises 6 to c meanwhile: its sync of 5 ends there."""
    nodes = cluster(tmp_path, reactor)
    candidate = nodes["a"]
    give_log(nodes["b"], [entry(1, 1), entry(1, 2)], promised=1)  # more than a holds
    peers = Peers()

    def b_answers(name: str, body: dict[str, Any]) -> Any:
        # While b answers, c's NEWEPOCH(6) reaches a.
        answer(candidate.follower.new_epoch(message("c", 6, nodes["c"].identity.incarnation)))
        return Deferred.fromCoroutine(nodes["b"].follower.new_epoch(body))

    peers.handlers["http://b"] = b_answers
    with pytest.raises(HigherEpoch):
        run_sync(candidate, 5, peers, 2).get()
    assert candidate.rlog.promised_epoch == 6 and candidate.rlog.last_index == 0
    assert peers.sent("fetch") == [], "went on to adopt b's log for epoch 5"


# Fails if: Node.lead skips `self._check_promised(epoch)`.
def test_rule1_a_node_that_promised_a_newer_epoch_does_not_start_leading(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    node = member(tmp_path, reactor, "a")
    node.rlog.promise(5, "a")
    node.syncing(5)
    node.rlog.promise(6, "b")  # written by a path that has not told the node yet
    with pytest.raises(node_module.Superseded):
        node.lead(5, 2, [])
    assert node.leader is None and node.rlog.last_index == 0


# Fails if: Leader.advance_commit drops its `promised_epoch != self.epoch` check.
def test_rule1_a_leader_that_promised_a_newer_epoch_commits_nothing_more(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """Even the marker: counted at epoch 5 it could overwrite what epoch 6 committed."""
    node = member(tmp_path, reactor, "a")
    link = FakeLink("b")
    leader = lead(node, 5, 2, link)
    node.rlog.promise(6, "c")  # written by a path that has not told the node yet
    link.match_index = leader.marker_index
    leader.stream_answered(link)
    assert node.rlog.commit_index == 0


# Fails if: Follower._install_snapshot drops its last `_still_promised` check.
def test_rule1_a_snapshot_install_is_not_acknowledged_after_a_newer_promise(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    entries = [entry(1, i) for i in range(1, 4)]
    _, data = snapshot_of(entries)
    pool = ManualPool()
    node = member(tmp_path, reactor, "b", pool)
    installed = install(node, "a", 1, entries[-1], data)
    pool.run_one()  # the promise of epoch 1
    assert not installed.called
    node.rlog.promise(2, "c")  # b promises epoch 2 while the snapshot is written
    pool.run_all()
    assert installed.reply() == {"ok": False, "reject": "promised a newer epoch meanwhile",
                                 "promised": 2}


# Rule 15: one leader per epoch


# Fails if: Follower._refusal drops the `rlog.promised_leader not in ("", sender)` check.
def test_rule15_an_epoch_promised_to_one_leader_is_refused_to_another(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """ZooKeeper's data was restored from a backup: a and c both took epoch 5."""
    node = member(tmp_path, reactor, "b")
    assert answer(node.follower.new_epoch(message("a", 5))).get()["ok"]
    for reply in (answer(node.follower.new_epoch(message("c", 5))).reply(),
                  answer(node.follower.prepare(prepare("c", 5, (0, 0), [entry(5, 1)],
                                                       0))).reply()):
        assert reply == {"ok": False, "reject": "epoch 5 was promised to another leader",
                         "promised": 5}
    assert node.rlog.last_index == 0
    assert answer(node.follower.prepare(prepare("a", 5, (0, 0), [entry(5, 1)], 0))).get()["ok"]


# Fails if: recovery ignores the leader of a PROMISE record (`leader = ""`).
def test_rule15_the_leader_of_a_promise_survives_a_restart(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    node = member(tmp_path, reactor, "b")
    answer(node.follower.new_epoch(message("a", 5))).get()
    node = reopen(node, reactor)
    assert (node.rlog.promised_epoch, node.rlog.promised_leader) == (5, "a")
    assert not answer(node.follower.new_epoch(message("c", 5))).get()["ok"]


# Fails if: the promise made at start from ZooKeeper's epoch binds a leader (then the
# first candidate of that epoch would be refused).
def test_rule15_a_promise_read_from_zookeeper_binds_the_first_leader_that_comes(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    node = member(tmp_path, reactor, "b")
    node.rlog.promise(5)
    assert answer(node.follower.new_epoch(message("a", 5))).get()["ok"]
    assert node.rlog.promised_leader == "a"
    assert not answer(node.follower.new_epoch(message("c", 5))).get()["ok"]


# Rule 14: a total state machine


# Fails if: Store._apply_one drops its `problem(command)` check.
def test_rule14_a_malformed_command_yields_an_error_result_and_the_entry_applies(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A put with no key: the entry applies, later ones too, and so does a restart."""
    node = member(tmp_path, reactor, "b")
    bad = LogEntry(1, 1, [{"op": "put"}, put("k1")])
    ack = answer(node.follower.prepare(prepare("a", 1, (0, 0), [bad, entry(1, 2)], 2))).get()
    assert ack["ok"]
    assert node.store.applied_index == 2 and node.store.revision == 2
    reactor.advance(LAZY_DELAY)  # the commit mark reaches the disk
    node = reopen(node, reactor)
    assert node.store.applied_index == 2 and node.store.get(b"k1") is not None


# Fails if: Leader.propose accepts commands that are not a list of maps (drop its check).
def test_rule14_every_queued_write_gets_exactly_one_answer(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    node = member(tmp_path, reactor, "a")
    link = FakeLink("b")
    leader = lead(node, 1, 2, link)
    serve(node, link)
    bad = Answer(leader.propose(7))  # type: ignore[arg-type]
    good = Answer(leader.propose([put("k")]))
    reactor.advance(0)
    link.match_index = node.rlog.last_index
    leader.stream_answered(link)
    assert bad.failure is not None
    assert good.get() == [{"ok": True, "revision": 1}]


# Rule 9: a forward that fails after it was sent answers 504


# Fails if: Node._forward answers NotReady for a leader's 504 (`raise OutcomeUnknown(message)`
# -> `raise NotReady(message)`).
def test_rule9_a_leaders_504_to_a_forward_stays_a_504(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    from kvd.replication.peer import PeerError

    node = member(tmp_path, reactor, "b")
    answer(node.follower.prepare(prepare("a", 1, (0, 0), [], 0))).get()
    peers = Peers()
    node.peer = peers.client()
    peers.handlers["http://a"] = lambda name, body: fail(PeerError(504, {
        "code": "outcome_unknown", "message": "not committed within 5s"}))
    lost = Answer(node.submit([put("k")]))
    assert lost.failure is not None and isinstance(lost.failure.value, OutcomeUnknown)


# Rule 10: a follower's read batch


# Fails if: Node._follower_read_index never starts a new batch once one was sent
# (`if self._read_batch is None:`).
def test_rule10_a_follower_read_after_a_batch_was_sent_asks_again(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    node = member(tmp_path, reactor, "b")
    answer(node.follower.prepare(prepare("a", 1, (0, 0), [entry(1, 1), entry(1, 2)], 1))).get()
    peers = Peers()
    node.peer = peers.client()
    indexes = iter([1, 2])
    peers.handlers["http://a"] = lambda name, body: {"index": next(indexes)}
    first = Answer(node.read_barrier(True))
    reactor.advance(0)
    assert first.called and peers.sent("readindex") == ["http://a"]
    second = Answer(node.read_barrier(True))
    reactor.advance(0)
    assert peers.sent("readindex") == ["http://a", "http://a"]
    assert not second.called, "index 2 is not applied yet"
    node.advance_follower_commit(2)
    assert second.called


# Smaller findings


# Fails if: Node.read_barrier serves a linearizable read while `unavailable` is set.
def test_a_linearizable_read_waits_for_the_standalone_marker(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    pool = ManualPool()
    node = open_member(str(tmp_path / "s"), reactor, "s", pool)
    started = Answer(node.become_standalone())
    assert not started.called
    with pytest.raises(NotReady):
        node.read_barrier(True)
    pool.run_all()
    reactor.advance(0)
    assert started.called and Answer(node.read_barrier(True)).called


# Fails if: Node.read_barrier calls a min_revision in the future while syncing a 400
# (drop the `self.unavailable is None` condition).
def test_min_revision_while_a_leader_is_elected_is_not_a_400(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    node = member(tmp_path, reactor, "a")
    lead(node, 1, 2, FakeLink("b"))  # marker appended, not committed: still syncing
    assert node.role == Role.SYNCING
    waiting = Answer(node.read_barrier(False, min_revision=5))
    assert not waiting.called, "a 400 says no client can have seen revision 5"


# Fails if: ReplicatedLog.entry drops its range check (a negative offset reads the tail).
def test_the_log_refuses_to_read_an_entry_it_does_not_hold(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    node = member(tmp_path, reactor, "b")
    give_log(node, [entry(1, 1), entry(1, 2)], promised=1)
    with pytest.raises(FatalLogError):
        node.rlog.entry(0)
    with pytest.raises(FatalLogError):
        node.rlog.entry(3)


# Fails if: Node gives ExpiryScheduler its reactor instead of its clock.
def test_rule12_ttls_run_on_the_monotonic_clock_not_the_wall_clock(tmp_path: Any) -> None:
    """An NTP step of the wall clock expires nothing; the monotonic clock decides."""
    from tests.support import InlinePool

    wall, monotonic = InlineReactor(), InlineReactor()
    data_dir = DataDir(str(tmp_path / "a"))
    node, _ = open_node(wall, data_dir, recover_store(data_dir, "a"), NodeSettings(url="u"),
                        True, pool=InlinePool(), clock=monotonic)
    started = Answer(node.become_standalone())
    wall.advance(0)
    assert started.called
    write = submit(node, wall, put_command(b"k", b"v", "w1", ttl=10))
    assert write.get()[0]["ok"]
    wall.advance(3600)
    assert node.store.get(b"k") is not None
    monotonic.advance(10)
    wall.advance(0)
    assert node.store.get(b"k") is None
    node.rlog._writer.close()

"""Safety rule 1 of DESIGN.md section 5: what is durable before a vote."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred

from kvd import node as node_module
from kvd.errors import InDoubt, NotReady
from kvd.node import Role
from kvd.replication.sync import HigherEpoch
from kvd.wal.layout import DataDir
from kvd.wal.record import RecordType
from kvd.wal.recovery import recover
from tests.replication.safety.support import (
    cluster,
    give_log,
    install,
    lead,
    member,
    payloads,
    run_sync,
    serve,
    snapshot_of,
    stream_to,
    submit,
)
from tests.replication.support import (
    Answer,
    FakeLink,
    InlineReactor,
    ManualPool,
    Peers,
    answer,
    entry,
    message,
    prepare,
    put,
    wal_payloads,
)
from tests.support import follower_of


# Fails if: Follower._prepare drops `await rlog.wait_durable(acknowledged)`.
def test_rule1_ack_waits_for_the_entries_fsync(tmp_path: Any, reactor: InlineReactor) -> None:
    """A PREPARE's ACK is not produced before its entries are on disk."""
    pool = ManualPool()
    node = member(tmp_path, reactor, "b", pool)
    node.rlog.promise(1, "a")
    pool.run_all()
    ack = answer(follower_of(node).prepare(prepare("a", 1, (0, 0), [entry(1, 1), entry(1, 2)], 0)))
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
    vote = answer(follower_of(node).new_epoch(message("a", 3)))
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
    ack = answer(follower_of(node).prepare(prepare("a", 2, (0, 0), [entry(2, 1)], 0)))
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
    vote = answer(follower_of(node).new_epoch(message("b", 2)))
    # At once: before the promise is even on disk.
    assert not vote.called
    assert write.called and write.failure is not None
    error = write.failure.value
    assert isinstance(error, InDoubt) and error.status == 504
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
    assert write.failure is not None and isinstance(write.failure.value, InDoubt)


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
        vote = answer(follower_of(node).prepare(prepare("a", 1, (0, 0), [entry(1, 1)], 0)))
    else:
        vote = answer(follower_of(node).new_epoch(message("a", 2)))
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
    vote = answer(follower_of(node).new_epoch(message("a", 5)))
    assert not vote.called, "answered before the promise of epoch 5 is on disk"


# Findings of the protocol review
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
        answer(follower_of(candidate).new_epoch(message("c", 6, nodes["c"].identity.incarnation)))
        return Deferred.fromCoroutine(follower_of(nodes["b"]).new_epoch(body))

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

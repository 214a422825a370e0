"""Safety rule 5 of DESIGN.md section 5: identity and forgetful disks."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

from kvd.node import Node
from kvd.replication.sync import HigherEpoch, LostCommits, SyncFailed
from kvd.wal.layout import DataDir, Identity
from tests.replication.safety.support import cluster, give_log, lead, member, run_sync, stream_to
from tests.replication.support import (
    OTHER_DISK,
    InlineReactor,
    Peers,
    answer,
    entry,
    message,
    open_member,
    prepare,
    reopen,
)
from tests.support import follower_of


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


# Fails if: synchronise counts torn answers (`if not reply.get("torn")` made `if True`).
def test_rule5_a_node_that_dropped_a_torn_tail_is_not_counted_in_r(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """Its NEWEPOCH answer says torn and sync does not count it until it acknowledged entries."""
    nodes = cluster(tmp_path, reactor)
    torn = _torn_member(tmp_path / "torn", reactor, "b")
    torn.bootstrap_voters = dict(nodes["a"].bootstrap_voters)
    torn.bootstrap_voters["b"] = torn.identity.incarnation
    nodes["a"].bootstrap_voters["b"] = torn.identity.incarnation  # this disk is the voter b
    vote = answer(follower_of(torn).new_epoch(
        message("c", 2, nodes["c"].identity.incarnation))).get()
    assert vote["ok"] and vote["torn"] is True
    peers = Peers()
    peers.route_to(torn)  # c is down: a and the torn b would make R = 2
    with pytest.raises(SyncFailed):
        run_sync(nodes["a"], 3, peers, 2).get()
    # Once it acknowledged entries from a leader it counts again.
    ack = answer(follower_of(torn).prepare(prepare("a", 3, (1, 2), [entry(3, 3)], 0,
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
    assert answer(follower_of(nodes["b"]).prepare(prepare("a", 3, (0, 0), [], 0))).reply() == {
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


# Findings of the protocol review
# Rule 5: every vote carries the voter's incarnation


def _wiped(tmp_path: Any, reactor: InlineReactor, nodes: dict[str, Node], node_id: str) -> Node:
    """Voter ``node_id`` restarted on an empty data dir under its old id (a new disk)."""
    wiped = open_member(str(tmp_path / f"{node_id}-wiped"), reactor, node_id)
    wiped.bootstrap_voters = dict(nodes["a"].bootstrap_voters)
    assert not wiped.is_voter()
    return wiped


# Fails if: synchronise counts a NEWEPOCH answer whatever its incarnation (`counted`
# takes every answer, not only those from the disk the voter set names).
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
    vote = answer(follower_of(wiped).new_epoch(
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

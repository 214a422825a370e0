"""Safety rule 4 of DESIGN.md section 5: voters live in the log."""

from __future__ import annotations

from typing import Any

from kvd.node import Role
from kvd.wal.layout import DataDir
from kvd.wal.recovery import recover
from tests.replication.safety.support import cluster, epochs, give_log, lead, member
from tests.replication.support import (
    FakeLink,
    InlineReactor,
    answer,
    config_entry,
    entry,
    message,
    prepare,
)
from tests.support import follower_of


# Fails if: Follower._refusal drops its `node_id not in voter_ids()` check.
def test_rule4_nodes_refuse_newepoch_and_prepare_from_a_non_voter(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A learner's NEWEPOCH or PREPARE changes nothing, not even the promise."""
    node = member(tmp_path, reactor, "b")
    vote = answer(follower_of(node).new_epoch(message("x", 5))).reply()
    ack = answer(follower_of(node).prepare(prepare("x", 5, (0, 0), [entry(5, 1)], 0))).reply()
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
    refused = answer(follower_of(node).new_epoch(message("b", 2, "ib"))).get()
    assert refused["reject"] == "sender is not a voter"
    assert answer(follower_of(node).new_epoch(message("d", 2, "id"))).get()["ok"]


# Fails if: Node.voters keys its cache on (last_index, len(entries)) only.
def test_rule4_voters_follow_a_truncated_config_entry(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """When a new leader truncates an uncommitted config entry, its voters go with it."""
    node = member(tmp_path, reactor, "d")
    me = node.identity.incarnation
    old = {"a": "ia", "b": "ib", "c": "ic", "d": me, "e": "ie"}
    proposed = {"a": "ia", "b": "ib", "c": "ic", "d": me, "f": "if"}
    answer(follower_of(node).prepare(prepare(
        "a", 2, (0, 0), [config_entry(1, 1, old), config_entry(2, 2, proposed)], 1))).get()
    assert node.voters() == proposed
    # b leads epoch 3, elected by b, c and e (none holds entry 2): its marker replaces entry 2.
    ack = answer(follower_of(node).prepare(prepare("b", 3, (1, 1), [entry(3, 2)], 1, "ib"))).get()
    assert ack["ok"] and epochs(node) == [1, 3]
    assert node.voters() == old
    assert answer(follower_of(node).new_epoch(message("e", 4, "ie"))).get()["ok"]


# Findings of the protocol review
# Rule 4: nodes refuse messages from a voter id on another disk


# Fails if: Follower._refusal skips the incarnation (`voters[sender] != message.get(...)`
# check dropped).
def test_rule4_a_prepare_from_a_voter_id_with_another_incarnation_is_refused(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    nodes = cluster(tmp_path, reactor)
    reply = answer(follower_of(nodes["b"]).prepare(
        prepare("a", 2, (0, 0), [entry(2, 1)], 1, incarnation="a-new-disk"))).reply()
    assert reply == {"ok": False, "reject": "sender is not a voter", "promised": 0}
    assert nodes["b"].rlog.last_index == 0 and nodes["b"].rlog.promised_epoch == 0
    assert nodes["b"].role == Role.LOOKING

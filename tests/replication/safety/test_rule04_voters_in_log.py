"""Safety rule 4 of DESIGN.md section 5: voters live in the log."""

from __future__ import annotations

from typing import Any

import pytest

from kvd.node import Role
from kvd.replication.stream import FollowerStream
from kvd.wal import snapshot
from kvd.wal.layout import DataDir
from kvd.wal.record import LogEntry
from kvd.wal.recovery import recover
from tests.replication.safety.support import (
    cluster,
    epochs,
    give_log,
    install,
    lead,
    member,
    run_sync,
    snapshot_of,
)
from tests.replication.support import (
    OTHER_DISK,
    FakeLink,
    InlineReactor,
    Peers,
    answer,
    config_entry,
    entry,
    member_of,
    message,
    open_member,
    prepare,
    put,
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
    assert vote == {"ok": False, "reject": "sender is not a voter", "promised": 0}
    # Nothing promised; where to resume, should a config entry name the sender.
    assert ack == {"ok": False, "reject": "sender is not a voter", "promised": 0,
                   "last_index": 0}
    assert node.rlog.promised_epoch == 0 and node.rlog.last_index == 0
    assert recover(DataDir(str(tmp_path / "b"))).promised_epoch == 0
    assert node.role == Role.LOOKING


# Fails if: Leader.advance_commit counts every link (drop `if link.voter`): a voter id
# answering from another disk would count.
def test_rule4_the_leader_never_counts_a_non_voter(tmp_path: Any, reactor: InlineReactor) -> None:
    """A learner holding an entry does not make up a write quorum."""
    node = member(tmp_path, reactor, "a")
    # x is no voter; c is, but answers from another disk (rule 5): neither counts.
    voter, learner, other_disk = FakeLink("b"), FakeLink("x", voter=False), FakeLink(
        "c", voter=False)
    leader = lead(node, 1, 2, voter, learner, other_disk)
    for link in (learner, other_disk):
        link.match_index = leader.marker_index
        leader.stream_answered(link)
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
    assert reply == {"ok": False, "reject": "sender is not a voter", "promised": 0,
                     "last_index": 0}
    assert nodes["b"].rlog.last_index == 0 and nodes["b"].rlog.promised_epoch == 0
    assert nodes["b"].role == Role.LOOKING


def joint_entry(epoch: int, index: int, old: dict[str, str], new: dict[str, str]) -> LogEntry:
    """The first entry of a change of voters: old and new decide together."""
    return LogEntry(epoch, index, [{"op": "config",
                                    "voters": [[i, inc] for i, inc in sorted(new.items())],
                                    "joint": [[i, inc] for i, inc in sorted(old.items())]}])


def _joint_leader(tmp_path: Any, reactor: InlineReactor) -> tuple[Any, dict[str, FakeLink]]:
    """a leads epoch 2 over a log whose newest config is joint: old {a, b, c}, new
    {a, b, d} (c replaced by d); W is 2 in each."""
    node = member(tmp_path, reactor, "a")
    me = node.identity.incarnation
    old = {"a": me, "b": OTHER_DISK, "c": OTHER_DISK}
    new = {"a": me, "b": OTHER_DISK, "d": OTHER_DISK}
    give_log(node, [config_entry(1, 1, old), joint_entry(1, 2, old, new)], commit=1,
             promised=1)
    links = {i: FakeLink(i) for i in ("b", "c", "d")}
    lead(node, 2, 2, *links.values())
    return node, links


# Fails if: Quorums.highest_held looks at one voter set only (the newest): the new
# voters alone would commit a joint entry the old ones may never have seen.
def test_rule4_a_joint_config_commits_only_once_w_of_the_old_and_w_of_the_new_hold_it(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    node, links = _joint_leader(tmp_path, reactor)
    leader = node.leader
    assert node.quorums(2).joint and node.voters().keys() == {"a", "b", "c", "d"}
    links["d"].match_index = leader.marker_index  # a and d: W of the new set only
    leader.stream_answered(links["d"])
    assert node.rlog.commit_index == 1
    node2, links2 = _joint_leader(tmp_path / "other", reactor)
    links2["c"].match_index = node2.leader.marker_index  # a and c: W of the old set only
    node2.leader.stream_answered(links2["c"])
    assert node2.rlog.commit_index == 1
    links["c"].match_index = leader.marker_index  # now both
    leader.stream_answered(links["c"])
    assert node.rlog.commit_index == leader.marker_index


# Fails if: Quorums.reached asks any voter set instead of all: a read round confirmed
# by the new voters alone, while the old ones may have elected someone else.
def test_rule4_a_read_round_while_joint_needs_both_voter_sets(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    node, links = _joint_leader(tmp_path, reactor)
    leader = node.leader
    for link in links.values():
        link.match_index = leader.marker_index
        leader.stream_answered(link)
    read = answer(leader.read_index())
    links["d"].confirmed_seq = links["d"].sent_seq + 1
    leader.stream_answered(links["d"])
    assert not read.called
    links["c"].confirmed_seq = links["c"].sent_seq + 1
    leader.stream_answered(links["c"])
    assert read.get() == node.rlog.commit_index


# Fails if: the leader never appends the second entry of a change (the new voter set
# alone) once the joint entry committed: the cluster stays joint for ever.
def test_rule4_once_the_joint_entry_commits_the_leader_appends_the_new_set_alone(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    node, links = _joint_leader(tmp_path, reactor)
    leader = node.leader
    for name in ("c", "d"):
        links[name].match_index = leader.marker_index
        leader.stream_answered(links[name])
    reactor.advance(0)
    newest = node.rlog.newest_config()
    assert newest is not None and "joint" not in newest
    assert {i for i, _ in newest["voters"]} == {"a", "b", "d"}
    assert not node.quorums(2).joint
    # The new set alone now decides: d's copy commits it, c's does not matter.
    links["d"].match_index = node.rlog.last_index
    leader.stream_answered(links["d"])
    assert node.rlog.commit_index == node.rlog.last_index


# Fails if: synchronise stops at the voter set it started with (`if True: break` for
# the config check): a candidate that adopts a log naming new voters must hear R of
# those too, or it misses what the new set alone committed (here it stops with
# LostCommits instead of leading with the committed write).
def test_rule4_a_sync_that_adopts_a_joint_config_asks_the_new_voters_too(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """Old {a, b, c}, new {a, b, d}; b is down. c and b committed the joint entry;
    b and d then committed the new set alone and a write. Candidate a knew none of it."""
    nodes = cluster(tmp_path, reactor)
    d = member_of(str(tmp_path / "d"), reactor, "d", ("a", "b", "c"))
    incarnations = {i: n.identity.incarnation for i, n in {**nodes, "d": d}.items()}
    old = {i: incarnations[i] for i in ("a", "b", "c")}
    new = {i: incarnations[i] for i in ("a", "b", "d")}
    base = config_entry(1, 1, old)
    give_log(nodes["a"], [base], commit=1, promised=1)
    give_log(nodes["c"], [base, joint_entry(1, 2, old, new)], commit=1, promised=1)
    give_log(d, [base, joint_entry(1, 2, old, new), config_entry(1, 3, new),
                 entry(1, 4, put("x"))], commit=4, promised=1)
    peers = Peers()
    peers.route_to(nodes["c"])
    peers.route_to(d)
    urls = {i: f"http://{i}" for i in ("a", "b", "c", "d")}
    run_sync(nodes["a"], 2, peers, 2, urls).get()
    assert nodes["a"].rlog.last == (1, 4)
    assert nodes["a"].voters() == new and nodes["a"].is_voter()
    assert sorted(peers.sent("newepoch")) == ["http://b", "http://c", "http://d"]


def _lagging_voter(tmp_path: Any, reactor: InlineReactor) -> tuple[Any, Any, Any]:
    """c replaced a by d, but c's log lags behind the change: it names a, b and c
    only. d leads epoch 2 over the committed change (new set b, c, d) and streams
    to c; b is gone, so d can commit only with c."""
    c = member_of(str(tmp_path / "c"), reactor, "c", ("a", "b", "c"))
    d = open_member(str(tmp_path / "d"), reactor, "d")
    old = {"a": OTHER_DISK, "b": OTHER_DISK, "c": c.identity.incarnation}
    new = {"b": OTHER_DISK, "c": c.identity.incarnation, "d": d.identity.incarnation}
    shared = [config_entry(1, 1, old), entry(1, 2)]
    give_log(c, shared, commit=2, promised=1)
    give_log(d, [*shared, entry(1, 3), entry(1, 4), joint_entry(1, 5, old, new),
                 config_entry(1, 6, new)], commit=6, promised=1)
    lead(d, 2, 2)
    return c, d, d.leader


def _snapshot_naming(d: Any, voters: dict[str, str]) -> tuple[LogEntry, bytes]:
    """d's committed log (1 to 6) as a snapshot whose meta names ``voters``; its
    last entry and its bytes."""
    entries = d.rlog.entries_between(1, 6)
    store, _ = snapshot_of(entries)
    meta = {"voters": [[i, inc] for i, inc in sorted(voters.items())]}
    return entries[-1], snapshot.encode(snapshot.Snapshot(1, 6, store.snapshot_state(), meta))


# Fails if: Follower._refusal judges the sender by its own log alone (`named_by`
# ignored): c refuses d for ever, and the new set cannot commit with c and d.
# With a one-entry limit per PREPARE, the entry that names d is out of one message's
# reach: also fails if FollowerStream._send does not send (after asking d for) a
# snapshot past that entry.
@pytest.mark.parametrize("per_message", [1024, 1])
def test_rule4_a_lagging_voter_takes_the_change_that_names_its_leader(
    tmp_path: Any, reactor: InlineReactor, monkeypatch: Any, per_message: int
) -> None:
    monkeypatch.setattr("kvd.replication.stream.MAX_ENTRIES_PER_MESSAGE", per_message)
    c, d, leader = _lagging_voter(tmp_path, reactor)
    peers = Peers()
    peers.route_to(c)
    asked: list[int] = []

    def take_snapshot(at_least: int) -> None:
        """Node.snapshot_now, inline: its Snapshotter writes on a thread."""
        asked.append(at_least)
        index = d.store.applied_index
        sets = d.voter_sets_at(index)
        meta = {"voters": sorted([i, inc] for i, inc in sets[-1].items())}
        assert d.data_dir is not None
        snapshot.write(d.data_dir, snapshot.Snapshot(
            d.rlog.epoch_at(index) or 0, index, d.store.snapshot_state(), meta))

    stream = FollowerStream(leader, d.rlog, peers.client(), "c", "http://c",
                            d.voters()["c"], d.read_snapshot_file, take_snapshot)
    leader.links["c"] = stream
    stream.answered_incarnation = c.identity.incarnation
    stream.start()
    for _ in range(40):
        reactor.advance(0.2)
    assert c.rlog.last_index == d.rlog.last_index == leader.marker_index
    assert d.rlog.commit_index == leader.marker_index  # c and d: 2 of the new set's 3
    assert c.rlog.promised_epoch == 2
    assert c.voters() == d.voters()
    # Out of reach, c took the change from a snapshot that d took for it.
    assert (c.rlog.base_index > 0, bool(asked)) == ((per_message == 1,) * 2)
    assert all(at == 5 for at in asked)  # the joint entry, the first to name d


# Fails if: Follower._named_after ignores whether the PREPARE extends our log
# (`if False:` for its prev check): entries that do not fit would name the sender.
def test_rule4_a_prepare_whose_entries_name_another_sender_is_refused_with_nothing_changed(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    c, d, _ = _lagging_voter(tmp_path, reactor)
    entries = d.rlog.entries_between(3, 5)
    refused = answer(follower_of(c).prepare(prepare("x", 2, (1, 2), entries, 2))).reply()
    assert refused == {"ok": False, "reject": "sender is not a voter", "promised": 1,
                       "last_index": 2}
    assert c.rlog.last_index == 2 and c.rlog.promised_epoch == 1
    # Whose prev does not match: the usual hint, still nothing promised.
    refused = answer(follower_of(c).prepare(prepare(
        "d", 2, (1, 4), entries[-1:], 2, incarnation=d.identity.incarnation))).reply()
    assert refused["reject"] == "sender is not a voter" and refused["last_index"] == 2
    assert c.rlog.promised_epoch == 1


# Fails if: Follower._install_snapshot refuses a sender its log does not name before
# reading the snapshot's own voter sets.
def test_rule4_a_lagging_voter_installs_a_snapshot_that_names_its_leader(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    c, d, _ = _lagging_voter(tmp_path, reactor)
    for voters, installed in (({"b": OTHER_DISK, "y": "disk"}, False), (d.voters(), True)):
        last, data = _snapshot_naming(d, voters)
        reply = install(c, "d", 2, last, data, incarnation=d.identity.incarnation).reply()
        assert reply.get("ok", False) is installed, reply
        assert installed or (c.rlog.promised_epoch, c.store.applied_index) == (1, 2)
    assert c.store.applied_index == 6 and c.voters() == d.voters()


# Fails if: Leader._finish_joint_change looks only at the log's config entries
# (`return` when there are none): a change that a snapshot recorded as joint stays
# joint for ever, both sets needed for every write.
def test_rule4_a_joint_change_known_only_from_a_snapshot_is_finished(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    node = member(tmp_path, reactor, "a")
    me = node.identity.incarnation
    old = [["a", me], ["b", OTHER_DISK], ["c", OTHER_DISK]]
    new = [["a", me], ["b", OTHER_DISK], ["d", OTHER_DISK]]
    node.adopt_snapshot_meta({"voters": new, "joint": old})
    assert node.quorums(2).joint and not node.rlog.config_indexes
    links = {i: FakeLink(i) for i in ("b", "c", "d")}
    leader = lead(node, 2, 2, *links.values())
    for name in ("c", "d"):
        links[name].match_index = leader.marker_index
        leader.stream_answered(links[name])
    reactor.advance(0)
    assert node.rlog.newest_config() == {"op": "config", "voters": new}
    assert not node.quorums(2).joint


# Fails if: Follower._refusal drops its one-leader-per-epoch check (`if False:`): a
# snapshot that names its sender, our log not naming it, would install from a second
# leader of an epoch already promised to another (rule 15).
def test_rule4_a_snapshot_that_names_its_sender_is_refused_in_an_epoch_promised_to_another(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    c, d, _ = _lagging_voter(tmp_path, reactor)
    c.rlog.promise(2, "b")
    last, data = _snapshot_naming(d, d.voters())
    reply = install(c, "d", 2, last, data, incarnation=d.identity.incarnation).reply()
    assert reply["ok"] is False and "promised to another leader" in reply["reject"], reply
    assert c.store.applied_index == 2 and c.rlog.promised_leader == "b"


# Fails if: Follower._install_snapshot lets only a stale epoch stop a chunk before it
# is kept (`refusal["reject"] == "stale epoch"`): a second leader of an epoch promised
# to another, not named by our log, would have its chunks assembled.
def test_rule4_a_chunk_from_a_second_leader_of_a_promised_epoch_is_not_kept(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    c, d, _ = _lagging_voter(tmp_path, reactor)
    c.rlog.promise(2, "b")
    _, data = _snapshot_naming(d, d.voters())
    follower = follower_of(c)
    reply = answer(follower.install_snapshot(message(
        "d", 2, d.identity.incarnation, snapshot_epoch=1, snapshot_index=6, offset=0,
        total=len(data), data=data[: len(data) // 2]))).reply()
    assert reply["ok"] is False and "promised to another leader" in reply["reject"], reply
    assert follower._incoming is None

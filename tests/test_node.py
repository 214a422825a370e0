"""What of the applied log a node keeps in memory between snapshots."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.internet.defer import succeed

from kvd.node import Node, NodeSettings
from kvd.replication import messages
from kvd.replication.stream import FollowerStream
from kvd.store import put_command
from kvd.wal import snapshot
from tests.replication.safety.support import give_log, lead, member, serve, snapshot_of, submit
from tests.replication.support import (
    OTHER_DISK,
    FakeLink,
    Peers,
    answer,
    close_all,
    config_entry,
    entry,
    put,
)
from tests.support import InlineReactor, follower_of, open_inline_node, snapshot_inline

TAIL = 3


def small_tail(node: Node) -> Node:
    node.settings = replace(node.settings, log_tail=TAIL)
    return node


# Fails if: Node.apply_committed never calls _release_log (the log since the last
# snapshot stays in memory: about 18 bytes a key at 1,000,000 keys, bench/standalone.py).
def test_applied_entries_beyond_the_tail_leave_memory_before_any_snapshot(
        tmp_path: Any) -> None:
    reactor = InlineReactor()
    settings = NodeSettings(url="http://127.0.0.1:1", snapshot_entries=10_000, log_tail=TAIL)
    node = open_inline_node(str(tmp_path), reactor, settings)
    taken: list[int] = []
    node.snapshotter = lambda n: taken.append(n.store.applied_index)
    for i in range(40):
        d = node.submit([put_command(b"k%d" % i, b"v" * 100, f"r{i}")])
        reactor.advance(0)
        assert d.called
    assert taken == [], "no snapshot: the release is not compaction"
    # Released every TAIL entries, down to the last TAIL: at most twice that held.
    assert node.rlog.base_index >= 41 - 2 * TAIL
    assert [e.index for e in node.rlog.entries][-1] == node.store.applied_index == 41
    # The WAL still holds every entry: a restart reads all the writes back.
    reopened = open_inline_node(str(tmp_path), reactor, settings)
    assert len(reopened.store) == 40
    assert reopened.store.digest() == node.store.digest()
    close_all()


# Fails if: Node._release_log releases entries past a config entry (voters would
# fall back to the bootstrap set while the log's config is in effect: rule 4).
def test_a_config_entry_and_the_log_after_it_stay_in_memory(tmp_path: Any) -> None:
    node = small_tail(member(tmp_path, InlineReactor(), "b"))
    voters = {"a": OTHER_DISK, "b": node.identity.incarnation, "d": OTHER_DISK}
    log = [entry(1, 1), entry(1, 2), config_entry(1, 3, voters),
           *(entry(1, i) for i in range(4, 31))]
    give_log(node, log, commit=30)
    assert node.store.applied_index == 30
    assert node.rlog.base_index == 2
    assert node.voters() == voters
    close_all()


# Fails if: Node._release_log ignores the leader's follower streams (a follower
# being caught up would be sent snapshot after snapshot under load).
def test_a_leader_keeps_what_a_follower_stream_will_send_next(tmp_path: Any) -> None:
    reactor = InlineReactor()
    node = small_tail(member(tmp_path, reactor, "a"))
    behind, current = FakeLink("b"), FakeLink("c")
    lead(node, 2, 2, behind, current)
    serve(node, current)
    behind.next_index = 5
    for i in range(20):
        submit(node, reactor, put(f"k{i}"))
        current.match_index = current.next_index = node.rlog.last_index
        assert node.leader is not None
        node.leader.advance_commit()
    assert node.store.applied_index == node.rlog.last_index > 20
    assert node.rlog.base_index == 4, "entry 5 is what b is sent next"
    behind.next_index = node.rlog.last_index + 1
    for i in range(TAIL):
        submit(node, reactor, put(f"more{i}"))
        current.match_index = node.rlog.last_index
        node.leader.advance_commit()
    assert node.rlog.base_index >= node.store.applied_index - 2 * TAIL
    close_all()


def _released_past_its_snapshot(tmp_path: Any, reactor: InlineReactor) -> Node:
    """Node "b" with a snapshot at 5 on disk and entries up to 30 applied, most of
    them released from memory since."""
    node = small_tail(member(tmp_path, reactor, "b"))
    assert node.data_dir is not None
    path = node.data_dir.root
    node.snapshotter = lambda n: snapshot_inline(n, path)
    give_log(node, [entry(1, i) for i in range(1, 6)], commit=5)
    node.snapshot_now(5)
    assert node.data_dir is not None and node.data_dir.snapshot_indexes() == [5]
    give_log(node, [entry(1, i) for i in range(6, 31)], commit=30)
    assert node.rlog.base_index > 5
    return node


# Fails if: FollowerStream._send sends the newest snapshot even when it is older than
# the log's base (the follower would need entries no longer held: an endless catch-up).
def test_a_follower_behind_the_base_waits_for_a_snapshot_at_or_past_it(
        tmp_path: Any) -> None:
    reactor = InlineReactor()
    node = small_tail(member(tmp_path, reactor, "a"))
    current = FakeLink("c")
    lead(node, 2, 2, current)
    serve(node, current)
    for i in range(20):
        submit(node, reactor, put(f"k{i}"))
        current.match_index = current.next_index = node.rlog.last_index
        assert node.leader is not None
        node.leader.advance_commit()
    base = node.rlog.base_index
    assert base > 5
    _, old = snapshot_of([entry(1, i) for i in range(1, 6)])
    asked: list[int] = []
    peers = Peers()
    assert node.leader is not None
    link = FollowerStream(node.leader, node.rlog, peers.client(), "b", "http://b",
                          OTHER_DISK, lambda: succeed((1, 5, old)), asked.append)
    link.next_index = 2
    link._send()
    assert asked == [base]
    assert peers.sent("snapshot") == []
    close_all()


# Fails if: Follower._fetch sends a snapshot older than its log's base (a new leader
# whose store is past it would install an older store than its own).
def test_a_fetch_from_before_the_base_gets_a_snapshot_at_or_past_it(tmp_path: Any) -> None:
    reactor = InlineReactor()
    owner = _released_past_its_snapshot(tmp_path, reactor)
    fetch = messages.fetch(2, "a", OTHER_DISK, 8)
    first = answer(follower_of(owner).fetch(fetch)).reply()
    assert not first["ok"] and "being taken" in first["reject"]
    assert owner.data_dir is not None and owner.data_dir.snapshot_indexes()[-1] == 30
    second = answer(follower_of(owner).fetch(fetch)).reply()
    assert second["ok"] and second["entries"] == []
    assert snapshot.decode(second["snapshot"]).index == 30
    close_all()

"""Safety rule 2 of DESIGN.md section 5: exact acknowledgements."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from kvd.node import Node
from kvd.replication.log import FatalLogError
from kvd.wal.record import RecordType
from kvd.wal.writer import LAZY_DELAY
from tests.replication.safety.support import (
    epochs,
    lead,
    member,
    payloads,
    serve,
    stream_to,
    submit,
)
from tests.replication.support import (
    FakeLink,
    InlineReactor,
    Peers,
    answer,
    entry,
    prepare,
    put,
    reopen,
)
from tests.support import follower_of


def _stale_suffix(tmp_path: Any, reactor: InlineReactor) -> Node:
    """Follower b holding (1,1..5) from an old leader, nothing committed."""
    node = member(tmp_path, reactor, "b")
    ack = answer(follower_of(node).prepare(prepare(
        "a", 1, (0, 0), [entry(1, i) for i in range(1, 6)], 0)))
    assert ack.get()["index"] == 5
    return node


# Fails if: Follower._prepare sets `acknowledged = rlog.last_index`.
def test_rule2_ack_is_prev_plus_len_entries_not_the_last_index(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A follower holding more than it was sent acknowledges only what it was sent."""
    node = _stale_suffix(tmp_path, reactor)
    ack = answer(follower_of(node).prepare(prepare("c", 2, (1, 1), [entry(1, 2)], 0)))
    assert ack.reply() == {"ok": True, "index": 2, "promised": 2}
    assert node.rlog.last_index == 5


# Fails if: Follower._prepare advances its commit to `message["commit"]` without the min.
def test_rule2_follower_commit_is_min_of_leader_commit_and_ack(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """The leader's commit index does not commit the follower's own divergent entries."""
    node = _stale_suffix(tmp_path, reactor)
    # Leader c of epoch 2 committed its own entries 3 and 4 (not the ones b holds).
    ack = answer(follower_of(node).prepare(prepare("c", 2, (1, 1), [entry(1, 2)], 4)))
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
    answer(follower_of(node).prepare(prepare(
        "a", 1, (0, 0), [entry(1, i) for i in range(1, 5)], 2))).get()
    ack = answer(follower_of(node).prepare(prepare(
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
    answer(follower_of(node).prepare(prepare(
        "a", 1, (0, 0), [entry(1, i) for i in range(1, 4)], 2))).get()
    ack = answer(follower_of(node).prepare(prepare(
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

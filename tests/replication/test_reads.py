"""Linearizable reads that cannot be confirmed answer 503, never a 500 (found by torture)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from kvd import errors
from kvd.roles import Role
from tests.replication.support import Answer, Peers
from tests.support import InlineReactor, open_inline_node


def _following(tmp_path: Any, reactor: InlineReactor, leader_peer_url: str | None = None) -> Any:
    """A follower node; of a leader at ``leader_peer_url`` if one is given."""
    node = open_inline_node(str(tmp_path), reactor)
    node.leader = None
    node.role = Role.FOLLOWER
    if leader_peer_url is not None:
        node.leader_info = {"node_id": "L", "url": "http://l", "peer_url": leader_peer_url}
    return node


class UnreachableLeader:
    """A peer client whose every call fails to connect."""

    def call(self, url: str, message: str, body: Any, timeout: float) -> Deferred[Any]:
        return fail(ConnectionError("leader unreachable"))


def test_every_read_sharing_a_failed_follower_batch_gets_503(tmp_path: Any) -> None:
    reactor = InlineReactor()
    node = _following(tmp_path, reactor, "http://127.0.0.1:2")
    node.peer = UnreachableLeader()  # type: ignore[assignment]
    outcomes: list[Any] = []
    for _ in range(3):
        node.read_barrier(True).addBoth(outcomes.append)
    reactor.advance(0)
    assert len(outcomes) == 3
    for outcome in outcomes:
        assert isinstance(outcome, Failure) and outcome.check(errors.NotReady), outcome


def test_a_read_waiting_on_a_leader_that_steps_down_gets_503(tmp_path: Any) -> None:
    reactor = InlineReactor()
    node = open_inline_node(str(tmp_path), reactor)
    node.role = Role.LEADER
    assert node.leader is not None
    node.leader.write_quorum = 2  # the round now needs a follower's answer
    outcomes: list[Any] = []
    node.read_barrier(True).addBoth(outcomes.append)
    assert outcomes == []
    node.step_down("ZooKeeper session suspended")
    assert isinstance(outcomes[0], Failure) and outcomes[0].check(errors.NotReady)


def test_min_revision_waits_for_the_follower_to_apply_it(tmp_path: Any) -> None:
    from kvd.store import put_command
    from kvd.wal.record import LogEntry

    reactor = InlineReactor()
    node = _following(tmp_path, reactor)
    outcomes: list[Any] = []
    node.read_barrier(False, node.store.revision + 1).addBoth(outcomes.append)
    seen: list[int] = []
    node.on_applied.append(lambda index, commands, results: seen.append(index))
    assert outcomes == []
    index = node.rlog.last_index + 1
    node.rlog.append([LogEntry(node.epoch, index, [put_command(b"k", b"v", "r")])])
    node.advance_follower_commit(index)
    assert outcomes == [None]
    # The waiting read removed itself while entries were applied; others still ran.
    assert seen == [index]


def test_a_read_still_waiting_after_read_timeout_gets_503(tmp_path: Any) -> None:
    reactor = InlineReactor()
    node = _following(tmp_path, reactor)
    outcomes: list[Any] = []
    node.read_barrier(False, node.store.revision + 1).addBoth(outcomes.append)
    reactor.advance(node.settings.read_timeout - 0.01)
    assert outcomes == []
    reactor.advance(0.02)
    assert len(outcomes) == 1
    assert isinstance(outcomes[0], Failure) and outcomes[0].check(errors.NotReady)


def test_a_read_answered_at_once_arms_no_timer(tmp_path: Any) -> None:
    reactor = InlineReactor()
    node = _following(tmp_path, reactor)
    armed: list[float] = []
    call_later = reactor.callLater

    def counting_call_later(delay: float, f: Any, *args: Any, **kwargs: Any) -> Any:
        armed.append(delay)
        return call_later(delay, f, *args, **kwargs)

    reactor.callLater = counting_call_later  # type: ignore[method-assign]
    outcomes: list[Any] = []
    node.read_barrier(False, node.store.revision).addBoth(outcomes.append)
    assert outcomes == [None]
    assert armed == []


def test_reads_arriving_during_an_ask_share_the_next_one(tmp_path: Any) -> None:
    reactor = InlineReactor()
    node = _following(tmp_path, reactor, "http://a")
    asks: list[Deferred[Any]] = []
    peers = Peers()
    peers.handlers["http://a"] = lambda name, body: asks.append(Deferred()) or asks[-1]
    node.peer = peers.client()
    first = Answer(node.read_barrier(True))
    reactor.advance(0)
    later = [Answer(node.read_barrier(True)) for _ in range(3)]
    reactor.advance(0)
    assert len(asks) == 1, "one ask at a time"
    asks[0].callback({"index": node.store.applied_index})
    assert first.called
    assert len(asks) == 2 and not any(read.called for read in later), \
        "reads that arrived during the first ask wait for an answer to one sent after"
    asks[1].callback({"index": node.store.applied_index})
    assert all(read.called for read in later) and len(asks) == 2


def test_an_ask_to_a_former_leader_does_not_hold_reads_back(tmp_path: Any) -> None:
    reactor = InlineReactor()
    node = _following(tmp_path, reactor, "http://a")
    peers = Peers()
    peers.handlers["http://a"] = lambda name, body: Deferred()  # never answers
    peers.handlers["http://b"] = lambda name, body: {"index": node.store.applied_index}
    node.peer = peers.client()
    stuck = Answer(node.read_barrier(True))
    reactor.advance(0)
    node.leader_info = {"node_id": "M", "url": "http://m", "peer_url": "http://b"}
    served = Answer(node.read_barrier(True))
    reactor.advance(0)
    assert peers.sent("readindex") == ["http://a", "http://b"]
    assert served.called and not stuck.called

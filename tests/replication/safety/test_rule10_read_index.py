"""Safety rule 10 of DESIGN.md section 5: read-index batching."""

from __future__ import annotations

from typing import Any

import pytest

from kvd.errors import NotReady
from kvd.node import Node, Role
from kvd.replication.leader import Leader, NotLeading
from tests.replication.safety.support import lead, member, serve, submit
from tests.replication.support import (
    Answer,
    FakeLink,
    InlineReactor,
    ManualPool,
    Peers,
    answer,
    entry,
    open_member,
    prepare,
    put,
)
from tests.support import follower_of


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


# Findings of the protocol review
# Rule 10: a follower's read batch


# Fails if: Node._send_read_batch leaves the batch it sent open to later reads
# (`batch = self._read_batch`).
def test_rule10_a_follower_read_after_a_batch_was_sent_asks_again(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    node = member(tmp_path, reactor, "b")
    answer(follower_of(node).prepare(prepare("a", 1, (0, 0), [entry(1, 1), entry(1, 2)], 1))).get()
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


# Smaller findings of the protocol review


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

"""Safety rule 13 of DESIGN.md section 5: liveness (its ZooKeeper half is
covered by the integration tests)."""

from __future__ import annotations

from typing import Any

from kvd.errors import InDoubt
from tests.replication.safety.support import lead, member, serve, submit
from tests.replication.support import OTHER_DISK, Answer, FakeLink, InlineReactor, put


# Fails if: Leader.quorum_seen_since counts every link (drop `if link.voter`): a voter
# id answering from another disk, or a learner.
def test_rule13_quorum_seen_since_is_the_wth_most_recent_voter_answer(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """The leader has had W acknowledgements as of the W-th freshest voter answer."""
    node = member(tmp_path, reactor, "a")
    # Five voters: a to d, and x, whose answers come from another disk (not counted).
    node.bootstrap_voters.update(d=OTHER_DISK, x=OTHER_DISK)
    b, c, d, learner = (FakeLink("b"), FakeLink("c"), FakeLink("d"),
                        FakeLink("x", voter=False))
    leader = lead(node, 1, 2, b, c, d, learner)
    b.last_ok, c.last_ok, d.last_ok, learner.last_ok = 10.0, 30.0, 20.0, 1e12
    assert leader.quorum_seen_since() == 30.0
    leader.write_quorum = 3
    assert leader.quorum_seen_since() == 20.0
    leader.write_quorum = 5
    assert leader.quorum_seen_since() == 0.0, "fewer voters than W: never had a quorum"


# Fails if: Node.step_down fails pending writes with NotReady (503) instead of InDoubt.
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
        assert write.failure is not None and isinstance(write.failure.value, InDoubt)
    assert link.stopped

"""VoterChanges (kvd/coord/membership.py) at a leader on real files, its peers faked."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet.defer import Deferred

from kvd import errors
from kvd.coord.membership import VoterChanges
from tests.replication.safety.support import give_log, lead, member
from tests.replication.safety.test_rule04_voters_in_log import joint_entry
from tests.replication.support import (
    OTHER_DISK,
    FakeLink,
    InlineReactor,
    close_all,
    config_entry,
)


@pytest.fixture
def reactor() -> Iterator[InlineReactor]:
    yield InlineReactor()
    close_all()


def _changes(tmp_path: Any, reactor: InlineReactor, joint: bool) -> VoterChanges:
    node = member(tmp_path, reactor, "a")
    me = node.identity.incarnation
    old = {"a": me, "b": OTHER_DISK, "c": OTHER_DISK}
    log = [config_entry(1, 1, old)]
    if joint:
        log.append(joint_entry(1, 2, old, {"a": me, "b": OTHER_DISK, "d": OTHER_DISK}))
    # A joint entry committed, the new set alone not appended yet (between the two).
    give_log(node, log, commit=len(log), promised=1)
    lead(node, 2, 2, FakeLink("b"), FakeLink("c"))
    node.serving_as_leader(2)
    streams = {i: SimpleNamespace(answered_incarnation=OTHER_DISK, last_ok=0.0,
                                  match_index=0) for i in ("b", "c", "d")}
    coordinator = SimpleNamespace(node=node, reactor=reactor, replicas=3, write_quorum=2,
                                  members={i: {"incarnation": OTHER_DISK} for i in "bcd"},
                                  streams=streams)
    return VoterChanges(coordinator)  # type: ignore[arg-type]


def _failure(d: Deferred[Any]) -> BaseException:
    failures: list[Any] = []
    d.addErrback(failures.append)
    assert failures, "expected a refusal"
    return failures[0].value  # type: ignore[no-any-return]


# Fails if: a change may start while the last one has not ended (two joint changes
# at once could leave no set in charge).
def test_a_change_is_refused_with_409_while_a_joint_one_is_in_the_log(
        tmp_path: Any, reactor: InlineReactor) -> None:
    changes = _changes(tmp_path, reactor, joint=True)
    refused = _failure(Deferred.fromCoroutine(changes.remove("c")))
    assert isinstance(refused, errors.Conflict)


def test_a_change_whose_new_set_could_not_commit_is_refused(
        tmp_path: Any, reactor: InlineReactor) -> None:
    changes = _changes(tmp_path, reactor, joint=False)
    # b and c last answered long ago (last_ok 0 on a clock now at 10): replacing c by d
    # leaves a alone answering of the 2 the new set needs.
    reactor.advance(10)
    with pytest.raises(errors.BadRequest, match="not caught up"):
        changes.replace("c", "d")
    # Only b answers: without a, the set {b, c} would have 1 of the 2 it needs.
    changes.coordinator.streams["b"].last_ok = reactor.seconds()  # type: ignore[attr-defined]
    refused = _failure(Deferred.fromCoroutine(changes.remove("a")))
    assert isinstance(refused, errors.BadRequest)
    assert "answering" in str(refused.message)

"""Quorums over one voter set or two (a joint change), as kvd/replication/quorum.py counts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from kvd.replication.quorum import Quorums, VoterSet, config_voter_sets, write_quorum_for

OLD = {"a": "1", "b": "1", "c": "1"}
NEW = {"a": "1", "b": "1", "d": "1"}
JOINT = Quorums([VoterSet(OLD, 2), VoterSet(NEW, 2)])


def test_a_set_of_the_configured_size_keeps_its_w_and_another_takes_a_majority() -> None:
    assert write_quorum_for(3, 3, 3) == 3
    assert write_quorum_for(5, 3, 2) == 3
    assert write_quorum_for(2, 3, 2) == 2
    assert VoterSet({"a": "", "b": "", "c": "", "d": "", "e": ""}, 3).sync_quorum == 3


def test_while_joint_each_decision_needs_both_sets() -> None:
    assert JOINT.union().keys() == {"a", "b", "c", "d"}
    assert JOINT.highest_held({"a": 9, "c": 9, "b": 4}) == 4
    assert JOINT.highest_held({"a": 9, "d": 9, "c": 7}) == 7
    assert not JOINT.reached({"a", "d"}) and not JOINT.reached({"a", "c"})
    assert JOINT.reached({"a", "c", "d"}) and JOINT.reached({"a", "b"})
    assert not JOINT.sync_reached({"a", "c"}) and JOINT.sync_reached({"a", "c", "d"})
    assert JOINT.latest_quorum_time({"a": 50.0, "c": 40.0, "d": 30.0, "b": 10.0}) == 30.0


def test_a_config_command_names_its_sets_old_first() -> None:
    assert config_voter_sets({"voters": [["a", "1"]]}) == [{"a": "1"}]
    assert config_voter_sets({"voters": [["d", "2"]], "joint": [["c", "1"]]}) == [
        {"c": "1"}, {"d": "2"}]
    assert JOINT.describe() == {"voters": ["a", "b", "d"], "write_quorum": 2,
                                "joint_with": ["a", "b", "c"]}


@given(held=st.dictionaries(st.sampled_from("abcde"), st.integers(0, 20)),
       write_quorum=st.integers(1, 5))
def test_one_set_commits_the_wth_highest_index_its_voters_hold(
        held: dict[str, int], write_quorum: int) -> None:
    voters = {v: "" for v in "abcde"}
    indexes = sorted((held.get(v, 0) for v in voters), reverse=True)
    assert Quorums.single(voters, write_quorum).highest_held(held) == indexes[write_quorum - 1]


def test_a_malformed_joint_set_is_refused_before_it_applies() -> None:
    from kvd.commands import problem

    assert problem({"op": "config", "voters": [["a", "1"]], "joint": [["b", "1"]]}) is None
    for joint in ([], [["b"]], "b", [[1, "1"]]):
        assert "'joint'" in str(problem({"op": "config", "voters": [["a", "1"]],
                                         "joint": joint})), joint

"""Safety rule 15 of DESIGN.md section 5: one leader per epoch."""

from __future__ import annotations

from typing import Any

from tests.replication.safety.support import member
from tests.replication.support import InlineReactor, answer, entry, message, prepare, reopen
from tests.support import follower_of

# Findings of the protocol review


# Fails if: Follower._refusal drops the `rlog.promised_leader not in ("", sender)` check.
def test_rule15_an_epoch_promised_to_one_leader_is_refused_to_another(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """ZooKeeper's data was restored from a backup: a and c both took epoch 5."""
    node = member(tmp_path, reactor, "b")
    assert answer(follower_of(node).new_epoch(message("a", 5))).get()["ok"]
    for reply in (answer(follower_of(node).new_epoch(message("c", 5))).reply(),
                  answer(follower_of(node).prepare(prepare("c", 5, (0, 0), [entry(5, 1)],
                                                       0))).reply()):
        assert reply == {"ok": False, "reject": "epoch 5 was promised to another leader",
                         "promised": 5}
    assert node.rlog.last_index == 0
    assert answer(follower_of(node).prepare(prepare("a", 5, (0, 0), [entry(5, 1)], 0))).get()["ok"]


# Fails if: recovery ignores the leader of a PROMISE record (`leader = ""`).
def test_rule15_the_leader_of_a_promise_survives_a_restart(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    node = member(tmp_path, reactor, "b")
    answer(follower_of(node).new_epoch(message("a", 5))).get()
    node = reopen(node, reactor)
    assert (node.rlog.promised_epoch, node.rlog.promised_leader) == (5, "a")
    assert not answer(follower_of(node).new_epoch(message("c", 5))).get()["ok"]


# Fails if: the promise made at start from ZooKeeper's epoch binds a leader (then the
# first candidate of that epoch would be refused).
def test_rule15_a_promise_read_from_zookeeper_binds_the_first_leader_that_comes(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    node = member(tmp_path, reactor, "b")
    node.rlog.promise(5)
    assert answer(follower_of(node).new_epoch(message("a", 5))).get()["ok"]
    assert node.rlog.promised_leader == "a"
    assert not answer(follower_of(node).new_epoch(message("c", 5))).get()["ok"]

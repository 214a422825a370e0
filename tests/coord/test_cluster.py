"""
The coordinator's election steps, with ZooKeeper faults placed at exact calls.

The coordinator (``kvd.coord.cluster``) runs over an in-memory ZooKeeper
(``tests.coord.fakezk``) and real nodes on real files; peers are the
replication tests' fake. Integration tests run it against a real ZooKeeper.
Above each test, "Fails if" names the one-line change it was checked to catch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kazoo.exceptions import ConnectionLoss
from twisted.internet.defer import ensureDeferred

from kvd import errors
from kvd.config import NodeConfig
from kvd.coord.cluster import QUORUM_GRACE_SECONDS, ClusterCoordinator
from kvd.node import Node, Role
from tests.coord.fakezk import FakeZooKeeper
from tests.replication.support import (
    InlineReactor,
    Peers,
    close_all,
    follower_of,
    open_member,
)

ROOT = "/kvd/c"


@pytest.fixture(autouse=True)
def close_wals() -> Iterator[None]:
    yield
    close_all()


@pytest.fixture
def reactor() -> InlineReactor:
    return InlineReactor()


def coordinator(node: Node, zk: FakeZooKeeper, reactor: InlineReactor, replicas: int = 1,
                peers: Peers | None = None) -> ClusterCoordinator:
    config = NodeConfig(listen="tcp:0", advertise=node.settings.url, data_dir="",
                        cluster="c", replicas=replicas, write_quorum=replicas // 2 + 1)
    peers = peers or Peers()
    node.peer = peers.client()
    return ClusterCoordinator(reactor, zk, node, follower_of(node), config, peers.client())


def election(zk: FakeZooKeeper) -> list[str]:
    return zk.children(f"{ROOT}/election")


def single(tmp_path: Any, reactor: InlineReactor) -> tuple[Node, FakeZooKeeper]:
    """The only voter of a one-node cluster, not started yet."""
    return open_member(str(tmp_path / "a"), reactor, "a"), FakeZooKeeper()


# Rule 16: protected election znodes


# Fails if: ClusterCoordinator._stand does not look for its own znodes before creating
# (`mine = []`).
def test_rule16_a_create_lost_to_connectionloss_leaves_no_ghost(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """The create was applied but answered ConnectionLoss: the retry adopts that znode."""
    node, zk = single(tmp_path, reactor)
    zk.fail_next("create", ConnectionLoss(), applied=True, path=f"{ROOT}/election/")
    coord = coordinator(node, zk, reactor)
    coord.start()
    for _ in range(5):
        reactor.advance(1.0)
    assert len(election(zk)) == 1, election(zk)
    assert node.role == Role.LEADER


# Fails if: ClusterCoordinator._resign deletes only `_election_path` (not every znode with
# its prefix).
def test_rule16_resigning_deletes_every_znode_with_our_prefix(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    node, zk = single(tmp_path, reactor)
    coord = coordinator(node, zk, reactor)
    coord.start()
    assert node.role == Role.LEADER
    prefix = election(zk)[0].rsplit("-n_", 1)[0]
    zk.put(f"{ROOT}/election/{prefix}-n_9999999999", b"{}")  # a ghost of this session
    assert ensureDeferred(coord._resign()).called
    assert not any(name.startswith(prefix) for name in election(zk)), election(zk)


# Bug: a node stuck in SYNCING while holding the lowest znode


# Fails if: ClusterCoordinator._lead does not resign when `_serve` fails (drop the
# try/except around `await self._serve(...)`).
def test_every_failure_after_sync_ends_in_a_resignation(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """Writing the leader znode fails once: the node resigns and leads on its next turn."""
    node, zk = single(tmp_path, reactor)
    real_create = zk._create

    def create(path: str, *args: Any) -> str:
        if path == f"{ROOT}/leader" and not getattr(create, "failed", False):
            create.failed = True  # type: ignore[attr-defined]
            raise RuntimeError("the leader znode could not be written")
        return real_create(path, *args)

    zk._create = create  # type: ignore[method-assign]
    coord = coordinator(node, zk, reactor)
    coord.start()
    assert node.leader is None and node.role == Role.LOOKING
    assert election(zk) == [], "the resignation gave the election znode up"
    reactor.advance(1.0)
    assert node.role == Role.LEADER and len(election(zk)) == 1
    assert json.loads(zk.nodes[f"{ROOT}/leader"].data)["node_id"] == "a"


# Rule 5: promised_epoch := max(own, ZooKeeper's epoch) at start


# Fails if: ClusterCoordinator._reconcile skips `await self._promise_zookeeper_epoch()`.
def test_rule5_a_node_promises_zookeepers_epoch_at_start(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A learner (the voters are full) still promises the epoch ZooKeeper has handed out."""
    node, zk = single(tmp_path, reactor)
    zk.put(f"{ROOT}/epoch", b"7")
    zk.put(f"{ROOT}/config", json.dumps(
        {"replicas": 1, "write_quorum": 1, "voters": [["x", "ix"]]}).encode())
    coordinator(node, zk, reactor).start()
    assert node.rlog.promised_epoch == 7
    assert node.role == Role.LOOKING


# Rule 7: a ConnectionLoss during the epoch transaction


# Fails if: ClusterCoordinator._take_epoch treats a transaction lost to ConnectionLoss as
# ours (`except ConnectionLoss: return epoch`).
def test_rule7_an_epoch_transaction_lost_to_connectionloss_is_not_assumed_ours(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    node, zk = single(tmp_path, reactor)
    zk.fail_next("commit", ConnectionLoss(), applied=True)
    coordinator(node, zk, reactor).start()
    assert node.role == Role.LEADER
    assert zk.nodes[f"{ROOT}/epoch"].data == b"2"
    assert node.epoch == 2, "epoch 1 was written, but nobody knows by whom"


# Rule 13: a leader without a write quorum resigns


def three_voters(tmp_path: Any, reactor: InlineReactor
                 ) -> tuple[dict[str, Node], FakeZooKeeper, Peers, ClusterCoordinator]:
    """a leads b and c, its peers routed to their followers; ZooKeeper in memory."""
    nodes = {i: open_member(str(tmp_path / i), reactor, i) for i in ("a", "b", "c")}
    voters = [[i, n.identity.incarnation] for i, n in sorted(nodes.items())]
    zk = FakeZooKeeper()
    zk.put(f"{ROOT}/config", json.dumps(
        {"replicas": 3, "write_quorum": 2, "voters": voters}).encode())
    for i in ("b", "c"):
        nodes[i].bootstrap_voters = {v: inc for v, inc in voters}
        zk.put(f"{ROOT}/members/{i}", json.dumps(
            {"node_id": i, "url": f"http://{i}", "incarnation": nodes[i].identity.incarnation,
             "voter": True}).encode())
    peers = Peers()
    for i in ("b", "c"):
        peers.route_to(nodes[i])
    coord = coordinator(nodes["a"], zk, reactor, replicas=3, peers=peers)
    coord.start()
    reactor.advance(0.2)
    assert nodes["a"].role == Role.LEADER
    return nodes, zk, peers, coord


# Fails if: ClusterCoordinator._check_quorum no longer calls `self._resign()`.
def test_rule13_a_leader_cut_off_from_its_voters_resigns(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    nodes, zk, peers, _ = three_voters(tmp_path, reactor)
    peers.handlers.clear()  # cut off from b and c, still connected to ZooKeeper
    for _ in range(int(QUORUM_GRACE_SECONDS / 0.5) + 3):
        reactor.advance(0.5)
    assert nodes["a"].leader is None and nodes["a"].role != Role.LEADER
    assert f"{ROOT}/leader" not in zk.nodes


# Leader hand-over


# Fails if: ClusterCoordinator.transfer does not set `leader.paused` (a write taken
# while the target catches up is orphaned by the resignation: a 504).
def test_a_hand_over_refuses_new_writes_as_certainly_not_applied(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    nodes, zk, peers, coord = three_voters(tmp_path, reactor)
    del peers.handlers[nodes["b"].settings.url]  # b falls behind: the hand-over waits
    written: list[Any] = []
    nodes["a"].submit([{"op": "put", "key": b"j", "value": b"v"}]).addBoth(written.append)
    reactor.advance(0.01)
    assert written and isinstance(written[0], list), written
    handing = ensureDeferred(coord.transfer("b"))
    refused: list[Any] = []
    nodes["a"].submit([{"op": "put", "key": b"k", "value": b"v"}]).addErrback(refused.append)
    assert refused and refused[0].check(errors.NotReady), refused
    assert "handed over" in refused[0].getErrorMessage()
    assert not handing.called
    handing.addErrback(lambda _: None)


# Fails if: the hand-over's wait ignores writes queued but not yet in a log entry
# (`leader.waiting` alone): they are orphaned by the resignation (a 504).
def test_a_write_queued_before_a_hand_over_commits_before_the_leader_resigns(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    nodes, zk, _, coord = three_voters(tmp_path, reactor)
    answers: list[Any] = []
    nodes["a"].submit([{"op": "put", "key": b"k", "value": b"v"}]).addBoth(answers.append)
    handing = ensureDeferred(coord.transfer("b"))
    for _ in range(20):
        reactor.advance(0.002)
    assert handing.called and handing.result == "b"
    assert len(answers) == 1 and isinstance(answers[0], list), answers
    assert json.loads(zk.nodes[f"{ROOT}/transfer"].data)["target"] == "b"
    assert nodes["a"].leader is None

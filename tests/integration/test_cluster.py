"""A real 3-node cluster against a real ZooKeeper: replication, failover, fencing."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kazoo.client import KazooClient

from kvd.testing.cluster import Cluster
from kvd.testing.process import KvdProcess, request, wait_for
from kvd.testing.zookeeper import ZooKeeperServer
from tests.zkfixture import zookeeper, zookeeper_factory  # noqa: F401

SESSION_TIMEOUT = 2.0
_names = itertools.count()


@pytest.fixture
def cluster(tmp_path: Any, zookeeper: ZooKeeperServer) -> Iterator[Cluster]:  # noqa: F811
    with Cluster(str(tmp_path), zookeeper, name=f"c{next(_names)}",
                 session_timeout=SESSION_TIMEOUT, extra_args=["--snapshot-entries", "200"]) as c:
        yield c


class Writer(threading.Thread):
    """Writes unique values in a loop through the given nodes; records what was acknowledged."""

    def __init__(self, cluster: Cluster, nodes: list[KvdProcess], prefix: str) -> None:
        super().__init__(daemon=True)
        self.cluster, self.nodes, self.prefix = cluster, nodes, prefix
        self.acknowledged: dict[str, tuple[str, int]] = {}
        self.outcomes: dict[int, int] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        for n in itertools.count():
            if self.stopping.is_set():
                return
            node = self.nodes[n % len(self.nodes)]
            key, value = f"{self.prefix}{n % 20}", f"v{n}"
            try:
                response = self.cluster.put(node, key, value, timeout=8)
            except OSError:
                self.outcomes[0] = self.outcomes.get(0, 0) + 1
                continue
            self.outcomes[response.status] = self.outcomes.get(response.status, 0) + 1
            if response.status == 200:
                self.acknowledged[key] = (value, response.body["revision"])

    def finish(self) -> None:
        self.stopping.set()
        self.join(30)


def assert_everywhere(cluster: Cluster, acknowledged: dict[str, tuple[str, int]]) -> None:
    """Each acknowledged write (or a later one) is readable, linearizably, on every node."""
    for node in cluster.running():
        for key, (value, revision) in acknowledged.items():
            got = cluster.get(node, key)
            assert got.status == 200, (node.url, key, got.body)
            assert got.body["revision"] >= revision, (node.url, key, got.body, revision)
            if got.body["revision"] == revision:
                assert got.body["value"] == value


def test_a_write_through_each_node_is_readable_through_every_node(cluster: Cluster) -> None:
    written = {}
    for i, node in enumerate(cluster.nodes):
        response = cluster.put(node, f"key{i}", f"value{i}")
        assert response.status == 200, response.body
        assert response.headers["x-kvd-leader"]
        written[f"key{i}"] = (f"value{i}", response.body["revision"])
    assert_everywhere(cluster, written)


# Trust boundary. Fails if: the client listener routes /peer/* to the peer API.
def test_peers_have_a_listener_of_their_own_and_authenticate(cluster: Cluster) -> None:
    """A forged PREPARE on the client port is a 404, on the peer port without a MAC a 401;
    neither changes anything. Every member says where its peer listener is."""
    import msgpack

    leader = cluster.wait_leader()
    follower = next(n for n in cluster.nodes if n is not leader)
    before = cluster.status(follower)
    forged = msgpack.packb({"epoch": 99, "node_id": before["leader"]["node_id"],
                            "url": "http://x", "peer_url": "http://x", "incarnation": "x",
                            "prev": [0, 0], "entries": [], "commit": 0})
    headers = {"Content-Type": "application/msgpack"}
    on_client = request(follower.url, "POST", "/peer/v1/prepare", forged, headers)
    assert on_client.status == 404 and on_client.body["error"]["code"] == "not_found"
    on_peer = request(cluster.peer_url(follower), "POST", "/peer/v1/prepare", forged, headers)
    assert on_peer.status == 401
    after = cluster.status(follower)
    assert (after["epoch"], after["leader"]) == (before["epoch"], before["leader"])
    peer_urls = {m["peer_url"] for m in after["members"]}
    assert len(peer_urls) == 3 and not peer_urls & {n.url for n in cluster.nodes}
    statuses = [cluster.status(n) for n in cluster.nodes]
    assert sorted(s["role"] for s in statuses) == ["follower", "follower", "leader"]
    assert len({s["epoch"] for s in statuses}) == 1
    assert {m["role"] for m in statuses[0]["members"]} == {"leader", "follower"}


def test_stale_reads_and_min_revision_on_a_follower(cluster: Cluster) -> None:
    follower = cluster.followers()[0]
    revision = cluster.put(cluster.nodes[0], "k", "v").body["revision"]
    got = follower.call("GET", f"/api/v1/keys/k?consistency=stale&min_revision={revision}")
    assert (got.status, got.body["value"]) == (200, "v")
    assert int(got.headers["x-kvd-revision"]) >= revision


def test_leader_kill_9_fails_over_without_losing_acknowledged_writes(cluster: Cluster) -> None:
    leader = cluster.wait_leader()
    followers = [n for n in cluster.nodes if n is not leader]
    writer = Writer(cluster, cluster.nodes, "kill")
    writer.start()
    wait_for(lambda: len(writer.acknowledged) >= 10, 20, "writes before the kill")
    leader.kill()
    killed_at = time.monotonic()
    new_leader = cluster.wait_leader(SESSION_TIMEOUT + 10, not_this=leader)

    def writes_again() -> bool:
        return cluster.put(new_leader, "after-failover", "x", timeout=3).status == 200

    wait_for(writes_again, SESSION_TIMEOUT + 10, "a write through the new leader")
    failover = time.monotonic() - killed_at
    assert failover < SESSION_TIMEOUT + 2 + 3, f"failover took {failover:.1f}s"
    writer.finish()
    assert new_leader in followers
    assert_everywhere(cluster, writer.acknowledged)
    leader.start()
    cluster.wait_converged()
    assert cluster.status(leader)["role"] == "follower"
    assert_everywhere(cluster, writer.acknowledged)


def test_a_restarted_follower_catches_up_from_the_log_or_a_snapshot(cluster: Cluster) -> None:
    follower = cluster.followers()[0]
    follower.kill()
    leader = cluster.wait_leader()
    acknowledged = {}
    for i in range(600):  # past three snapshots of 200 entries: the log is compacted
        response = cluster.put(leader, f"catch{i % 50}", f"v{i}")
        assert response.status == 200
        acknowledged[f"catch{i % 50}"] = (f"v{i}", response.body["revision"])
    follower.start()
    cluster.wait_converged()
    assert "Installed a snapshot" in follower.log_tail(200)
    for key, (value, revision) in acknowledged.items():
        got = cluster.get(follower, key, stale=True)
        assert (got.body["value"], got.body["revision"]) == (value, revision)


def test_a_follower_briefly_down_catches_up_from_the_log(cluster: Cluster) -> None:
    follower = cluster.followers()[0]
    follower.kill()
    leader = cluster.wait_leader()
    for i in range(30):
        assert cluster.put(leader, f"brief{i}", "v").status == 200
    follower.start()
    cluster.wait_converged()
    assert "Installed a snapshot" not in follower.log_tail(200)
    assert cluster.get(follower, "brief29", stale=True).status == 200


def test_a_paused_old_leader_is_fenced_and_steps_down(cluster: Cluster) -> None:
    old = cluster.wait_leader()
    assert cluster.put(old, "before", "1").status == 200
    cluster.pause(old)
    try:
        new = cluster.wait_leader(SESSION_TIMEOUT + 15, not_this=old)
        assert cluster.put(new, "during", "2").status == 200
    finally:
        cluster.resume(old)
    # Whatever the old leader had in flight, or is asked now, cannot commit.
    response = cluster.put(old, "fenced", "3", timeout=10)
    if response.status == 200:
        # Only through forwarding to the new leader, never on its own epoch.
        assert cluster.status(old)["role"] != "leader"
    wait_for(lambda: cluster.status(old)["role"] in ("follower", "looking"), 15,
             "the old leader to step down")
    cluster.wait_converged()
    statuses = [cluster.status(n) for n in cluster.nodes]
    assert [s["role"] for s in statuses].count("leader") == 1
    assert len({s["epoch"] for s in statuses}) == 1


def test_zookeeper_restart_and_forced_session_expiry_lose_nothing(
        cluster: Cluster, zookeeper: ZooKeeperServer) -> None:  # noqa: F811
    acknowledged = {}
    leader = cluster.wait_leader()
    for i in range(10):
        response = cluster.put(leader, f"zk{i}", f"a{i}")
        acknowledged[f"zk{i}"] = (f"a{i}", response.body["revision"])
    zookeeper.stop()
    try:
        # Without ZooKeeper no write may be acknowledged falsely: 200 only if committed.
        response = cluster.put(cluster.nodes[0], "zk-down", "x", timeout=8)
        assert response.status in (200, 503, 504)
        if response.status == 200:
            acknowledged["zk-down"] = ("x", response.body["revision"])
    finally:
        zookeeper.start()
    leader = cluster.wait_leader(30)
    session_id, password = cluster.zookeeper_session(leader)
    zookeeper.expire_session(session_id, password)
    new_leader = cluster.wait_leader(30)
    wait_for(lambda: cluster.put(new_leader, "after-expiry", "y", timeout=3).status == 200,
             30, "writes after the session expiry")
    cluster.wait_converged()
    assert_everywhere(cluster, acknowledged)


def test_with_two_of_three_down_a_write_is_never_falsely_acknowledged(cluster: Cluster) -> None:
    leader = cluster.wait_leader()
    assert cluster.put(leader, "before", "1").status == 200
    for follower in cluster.followers():
        follower.kill()
    for _ in range(3):
        response = cluster.put(leader, "lonely", "x", timeout=15)
        assert response.status in (503, 504), response.body
        assert response.body["error"]["message"]
        if response.status == 504:
            assert response.body["error"]["outcome"] == "unknown"
    got = cluster.get(leader, "lonely", stale=True)
    assert got.status == 404


def test_a_node_started_while_zookeeper_is_down_answers_503_then_serves(
        tmp_path: Any, zookeeper_factory: Any) -> None:  # noqa: F811
    server = zookeeper_factory()
    c = Cluster(str(tmp_path), server, size=1, name="down-at-start",
                session_timeout=SESSION_TIMEOUT, extra_args=["--replicas", "1"])
    node = c.nodes[0]
    try:
        node.start(wait=False)
        wait_for(lambda: "Could not reach ZooKeeper" in node.log_tail(200)
                 or "unreachable" in node.log_tail(200), 30, "the unreachable warning")
        assert server.hosts in node.log_tail(200)
        ready = node.call("GET", "/readyz")
        assert ready.status == 503 and "ZooKeeper" in ready.body["reason"]
        write = node.call("PUT", "/api/v1/keys/k", {"value": "v"})
        assert write.status == 503 and write.headers["retry-after"]
        server.start()
        node.wait_ready(30)
        assert c.put(node, "k", "v").status == 200
    finally:
        c.stop()


# Safety rule 5. Fails if: synchronise counts NEWEPOCH answers whatever their incarnation
# and Follower._new_epoch answers as a voter on a new disk (both checks dropped).
def test_a_voter_wiped_and_restarted_under_its_old_id_does_not_count(cluster: Cluster) -> None:
    """X paused; writes acknowledged by L and Y; L and Y killed; Y's disk wiped and Y
    restarted with its old --node-id; X resumed: X and the new Y must not form a quorum
    on X's shorter log. Once L is back, every acknowledged write is there."""
    import shutil

    leader = cluster.wait_leader()
    x, y = [n for n in cluster.nodes if n is not leader]
    y_id = cluster.status(y)["node_id"]
    cluster.pause(x)
    acknowledged = {}
    for i in range(60):
        response = cluster.put(leader, f"wiped{i}", f"v{i}")
        assert response.status == 200, response.body
        acknowledged[f"wiped{i}"] = (f"v{i}", response.body["revision"])
    epoch = cluster.status(leader)["epoch"]
    leader.kill()
    y.kill()
    shutil.rmtree(y.data_dir)
    y.args = [*y.args, "--node-id", y_id]
    y.start(wait=False)

    def registered() -> bool:
        try:
            return any(m["node_id"] == y_id for m in cluster.status(y)["members"])
        except Exception:
            return False

    wait_for(registered, 20, "the wiped node registered")
    cluster.resume(x)

    def tried_twice() -> bool:
        try:
            return cluster.status(x)["epoch"] >= epoch + 2
        except Exception:
            return False

    # Each election X stands in takes an epoch; with Y counted, the first would do.
    wait_for(tried_twice, 30, "X stood for election twice without a quorum")
    assert cluster.status(x)["role"] != "leader"
    leader.start(wait=False)
    cluster.wait_leader(SESSION_TIMEOUT + 20)
    assert leader.proc is not None and leader.proc.poll() is None, leader.log_tail()
    assert_everywhere(cluster, acknowledged)
    members = {m["node_id"]: m["role"] for m in cluster.status(leader)["members"]}
    assert members[y_id] == "learner"


# Fails if: a node does not publish its last index in its members/ znode (followers
# then show null for every other member).
def test_every_node_shows_every_members_last_index_and_lag(cluster: Cluster) -> None:
    leader = cluster.wait_leader()
    for i in range(20):
        assert cluster.put(leader, f"progress{i}", "v").status == 200
    last = cluster.status(leader)["commit_index"]
    for node in cluster.running():
        def caught_up(node: KvdProcess = node) -> bool:
            members = cluster.status(node)["members"]
            return len(members) == 3 and all(
                m["last_index"] is not None and m["last_index"] >= last and m["lag"] == 0
                for m in members)

        wait_for(caught_up, 10, f"{node.url} sees every member caught up")
    client = KazooClient(hosts=cluster.zookeeper.hosts)
    client.start(10)
    try:
        for child in client.get_children(f"/kvd/{cluster.name}/members"):
            data, _ = client.get(f"/kvd/{cluster.name}/members/{child}")
            assert json.loads(data)["last_index"] >= last
    finally:
        client.stop()
        client.close()


def _election_order(cluster: Cluster) -> list[str]:
    """Node ids in the order of their election znodes (the next leader first)."""
    client = KazooClient(hosts=cluster.zookeeper.hosts)
    client.start(10)
    try:
        path = f"/kvd/{cluster.name}/election"
        children = sorted(client.get_children(path), key=lambda c: c.rsplit("-n_", 1)[1])
        return [json.loads(client.get(f"{path}/{c}")[0])["node_id"] for c in children]
    finally:
        client.stop()
        client.close()


# Fails if: a candidate first in the election queue ignores the transfer hint (the
# node behind the leader in the queue, not the target, would lead).
def test_leader_transfer_hands_over_to_the_target_and_loses_no_write(
        cluster: Cluster) -> None:
    leader = cluster.wait_leader()
    ids = {cluster.status(n)["node_id"]: n for n in cluster.running()}
    order = wait_for(lambda: (o := _election_order(cluster)) and len(o) == 3 and o, 10,
                     "three nodes in the election queue")
    target = order[-1]  # last in the queue: without the hint it would not lead next
    writer = Writer(cluster, [n for n in cluster.running() if n is not ids[target]], "moving")
    writer.start()
    try:
        wait_for(lambda: len(writer.acknowledged) >= 5, 10, "writes flowing")
        answer = leader.call("POST", "/api/v1/leader/transfer", {"target": target})
        assert answer.status == 200 and answer.body == {"target": target}, answer
        new_leader = cluster.wait_leader(not_this=leader)
        assert cluster.status(new_leader)["node_id"] == target
        done = len(writer.acknowledged)
        wait_for(lambda: len(writer.acknowledged) > done or writer.outcomes.get(200, 0) > 50,
                 10, "writes after the hand-over")
    finally:
        writer.finish()
    assert writer.outcomes.get(504, 0) == 0, writer.outcomes  # nothing left unanswered
    assert_everywhere(cluster, writer.acknowledged)
    follower = next(n for n in cluster.running() if n is not new_leader)
    assert follower.call("POST", "/api/v1/leader/transfer").status == 503

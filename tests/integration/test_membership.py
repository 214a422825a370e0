"""Changes of the voter set on a real 3-node cluster and a real ZooKeeper (rule 4)."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kvd.testing.cluster import Cluster
from kvd.testing.process import KvdProcess, wait_for
from kvd.testing.zookeeper import ZooKeeperServer
from tests.integration.test_cluster import Writer, assert_everywhere
from tests.zkfixture import zookeeper, zookeeper_factory  # noqa: F401

SESSION_TIMEOUT = 2.0
_names = itertools.count()


@pytest.fixture
def cluster(tmp_path: Any, zookeeper: ZooKeeperServer) -> Iterator[Cluster]:  # noqa: F811
    with Cluster(str(tmp_path), zookeeper, name=f"m{next(_names)}",
                 session_timeout=SESSION_TIMEOUT) as c:
        yield c


def add_learner(cluster: Cluster) -> tuple[KvdProcess, str]:
    """A fourth node: it joins as a learner by itself. Returns it and its id."""
    node = cluster._make_node(len(cluster.nodes))
    cluster.nodes.append(node)
    node.start()
    node_id = cluster.status(node)["node_id"]
    leader = cluster.wait_leader()

    def caught_up() -> bool:
        members = {m["node_id"]: m for m in cluster.status(leader)["members"]}
        row = members.get(node_id)
        return row is not None and row["role"] == "learner" and row["lag"] == 0

    wait_for(caught_up, 20, "the new node caught up as a learner")
    return node, node_id


def members(node: KvdProcess) -> dict[str, Any]:
    answer = node.call("GET", "/api/v1/members", timeout=5)
    assert answer.status == 200, answer.body
    return dict(answer.body)


def kvctl(cluster: Cluster, *argv: str) -> subprocess.CompletedProcess[str]:
    endpoints = ",".join(n.url for n in cluster.running())
    return subprocess.run([sys.executable, "-m", "kvd.client.kvctl", "--endpoints", endpoints,
                           *argv], capture_output=True, text=True, timeout=60)


def test_replace_a_dead_voter_by_a_fresh_node_then_lose_another_original(
        cluster: Cluster) -> None:
    """Without the replacement, the new node would stay a learner and the loss of a
    second original voter would leave no write quorum."""
    leader = cluster.wait_leader()
    dead, survivor = [n for n in cluster.nodes if n is not leader]
    dead_id = cluster.status(dead)["node_id"]
    fresh, fresh_id = add_learner(cluster)
    writer = Writer(cluster, [leader], "replace")
    writer.start()
    dead.kill()
    shutil.rmtree(dead.data_dir)  # its disk is gone for good
    listed = kvctl(cluster, "member", "list")
    assert listed.returncode == 0, listed.stderr
    assert fresh_id in listed.stdout and "learner" in listed.stdout
    # A learner's promotion needs it caught up; a replace of a non-voter is refused.
    assert kvctl(cluster, "member", "replace", fresh_id, dead_id).returncode != 0
    done = kvctl(cluster, "-w", "json", "member", "replace", dead_id, fresh_id)
    assert done.returncode == 0, done.stderr
    assert dead_id not in done.stdout and fresh_id in done.stdout
    for node in (leader, survivor, fresh):
        def sees_new_set(node: KvdProcess = node) -> bool:
            answer = members(node)
            return fresh_id in answer["voters"] and dead_id not in answer["voters"] and (
                "joint_with" not in answer)
        wait_for(sees_new_set, 20, "every node holds the new voter set alone")
    row = {m["node_id"]: m for m in members(leader)["members"]}[fresh_id]
    assert row["voter"] is True and row["role"] == "follower"
    # Another original voter goes: the leader and the new node are a write quorum.
    survivor.kill()
    assert cluster.put(leader, "after", "both-gone").status == 200
    writer.finish()
    assert writer.acknowledged, writer.outcomes
    cluster.nodes.remove(dead)
    cluster.nodes.remove(survivor)
    assert_everywhere(cluster, writer.acknowledged)


# Fails if: a learner that stopped answering may be promoted (VoterChanges._ready
# checks the lag alone): the new set could then not commit.
def test_a_change_is_refused_for_an_unknown_or_unready_node_and_off_the_leader(
        tmp_path: Any, zookeeper: ZooKeeperServer) -> None:  # noqa: F811
    # A ZooKeeper session that outlives a 2.5 s pause: the paused learner stays a
    # member, silent on the peer link only.
    cluster = Cluster(str(tmp_path), zookeeper, name=f"m{next(_names)}",
                      session_timeout=8.0).start()
    try:
        _refusals(cluster)
    finally:
        cluster.stop()


def _refusals(cluster: Cluster) -> None:
    leader = cluster.wait_leader()
    follower = next(n for n in cluster.nodes if n is not leader)
    assert follower.call("POST", "/api/v1/members/x/promote").status == 503
    assert leader.call("POST", "/api/v1/members/nobody/promote").status == 400
    voters = members(leader)["voters"]
    assert leader.call("POST", f"/api/v1/members/{voters[0]}/promote").status == 400
    assert leader.call("DELETE", "/api/v1/members/nobody").status == 400
    assert leader.call("POST", "/api/v1/members/replace", {"old": 1}).status == 400
    fresh, fresh_id = add_learner(cluster)
    cluster.pause(fresh)
    try:
        time.sleep(2.5)  # a duration, not a wait: longer than PROMOTE_MAX_SILENCE
        refused = leader.call("POST", f"/api/v1/members/{fresh_id}/promote", timeout=10)
        assert refused.status == 400 and "not caught up" in refused.body["error"]["message"]
        assert fresh_id not in members(leader)["voters"]
    finally:
        cluster.resume(fresh)


def test_grow_by_a_promoted_learner_then_remove_the_leader(cluster: Cluster) -> None:
    """3 -> 4 voters (W 3), then the leader leaves (W 2): it hands over, stays a
    learner, and is not elected again when the next leader dies."""
    leader = cluster.wait_leader()
    leader_id = cluster.status(leader)["node_id"]
    fresh, fresh_id = add_learner(cluster)
    writer = Writer(cluster, [n for n in cluster.nodes if n is not leader], "grow")
    writer.start()
    grown = leader.call("POST", f"/api/v1/members/{fresh_id}/promote", timeout=15)
    assert grown.status == 200, grown.body
    assert grown.body["write_quorum"] == 3 and fresh_id in grown.body["voters"]
    removed = leader.call("DELETE", f"/api/v1/members/{leader_id}", timeout=15)
    assert removed.status == 200, removed.body
    assert leader_id not in removed.body["voters"] and removed.body["write_quorum"] == 2
    new_leader = cluster.wait_leader(20, not_this=leader)
    assert cluster.status(new_leader)["node_id"] != leader_id
    assert cluster.put(new_leader, "after", "removed").status == 200
    writer.finish()
    assert writer.acknowledged, writer.outcomes
    row = {m["node_id"]: m for m in members(new_leader)["members"]}[leader_id]
    assert row["voter"] is False and row["role"] == "learner"
    # The removed node still follows the log as a learner and is never elected.
    fresh_leader = {m["node_id"]: m for m in members(new_leader)["members"]}
    assert fresh_leader[fresh_id]["voter"] is True
    new_leader.kill()
    other = cluster.wait_leader(SESSION_TIMEOUT + 20, not_this=new_leader)
    assert cluster.status(other)["node_id"] != leader_id
    cluster.nodes.remove(new_leader)
    assert_everywhere(cluster, writer.acknowledged)


class TimedWriter(Writer):
    """A Writer that notes when each acknowledgement came (monotonic seconds)."""

    def __init__(self, cluster: Cluster, nodes: list[KvdProcess], prefix: str) -> None:
        super().__init__(cluster, nodes, prefix)
        self.times: list[float] = []
        self._seen = 0

    def run(self) -> None:
        import threading

        def note() -> None:
            while not self.stopping.is_set():
                acked = self.outcomes.get(200, 0)
                if acked > self._seen:
                    self._seen = acked
                    self.times.append(time.monotonic())
                time.sleep(0.001)

        threading.Thread(target=note, daemon=True).start()
        super().run()

    def longest_gap(self) -> float:
        return max((b - a for a, b in itertools.pairwise(self.times)), default=0.0)


def test_a_rolling_restart_leader_last_loses_no_write(cluster: Cluster) -> None:
    """SIGTERM each node in turn and start it again, the leader last, while a client
    writes through every node; the longest gap between acknowledgements is printed
    (a figure for the notes, not an assertion)."""
    leader = cluster.wait_leader()
    order = [n for n in cluster.nodes if n is not leader] + [leader]
    writer = TimedWriter(cluster, list(cluster.nodes), "rolling")
    writer.start()
    try:
        wait_for(lambda: len(writer.acknowledged) >= 5, 10, "writes flowing")
        for node in order:
            node.stop()
            node.start()
            cluster.wait_leader(20)
            done = writer.outcomes.get(200, 0)
            wait_for(lambda done=done: writer.outcomes.get(200, 0) > done + 5, 20,
                     "writes after the restart")
    finally:
        writer.finish()
    print(f"rolling restart: {writer.outcomes.get(200, 0)} writes acknowledged, longest "
          f"gap {writer.longest_gap():.3f} s, outcomes {writer.outcomes}")
    assert_everywhere(cluster, writer.acknowledged)


def test_a_change_interrupted_between_its_two_entries_ends_in_one_configuration(
        tmp_path: Any, zookeeper: ZooKeeperServer) -> None:  # noqa: F811
    """The joint entry commits, then the leader dies before the new set alone is in
    the log (held there by a test-only file): the next leader finishes the change,
    and every node ends with the new set alone."""
    from kvd.coord.cluster import HOLD_JOINT_ENV

    hold = tmp_path / "hold-joint"
    cluster = Cluster(str(tmp_path / "c"), zookeeper, name=f"m{next(_names)}",
                      session_timeout=SESSION_TIMEOUT)
    for node in cluster.nodes:
        node.env = {**node.env, HOLD_JOINT_ENV: str(hold)}
    cluster.start()
    try:
        leader = cluster.wait_leader()
        leader_id = cluster.status(leader)["node_id"]
        fresh, fresh_id = add_learner(cluster)
        old_voters = members(leader)["voters"]
        gone = next(i for i in old_voters if i != leader_id)
        hold.write_text("")
        answer = leader.call("POST", "/api/v1/members/replace",
                             {"old": gone, "new": fresh_id}, timeout=15)
        assert answer.status == 504, answer.body  # joint, and held there
        for node in cluster.running():
            assert members(node).get("joint_with") == old_voters
        leader.kill()
        hold.unlink()
        cluster.nodes.remove(leader)
        cluster.wait_leader(SESSION_TIMEOUT + 20)
        expected = sorted({*old_voters, fresh_id} - {gone})
        for node in cluster.running():
            def finished(node: KvdProcess = node) -> bool:
                answer = members(node)
                return "joint_with" not in answer and answer["voters"] == expected
            wait_for(finished, 20, "the new leader finished the change")
        # The next leader may have been the voter the change removed: it then
        # resigns once the change is done (its writes in flight answer 504), and a
        # voter of the new set leads.
        def written() -> bool:
            writer_node = cluster.wait_leader(SESSION_TIMEOUT + 20)
            if cluster.status(writer_node)["node_id"] not in expected:
                return False
            return cluster.put(writer_node, "after", "finished").status == 200

        wait_for(written, 30, "a write under a leader of the new set")
    finally:
        cluster.stop()


# Fails if: a follower judges a PREPARE's sender by its own log alone (mutant
# r4-follower-judges-by-its-own-log-only): the voter that missed the change refuses
# the new leader for ever, and once the last other voter goes nothing commits.
def test_a_voter_that_missed_a_change_catches_up_under_a_leader_only_the_new_set_names(
        cluster: Cluster) -> None:
    """The wedge a review found: a is replaced by d while c is down; d leads; a and
    the old leader go. c and d are 2 of the 3 voters, so they must commit."""
    leader = cluster.wait_leader()
    a, c = [n for n in cluster.nodes if n is not leader]
    a_id, c_id = (cluster.status(n)["node_id"] for n in (a, c))
    d, d_id = add_learner(cluster)
    assert cluster.put(leader, "before", "the-change").status == 200
    # Stopped, not paused: a paused c would take the old leader's PREPAREs still
    # queued on its socket when it resumes, and so learn of the change after all.
    c.kill()
    # More entries than one PREPARE carries (1,024) between c's log and the change:
    # c takes the change from a snapshot that d takes for it.
    for n in range(1100):
        assert cluster.put(leader, f"gap{n % 50}", f"v{n}").status == 200
    done = leader.call("POST", "/api/v1/members/replace", {"old": a_id, "new": d_id},
                       timeout=20)
    assert done.status == 200, done.body
    handed = leader.call("POST", "/api/v1/leader/transfer", {"target": d_id}, timeout=15)
    assert handed.status == 200, handed.body
    wait_for(lambda: cluster.status(d).get("role") == "leader", 20, "d leads")
    assert cluster.put(d, "during", "c-stopped").status == 200
    a.kill()
    c.start()  # ready once it follows d, which it can only by taking the change from d
    wait_for(lambda: (v := members(c)["voters"]) and d_id in v and a_id not in v, 20,
             "c holds the change that names d")
    leader.kill()
    answer = cluster.put(d, "after", "c-and-d")
    assert answer.status == 200, answer.body
    for key, value in (("before", "the-change"), ("during", "c-stopped"),
                       ("after", "c-and-d")):
        got = cluster.get(c, key)
        assert got.status == 200 and got.body["value"] == value, (key, got.body)
    assert c_id in members(d)["voters"]
    assert cluster.get(c, "gap49").body["value"] == "v1099"

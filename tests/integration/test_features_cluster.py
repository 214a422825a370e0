"""Transactions, watches, TTLs and kvctl against a real 3-node cluster."""

from __future__ import annotations

import http.client
import itertools
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kvd.testing.cluster import Cluster
from kvd.testing.process import KvdProcess, wait_for
from kvd.testing.zookeeper import ZooKeeperServer
from tests.zkfixture import zookeeper  # noqa: F401

SESSION_TIMEOUT = 2.0
_names = itertools.count()


@pytest.fixture
def cluster(tmp_path: Any, zookeeper: ZooKeeperServer) -> Iterator[Cluster]:  # noqa: F811
    with Cluster(str(tmp_path), zookeeper, name=f"f{next(_names)}",
                 session_timeout=SESSION_TIMEOUT) as c:
        yield c


def test_racing_transactions_exactly_one_wins(cluster: Cluster) -> None:
    assert cluster.put(cluster.nodes[0], "seat", "free").status == 200
    claim = {
        "compare": [{"key": "seat", "target": "value", "value": "free"}],
        "success": [{"op": "put", "key": "seat", "value": "taken"}],
        "failure": [{"op": "get", "key": "seat"}],
    }
    answers: list[Any] = []

    def racer(node: KvdProcess, who: str) -> None:
        body = {**claim, "success": [{"op": "put", "key": "seat", "value": who}]}
        answers.append(node.call("POST", "/api/v1/txn", body))

    racers = [threading.Thread(target=racer, args=(node, f"racer{i}"))
              for i, node in enumerate(cluster.nodes * 3)]
    for thread in racers:
        thread.start()
    for thread in racers:
        thread.join(30)
    assert [a.status for a in answers] == [200] * len(racers)
    winners = [a for a in answers if a.body["succeeded"]]
    assert len(winners) == 1
    seat = cluster.get(cluster.nodes[2], "seat").body
    assert seat["version"] == 2 and seat["revision"] == winners[0].body["revision"]
    for loser in (a for a in answers if not a.body["succeeded"]):
        assert loser.body["results"][0]["kv"]["value"] == seat["value"]


class WatchReader(threading.Thread):
    """Reads a watch stream (newline-delimited JSON) from one node."""

    def __init__(self, node: KvdProcess, query: str) -> None:
        super().__init__(daemon=True)
        self.node, self.query = node, query
        self.events: list[dict[str, Any]] = []
        self.status = 0

    def run(self) -> None:
        conn = http.client.HTTPConnection(f"127.0.0.1:{self.node.port}", timeout=60)
        try:
            conn.request("GET", f"/api/v1/watch?{self.query}")
            response = conn.getresponse()
            self.status = response.status
            for line in response:
                if line.strip():
                    self.events.append(json.loads(line))
        except OSError:
            pass  # the node went away: the events so far are what the test checks


def test_a_watch_on_a_follower_spans_a_leader_kill_without_loss_or_repeat(
        cluster: Cluster) -> None:
    leader = cluster.wait_leader()
    follower = [n for n in cluster.nodes if n is not leader][0]
    other = [n for n in cluster.nodes if n not in (leader, follower)][0]
    reader = WatchReader(follower, "prefix=w/&start_revision=1")
    reader.start()
    revisions = []
    for i in range(20):
        revisions.append(cluster.put(leader, f"w/{i % 3}", f"a{i}").body["revision"])
    leader.kill()
    cluster.wait_leader(SESSION_TIMEOUT + 15, not_this=leader)

    def write(i: int) -> bool:
        response = cluster.put(other, f"w/{i % 3}", f"b{i}", timeout=5)
        if response.status == 200:
            revisions.append(response.body["revision"])
        return response.status == 200

    for i in range(20):
        wait_for(lambda i=i: write(i), 20, "a write after the failover")
    wait_for(lambda: len(reader.events) >= 40, 20, "every event on the watch")
    seen = [e["revision"] for e in reader.events]
    assert reader.status == 200
    assert seen == sorted(set(seen)), "events repeated or out of order"
    assert seen == revisions, "events lost"


def test_a_ttl_key_expires_exactly_once_across_a_leader_change(cluster: Cluster) -> None:
    leader = cluster.wait_leader()
    follower = [n for n in cluster.nodes if n is not leader][0]
    reader = WatchReader(follower, "key=lease")
    reader.start()
    wait_for(lambda: reader.status == 200, 10, "the watch to open")
    response = leader.call("PUT", "/api/v1/keys/lease", {"value": "held", "ttl": 4})
    assert response.status == 200
    leader.kill()
    started = time.monotonic()
    cluster.wait_leader(SESSION_TIMEOUT + 15, not_this=leader)
    assert cluster.get(follower, "lease").status == 200
    wait_for(lambda: cluster.get(follower, "lease").status == 404, 30, "the key to expire")
    # The new leader re-armed the full TTL on its own clock: never before 4 s.
    assert time.monotonic() - started >= 4
    wait_for(lambda: any(e["type"] == "delete" for e in reader.events), 10,
             "the delete event on the watch")
    leader.start()
    cluster.wait_converged()
    deletes = [e for e in reader.events if e["type"] == "delete"]
    assert len(deletes) == 1
    for node in cluster.nodes:
        assert cluster.get(node, "lease").status == 404


def test_a_watch_from_a_compacted_revision_is_410(tmp_path: Any,
                                                   zookeeper: ZooKeeperServer  # noqa: F811
                                                   ) -> None:
    c = Cluster(str(tmp_path), zookeeper, name=f"f{next(_names)}",
                session_timeout=SESSION_TIMEOUT, extra_args=["--watch-history", "5"])
    try:
        c.start()
        leader = c.wait_leader()
        for i in range(10):
            assert c.put(leader, "k", str(i)).status == 200
        gone = leader.call("GET", "/api/v1/watch?key=k&start_revision=1")
        assert gone.status == 410
        assert gone.body["error"]["compact_revision"] == 5
    finally:
        c.stop()


def kvctl(cluster: Cluster, *args: str, endpoints: list[KvdProcess] | None = None
          ) -> subprocess.CompletedProcess[str]:
    urls = ",".join(n.url for n in (endpoints or cluster.nodes))
    return subprocess.run([sys.executable, "-m", "kvd.client.kvctl", "--endpoints", urls,
                           *args], capture_output=True, text=True, timeout=60)


def test_kvctl_against_a_cluster_with_one_node_down(cluster: Cluster) -> None:
    down = cluster.nodes[0]
    down.kill()
    cluster.wait_leader(SESSION_TIMEOUT + 15)
    put = kvctl(cluster, "put", "tool/a", "1")
    assert (put.returncode, put.stdout.split()[0]) == (0, "OK"), put.stderr
    assert kvctl(cluster, "put", "tool/b", "2").returncode == 0
    got = kvctl(cluster, "-w", "json", "get", "tool/", "--prefix")
    assert got.returncode == 0, got.stderr
    assert [kv["value"] for kv in json.loads(got.stdout)["kvs"]] == ["1", "2"]
    assert kvctl(cluster, "get", "tool/missing").returncode == 1
    assert kvctl(cluster, "put", "tool/a", "x", "--prev-revision", "999").returncode == 1
    status = kvctl(cluster, "status")
    assert status.returncode == 0
    assert "unreachable" in status.stdout and "leader" in status.stdout
    assert kvctl(cluster, "del", "tool/a").returncode == 0
    only_down = kvctl(cluster, "get", "tool/b", endpoints=[down])
    assert only_down.returncode == 3 and "unavailable" in only_down.stderr

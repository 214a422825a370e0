"""Leases in real processes: through kvctl, across a restart and a failover."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from kvd.testing.cluster import Cluster
from kvd.testing.process import KvdProcess, wait_for
from kvd.testing.zookeeper import ZooKeeperServer
from tests.zkfixture import zookeeper, zookeeper_factory  # noqa: F401


def kvctl(node: KvdProcess, *args: str) -> Any:
    run = subprocess.run([sys.executable, "-m", "kvd.client.kvctl", "--endpoints", node.url,
                          "-w", "json", *args], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout) if run.stdout.strip() else None


def test_a_lease_and_its_keys_survive_a_restart_then_go_with_a_revoke(tmp_path: Any) -> None:
    node = KvdProcess(str(tmp_path), args=["--standalone"]).start()
    try:
        lease = kvctl(node, "lease", "grant", "600")["id"]
        kvctl(node, "put", "held/a", "1", "--lease", str(lease))
        kvctl(node, "put", "held/b", "2", "--lease", str(lease))
        node.stop()
        node.start()
        shown = kvctl(node, "lease", "ttl", str(lease))
        assert shown["granted_ttl"] == 600 and 0 < shown["ttl"] <= 600
        assert shown["keys"] == [{"key": "held/a"}, {"key": "held/b"}]
        revoked = kvctl(node, "lease", "revoke", str(lease))
        assert revoked["deleted"] == 2
        assert kvctl(node, "get", "held/", "--prefix")["kvs"] == []
        assert kvctl(node, "lease", "list") == {"leases": []}
    finally:
        node.stop()


# Fails if: a new leader does not re-arm the leases it inherits (rule 12), so a
# lease whose leader died lives for ever.
def test_a_new_leader_expires_a_lease_granted_under_the_old_one(
        tmp_path: Any, zookeeper: ZooKeeperServer) -> None:  # noqa: F811
    cluster = Cluster(str(tmp_path), zookeeper, name="leases", session_timeout=2.0).start()
    try:
        follower = cluster.followers()[0]
        granted = follower.call("POST", "/v3/lease/grant", {"TTL": 4})
        assert granted.status == 200, granted.body
        key = "bGVhc2VkLWtleQ=="  # base64 of "leased-key"
        put = follower.call("POST", "/v3/kv/put",
                            {"key": key, "value": "dg==", "lease": granted.body["ID"]})
        assert put.status == 200, put.body
        old = cluster.wait_leader()
        old.kill()
        leader = cluster.wait_leader(not_this=old)

        def gone() -> bool:
            answer = leader.call("POST", "/v3/kv/range", {"key": key})
            return answer.status == 200 and "kvs" not in answer.body
        wait_for(gone, 30, "the lease expires under the new leader")
        live = leader.call("POST", "/v3/lease/timetolive", {"ID": granted.body["ID"]})
        assert live.body["TTL"] == "-1"
    finally:
        cluster.stop()

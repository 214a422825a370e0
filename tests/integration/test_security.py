"""The trust boundary with real processes and a real ZooKeeper: ZooKeeper ACLs."""

from __future__ import annotations

import os
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError

from kvd.testing.cluster import Cluster
from kvd.testing.process import KvdProcess
from kvd.testing.zookeeper import ZooKeeperServer
from tests.zkfixture import zookeeper  # noqa: F401


# Fails if: ZooKeeperService ignores its digest (the tree is created world-writable).
def test_with_a_zookeeper_identity_nobody_else_can_change_the_tree_or_read_the_secret(
    tmp_path: Any, zookeeper: ZooKeeperServer  # noqa: F811
) -> None:
    auth = tmp_path / "zookeeper-auth"
    auth.write_text("kvd:a-password-for-tests\n")
    os.chmod(auth, 0o600)
    node = KvdProcess(str(tmp_path / "node"), args=[
        "--zookeeper", zookeeper.hosts, "--cluster", "acl", "--replicas", "1",
        "--session-timeout", "2", "--zookeeper-auth-file", str(auth)])
    cluster = Cluster(str(tmp_path), zookeeper, size=1, name="acl", nodes=[node])
    try:
        cluster.start()
        assert cluster.put(node, "k", "v").status == 200
        stranger = KazooClient(hosts=zookeeper.hosts)
        stranger.start(10)
        try:
            election = stranger.get_children("/kvd/acl/election")
            assert election, "the leader's election znode"
            with pytest.raises(NoAuthError):
                stranger.delete(f"/kvd/acl/election/{election[0]}")
            with pytest.raises(NoAuthError):
                stranger.set("/kvd/acl/epoch", b"999")
            with pytest.raises(NoAuthError):
                stranger.get("/kvd/acl/secret")
            with pytest.raises(NoAuthError):
                stranger.delete("/kvd/acl/leader")
        finally:
            stranger.stop()
            stranger.close()
        assert cluster.put(node, "k", "v2").status == 200
    finally:
        cluster.stop()

"""Backups: ``kvctl snapshot save`` from a live cluster, ``restore`` into a new one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from kvd.testing.cluster import Cluster
from kvd.testing.process import KvdProcess
from kvd.testing.zookeeper import ZooKeeperServer
from tests.zkfixture import zookeeper  # noqa: F401


def kvctl(*args: str, endpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    prefix = [] if endpoint is None else ["--endpoints", endpoint]
    return subprocess.run([sys.executable, "-m", "kvd.client.kvctl", *prefix, *args],
                          capture_output=True, text=True, timeout=60)


# Fails if: a backup or its restore loses a key, a revision or a user, or the new
# cluster does not continue the revision counter.
def test_a_backup_restored_into_three_empty_dirs_is_a_new_cluster_holding_it_all(
        tmp_path: Any, zookeeper: ZooKeeperServer) -> None:  # noqa: F811
    old = Cluster(str(tmp_path / "old"), zookeeper, name="backup-old", session_timeout=2.0,
                  extra_args=["--snapshot-entries", "40"])
    written: dict[str, tuple[str, int]] = {}
    try:
        old.start()
        leader = old.wait_leader()
        # Two leaders' epochs in the history: the old epoch is above the new cluster's first.
        for i in range(30):
            answer = old.put(leader, f"k{i}", f"v{i}")
            written[f"k{i}"] = (f"v{i}", answer.body["revision"])
        leader.kill()
        leader = old.wait_leader(not_this=leader)
        for i in range(30, 60):
            answer = old.put(leader, f"k{i % 40}", f"w{i}")
            written[f"k{i % 40}"] = (f"w{i}", answer.body["revision"])
        assert leader.call("PUT", "/api/v1/auth/users/ann", {"password": "pw"}).status == 200
        backup = str(tmp_path / "backup.snap")
        follower = next(n for n in old.running() if n is not leader)
        saved = kvctl("-w", "json", "snapshot", "save", backup, endpoint=follower.url)
        assert saved.returncode == 0, saved.stderr
        info = json.loads(saved.stdout)
        revision = max(r for _, r in written.values())
        assert info["revision"] == revision and info["keys"] == 40
    finally:
        old.stop()
    status = kvctl("-w", "json", "snapshot", "status", backup)
    assert status.returncode == 0 and json.loads(status.stdout) == info

    nodes = []
    for i in range(3):
        directory = str(tmp_path / "new" / f"node{i}" / "data")
        restored = kvctl("snapshot", "restore", backup, "--data-dir", directory)
        assert restored.returncode == 0, restored.stderr
        nodes.append(KvdProcess(str(tmp_path / "new" / f"node{i}"), args=[
            "--zookeeper", zookeeper.hosts, "--cluster", "backup-new",
            "--session-timeout", "2"]))
    refused = kvctl("snapshot", "restore", backup, "--data-dir", nodes[0].data_dir)
    assert refused.returncode == 2 and "not an empty directory" in refused.stderr
    new = Cluster(str(tmp_path / "new"), zookeeper, name="backup-new", nodes=nodes)
    try:
        new.start()
        leader = new.wait_leader()
        for node in new.running():
            for key, (value, mod_revision) in written.items():
                got = new.get(node, key)
                assert (got.body["value"], got.body["revision"]) == (value, mod_revision)
        assert new.put(leader, "after", "x").body["revision"] == revision + 1
        users = leader.call("GET", "/api/v1/auth/users").body["users"]
        assert [u["name"] for u in users] == ["ann"]
    finally:
        new.stop()


def test_a_torn_or_foreign_file_is_refused_and_nothing_is_created(tmp_path: Any) -> None:
    bad = tmp_path / "bad.snap"
    bad.write_bytes(b"\x00" * 64)
    target = str(tmp_path / "target")
    assert kvctl("snapshot", "status", str(bad)).returncode == 2
    refused = kvctl("snapshot", "restore", str(bad), "--data-dir", target)
    assert refused.returncode == 2 and "not a readable kvd backup" in refused.stderr
    assert not os.path.exists(target)

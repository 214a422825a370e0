"""
kvd as the benchmarks run it: standalone nodes (``standalone.py``) and a
3-node cluster with its ZooKeeper (``cluster_vs_etcd.py``), on loopback.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

from harness import (
    HOST,
    BenchError,
    Conn,
    Line,
    System,
    delta,
    free_port,
    ratio,
    run_quiet,
)

from kvd.testing.cluster import Cluster
from kvd.testing.process import KvdProcess, request, wait_for
from kvd.testing.zookeeper import ZooKeeperServer

# Standalone nodes


def standalone_node(directory: str, args: list[str]) -> KvdProcess:
    """A standalone kvd node in ``directory`` on a free loopback port, not started yet."""
    return KvdProcess(directory, port=free_port(), args=["--standalone", *args])


def stop_nodes(nodes: Iterable[KvdProcess]) -> None:
    """Stop every node, warning about (and going past) those that would not stop."""
    for node in nodes:
        try:
            node.stop(timeout=15)
        except Exception as e:  # keep stopping the others
            print(f"warning: could not stop {node.url}: {e!r}", file=sys.stderr)


def node_pid(node: KvdProcess) -> int:
    """The pid of a started node (twistd -n does not fork)."""
    assert node.proc is not None
    return node.proc.pid


def revision(node: KvdProcess) -> int:
    """The store revision, which after a load of unique keys is the number of keys."""
    try:
        return int(node.call("GET", "/healthz", timeout=5).headers.get("x-kvd-revision", 0))
    except (OSError, ValueError):
        return -1


# A cluster


class KvdSystem(System):
    """ZooKeeper and ``kvd.testing.cluster.Cluster`` of 3 ``twistd kvd`` nodes."""

    name = "kvd"
    script = "cluster_kvd.lua"
    #: True: drive the nodes' etcd gateway (/v3/kv/*) with etcd's own script.
    gateway = False

    def __init__(self, workdir: str, value_bytes: int, extra_args: list[str],
                 session_timeout: float) -> None:
        super().__init__(workdir, value_bytes, extra_args)
        self.session_timeout = session_timeout
        self.zookeeper: ZooKeeperServer | None = None
        self.cluster: Cluster | None = None
        self._leader: KvdProcess | None = None
        self._follower: KvdProcess | None = None

    def start(self) -> None:
        # The session timeout must fit ZooKeeper's maximum, or ZooKeeper cuts it.
        self.zookeeper = ZooKeeperServer(
            os.path.join(self.workdir, "zookeeper"), host=HOST,
            max_session_timeout_ms=int(max(20.0, 2 * self.session_timeout) * 1000),
        )
        self.zookeeper.start(timeout=90)
        self.cluster = Cluster(os.path.join(self.workdir, "kvd"), self.zookeeper, size=3,
                               name="bench", session_timeout=self.session_timeout,
                               extra_args=list(self.extra_args))
        # Cluster.start() would wait its whole timeout for a node that crashed.
        for node in self.cluster.nodes:
            node.start(wait=False)
        deadline = time.monotonic() + 120
        while not all(self._ready(node) for node in self.cluster.nodes):
            if time.monotonic() > deadline:
                raise BenchError("kvd nodes not ready within 120 s:\n"
                                 + "\n".join(n.log_tail(10) for n in self.cluster.nodes))
            time.sleep(0.1)
        self.cluster.wait_leader(60)
        self._pick_roles()
        # Every node must serve and know the leader before we measure.
        wait_for(lambda: all(self._role_of(n) in ("leader", "follower")
                             for n in self.cluster.nodes), 60, "every kvd node in a role")

    @staticmethod
    def _ready(node: KvdProcess) -> bool:
        assert node.proc is not None
        if node.proc.poll() is not None:
            raise BenchError(f"kvd node {node.url} exited with {node.proc.returncode}:\n"
                             f"{node.log_tail(15)}")
        try:
            return node.ready()
        except OSError:
            return False

    def _role_of(self, node: KvdProcess) -> str:
        assert self.cluster is not None
        return str(self.cluster.status(node).get("role"))

    def _pick_roles(self) -> None:
        assert self.cluster is not None
        self._leader = self.cluster.wait_leader(60)
        followers = [n for n in self.cluster.running() if n is not self._leader]
        if not followers:
            raise BenchError("the kvd cluster has no follower")
        self._follower = followers[0]

    def stop(self) -> None:
        try:
            if self.cluster is not None:
                self.cluster.stop()
        finally:
            if self.zookeeper is not None:
                self.zookeeper.stop()

    def describe(self) -> dict[str, Any]:
        assert self.cluster is not None
        version = run_quiet([sys.executable, "-c",
                             "import importlib.metadata as m; print(m.version('kvd'))"])
        return {
            "version": version,
            "nodes": [{"url": n.url, "pid": n.proc.pid if n.proc else None,
                       "command": n.command()} for n in self.cluster.nodes],
            "zookeeper": self.zookeeper.hosts if self.zookeeper else None,
            "session_timeout": self.session_timeout,
            "fsync": kvd_fsync(self.extra_args),
            "extra_args": self.extra_args,
        }

    def leader_url(self) -> str:
        assert self._leader is not None
        return self._leader.url

    def follower_url(self) -> str:
        assert self._follower is not None
        return self._follower.url

    def leader_id(self) -> str:
        assert self.cluster is not None
        leader = self.cluster.leader()
        return leader.url if leader is not None else "none"

    def pids(self) -> dict[str, int]:
        assert self.cluster is not None and self._leader is not None
        out: dict[str, int] = {}
        for node in [self._leader, *[n for n in self.cluster.nodes if n is not self._leader]]:
            if node.proc is None:
                continue
            role = "leader" if node is self._leader else (
                "follower" if node is self._follower else "other")
            out[f"{role}:{node.port}"] = node.proc.pid
        if self.zookeeper is not None and self.zookeeper.pid is not None:
            out["zookeeper"] = self.zookeeper.pid
        return out

    def put(self, conn: Conn, key: str, value: str) -> None:
        status, body = conn.call("PUT", f"/api/v1/keys/{key}", {"value": value})
        if status != 200:
            raise BenchError(f"kvd PUT {key} answered {status}: {body!r}")

    def count(self, url: str) -> int:
        response = request(url, "GET", "/api/v1/keys?prefix=k&consistency=stale", timeout=10)
        if response.status != 200:
            raise BenchError(f"kvd scan on {url} answered {response.status}")
        return int(response.body["count"])

    def read(self, url: str, key: str) -> str | None:
        response = request(url, "GET", f"/api/v1/keys/{key}", timeout=10)
        return None if response.status != 200 else response.body.get("value")

    def mode(self, line: Line) -> str:
        return line.etcd_mode if self.gateway else line.kvd_mode

    def use_gateway(self) -> None:
        """From now on, lines send etcd's very requests to kvd's /v3/ routes."""
        self.gateway = True
        self.script = "cluster_etcd.lua"

    def metrics_urls(self) -> dict[str, str]:
        assert self.cluster is not None
        by_port = {n.port: n.url for n in self.cluster.nodes}
        return {role: by_port[int(role.split(":")[1])] for role in self.pids()
                if ":" in role}

    def derive(self, before: dict[str, dict[str, float]], after: dict[str, dict[str, float]],
               requests: int) -> dict[str, dict[str, float]]:
        return derive_kvd(before, after, requests)


def kvd_fsync(extra_args: list[str]) -> str:
    """The --fsync mode the extra options give kvd ("always" by default)."""
    mode = "always"
    for i, arg in enumerate(extra_args):
        if arg == "--fsync" and i + 1 < len(extra_args):
            mode = extra_args[i + 1]
        elif arg.startswith("--fsync="):
            mode = arg.split("=", 1)[1]
    return mode


def derive_kvd(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]],
               requests: int) -> dict[str, dict[str, float]]:
    """Per node: WAL fsyncs, log entries and peer messages per client request."""
    out: dict[str, dict[str, float]] = {}
    for role, now in after.items():
        was = before.get(role, {})
        if not now:
            continue
        batches = delta(was, now, "kvd_wal_batch_seconds_count")
        entries = delta(was, now, "kvd_replication_round_seconds_count")
        figures: dict[str, Any] = {
            "wal_fsyncs_per_request": ratio(batches, requests),
            "wal_fsync_mean_ms": ratio(delta(was, now, "kvd_wal_batch_seconds_sum"),
                                       batches, 1000),
            "wal_appends_per_fsync": ratio(delta(was, now, "kvd_wal_batch_appends_sum"),
                                           batches),
            "log_entries_per_request": ratio(entries, requests),
            "commands_per_log_entry": ratio(
                delta(was, now, "kvd_replication_batch_commands_sum"), entries),
            "propose_to_commit_mean_ms": ratio(
                delta(was, now, "kvd_replication_round_seconds_sum"), entries, 1000),
        }
        peer: Counter[str] = Counter()
        for series in now:
            m = re.match(r'kvd_http_requests_total\{.*route="/peer/v1/([^"]+)"', series)
            if m:
                peer[m.group(1)] += delta(was, now, series)
        for route, count in sorted(peer.items()):
            if count:
                figures[f"peer_{route}_received_per_request"] = ratio(count, requests)
        out[role] = {k: v for k, v in figures.items() if v is not None}
    return out

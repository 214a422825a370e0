"""
Benchmark a 3-node kvd cluster against a 3-node etcd cluster on this machine.

Both clusters run on loopback with their data in a temporary directory and
fsync on (kvd ``--fsync always``, etcd always fsyncs), one after the other so
that they never compete for the cores. Both are driven by the same ``wrk``
settings (``--latency``, 2 threads, 1 for one connection) with Lua scripts that
build the same requests: 100-byte values over 1000 keys of 16 bytes.

Lines, each ``--duration`` seconds (default 10, 3 with ``--quick``):

    write_c1                writes to the leader, 1 connection
    write_c32               writes to the leader, 32 connections
    write_c128              writes to the leader, 128 connections
    read_linearizable_c32   linearizable reads on a follower, 32 connections
    read_stale_c32          stale (kvd) / serializable (etcd) reads on a
                            follower, 32 connections

Prints a table with the ratio kvd/etcd per line and writes
``bench/results/cluster-vs-etcd-<timestamp>.json``. See ``bench/etcd.rst``.

    .venv/bin/python bench/cluster_vs_etcd.py [--quick] [--duration S]
        [--only kvd|etcd] [--keys N] [--value-bytes N] [--profile] [--keep]

Benchmarks measure, they do not assert: the exit status is 1 only when a
line had failed requests (non-2xx or socket errors) or a system could not run,
2 when etcd, wrk or ZooKeeper is not installed.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
if REPO_DIR not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, REPO_DIR)

from wrk_report import WrkReportError, read_report  # noqa: E402

from kvd.testing.cluster import Cluster  # noqa: E402
from kvd.testing.process import KvdProcess, free_port, request, wait_for  # noqa: E402
from kvd.testing.zookeeper import (  # noqa: E402
    ZooKeeperNotInstalled,
    ZooKeeperServer,
    ZooKeeperStartError,
)

RESULTS_DIR = os.path.join(BENCH_DIR, "results")
HOST = "127.0.0.1"
KEY_FORMAT = "k{:015d}"  # 16 bytes, as in cluster_kvd.lua / cluster_etcd.lua
ETCD_INSTALL_HINT = "install it with `apt-get install -y etcd-server`"

#: etcd 3.4 on this machine, 100-byte values, measured before this script
#: existed (req/s); shown beside this run's etcd figures as a sanity check.
REFERENCE_ETCD_RPS = {
    "write_c1": 1000.0,
    "write_c32": 5100.0,
    "write_c128": 7000.0,
    "read_linearizable_c32": 8800.0,
    "read_stale_c32": 11200.0,
}
#: kvd's target on every line: at least as fast as etcd.
TARGET_RATIO = 1.0
#: Flag a line when other processes kept more than this many cores busy.
BUSY_CORES = 0.25
_TICK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The benchmark could not run (a process would not start, wrk failed...)."""


class NotInstalled(BenchError):
    """A program the benchmark needs is missing."""


class OutOfTime(BaseException):
    """The whole run went past its time budget (raised by SIGALRM)."""


@dataclass(frozen=True)
class Line:
    """One row of the table: the same wrk settings against both systems."""

    name: str
    title: str
    connections: int
    threads: int
    target: str  # "leader" or "follower"
    kvd_mode: str  # cluster_kvd.lua MODE
    etcd_mode: str  # cluster_etcd.lua MODE


LINES = [
    Line("write_c1", "writes, 1 conn, leader", 1, 1, "leader", "put", "put"),
    Line("write_c32", "writes, 32 conns, leader", 32, 2, "leader", "put", "put"),
    Line("write_c128", "writes, 128 conns, leader", 128, 2, "leader", "put", "put"),
    Line("read_linearizable_c32", "linearizable reads, 32 conns, follower", 32, 2,
         "follower", "get", "range"),
    Line("read_stale_c32", "stale/serializable reads, 32 conns, follower", 32, 2,
         "follower", "stale", "serializable"),
]


# wrk


@dataclass
class WrkResult:
    """What one wrk run reported, and the CPU it cost each process."""

    line: str
    system: str
    url: str = ""
    connections: int = 0
    threads: int = 0
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    #: CPU seconds per server process during the run (role -> seconds).
    server_cpu_s: dict[str, float] = field(default_factory=dict)
    #: All server processes' CPU per answered request, in microseconds.
    cluster_cpu_us_per_request: float | None = None
    wrk_cpu_s: float | None = None
    #: Cores busy with anything but the servers and wrk, on average.
    other_load_cores: float | None = None
    leader_changed: bool = False
    #: Per node, from the nodes' own /metrics over the run (fsyncs and peer
    #: messages per request...); see derive_kvd() / derive_etcd().
    internals: dict[str, dict[str, float]] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    output: str = ""

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())

    def error_text(self) -> str:
        parts = []
        if self.non_2xx:
            parts.append(f"{self.non_2xx} non-2xx")
        for kind, count in self.socket_errors.items():
            if count:
                parts.append(f"{count} socket {kind}")
        return ", ".join(parts)



def parse_wrk(result: WrkResult, output: str) -> WrkResult:
    """Fill ``result`` from wrk's text report (run with ``--latency``)."""
    result.output = output
    try:
        report = read_report(output, f"{result.system} {result.line}")
    except WrkReportError as e:
        raise BenchError(str(e)) from None
    for name, value in report.items():
        setattr(result, name, value)
    return result


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (all its threads); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle, summed over cores."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    guest = sum(values[8:10]) if len(values) > 9 else 0
    return (sum(values) - idle - guest) / _TICK


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; always reaps."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# HTTP helpers (blocking, keep-alive)


class Conn:
    """One keep-alive HTTP/1.1 connection for loading and checking."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.host = url.split("://", 1)[1]
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        payload = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if payload is not None else {}
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=payload, headers=headers)
                raw = self._conn.getresponse()
                data = raw.read()
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
                continue
            try:
                return raw.status, json.loads(data) if data else None
            except ValueError:
                return raw.status, data
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# The two systems


class System:
    """A 3-node cluster the benchmark can start, drive and stop."""

    name = ""
    script = ""

    def __init__(self, workdir: str, value_bytes: int, extra_args: list[str]) -> None:
        self.workdir = workdir
        self.value_bytes = value_bytes
        self.extra_args = extra_args

    # Lifecycle
    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError

    # Topology
    def leader_url(self) -> str:
        raise NotImplementedError

    def follower_url(self) -> str:
        raise NotImplementedError

    def leader_id(self) -> str:
        raise NotImplementedError

    def pids(self) -> dict[str, int]:
        """role label -> pid of every server process (leader first)."""
        raise NotImplementedError

    # Data
    def put(self, conn: Conn, key: str, value: str) -> None:
        raise NotImplementedError

    def count(self, url: str) -> int:
        """Keys a local (stale/serializable) read on ``url`` sees."""
        raise NotImplementedError

    def read(self, url: str, key: str) -> str | None:
        """One linearizable read through ``url``."""
        raise NotImplementedError

    def mode(self, line: Line) -> str:
        raise NotImplementedError

    def metrics_urls(self) -> dict[str, str]:
        """role label (as in pids()) -> base URL serving Prometheus /metrics."""
        return {}

    def derive(self, before: dict[str, dict[str, float]], after: dict[str, dict[str, float]],
               requests: int) -> dict[str, dict[str, float]]:
        return {}


class KvdSystem(System):
    """ZooKeeper and ``kvd.testing.cluster.Cluster`` of 3 ``twistd kvd`` nodes."""

    name = "kvd"
    script = "cluster_kvd.lua"

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
        version = _run_quiet([sys.executable, "-c",
                              "import importlib.metadata as m; print(m.version('kvd'))"])
        return {
            "version": version,
            "nodes": [{"url": n.url, "pid": n.proc.pid if n.proc else None,
                       "command": n.command()} for n in self.cluster.nodes],
            "zookeeper": self.zookeeper.hosts if self.zookeeper else None,
            "session_timeout": self.session_timeout,
            "fsync": _kvd_fsync(self.extra_args),
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
        return line.kvd_mode

    def metrics_urls(self) -> dict[str, str]:
        assert self.cluster is not None
        by_port = {n.port: n.url for n in self.cluster.nodes}
        return {role: by_port[int(role.split(":")[1])] for role in self.pids()
                if ":" in role}

    def derive(self, before: dict[str, dict[str, float]], after: dict[str, dict[str, float]],
               requests: int) -> dict[str, dict[str, float]]:
        return derive_kvd(before, after, requests)


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: str
    log_path: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"


class EtcdSystem(System):
    """Three ``etcd`` members on loopback, one data dir each."""

    name = "etcd"
    script = "cluster_etcd.lua"

    def __init__(self, workdir: str, value_bytes: int, extra_args: list[str],
                 binary: str) -> None:
        super().__init__(workdir, value_bytes, extra_args)
        self.binary = binary
        self.members: list[EtcdMember] = []
        self._ids: dict[str, str] = {}  # member id -> name
        self._leader: EtcdMember | None = None
        self._follower: EtcdMember | None = None

    def command(self, member: EtcdMember) -> list[str]:
        cluster = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        return [
            self.binary, "--name", member.name, "--data-dir", member.data_dir,
            "--listen-client-urls", member.url, "--advertise-client-urls", member.url,
            "--listen-peer-urls", member.peer_url,
            "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", cluster, "--initial-cluster-state", "new",
            "--initial-cluster-token", f"kvd-bench-{os.getpid()}",
            "--logger", "zap", "--log-level", "warn", *self.extra_args,
        ]

    def start(self) -> None:
        root = os.path.join(self.workdir, "etcd")
        for i in range(3):
            member_dir = os.path.join(root, f"m{i}")
            os.makedirs(member_dir, exist_ok=True)
            self.members.append(EtcdMember(f"m{i}", free_port(HOST), free_port(HOST),
                                           os.path.join(member_dir, "data"),
                                           os.path.join(member_dir, "etcd.log")))
        for member in self.members:
            with open(member.log_path, "ab") as log:
                member.proc = subprocess.Popen(
                    self.command(member), stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True)
        for member in self.members:
            wait_for(lambda m=member: self._healthy(m), 60, f"etcd {member.name} /health")
        wait_for(self._find_roles, 60, "an etcd leader")

    def _healthy(self, member: EtcdMember) -> bool:
        assert member.proc is not None
        if member.proc.poll() is not None:
            raise BenchError(f"etcd {member.name} exited with {member.proc.returncode}:\n"
                             + _tail(member.log_path))
        response = request(member.url, "GET", "/health", timeout=2)
        return response.status == 200 and str(response.body.get("health")) == "true"

    def _status(self, member: EtcdMember) -> dict[str, Any]:
        response = request(member.url, "POST", "/v3/maintenance/status", {}, timeout=5)
        if response.status != 200:
            raise BenchError(f"etcd {member.name} status answered {response.status}")
        return dict(response.body)

    def _find_roles(self) -> bool:
        leader_ids = set()
        for member in self.members:
            status = self._status(member)
            self._ids[str(status["header"]["member_id"])] = member.name
            leader_ids.add(str(status.get("leader", "0")))
        if len(leader_ids) != 1 or "0" in leader_ids:
            return False
        leader_name = self._ids.get(leader_ids.pop())
        if leader_name is None:
            return False
        self._leader = next(m for m in self.members if m.name == leader_name)
        self._follower = next(m for m in self.members if m is not self._leader)
        return True

    def stop(self) -> None:
        for member in self.members:
            if member.proc is not None:
                stop_process(member.proc)

    def describe(self) -> dict[str, Any]:
        version = _run_quiet([self.binary, "--version"])
        return {
            "version": version.splitlines()[0] if version else None,
            "version_output": version,
            "members": [{"name": m.name, "url": m.url, "pid": m.proc.pid if m.proc else None,
                         "command": self.command(m)} for m in self.members],
            "leader": self._leader.name if self._leader else None,
            "follower": self._follower.name if self._follower else None,
            "extra_args": self.extra_args,
        }

    def leader_url(self) -> str:
        assert self._leader is not None
        return self._leader.url

    def follower_url(self) -> str:
        assert self._follower is not None
        return self._follower.url

    def leader_id(self) -> str:
        try:
            status = self._status(self.members[0])
        except Exception:
            return "unknown"
        return self._ids.get(str(status.get("leader")), str(status.get("leader")))

    def pids(self) -> dict[str, int]:
        assert self._leader is not None
        out: dict[str, int] = {}
        for member in [self._leader, *[m for m in self.members if m is not self._leader]]:
            if member.proc is None:
                continue
            role = "leader" if member is self._leader else (
                "follower" if member is self._follower else "other")
            out[f"{role}:{member.name}"] = member.proc.pid
        return out

    def put(self, conn: Conn, key: str, value: str) -> None:
        status, body = conn.call("POST", "/v3/kv/put", {"key": b64(key), "value": b64(value)})
        if status != 200 or not isinstance(body, dict) or "header" not in body:
            raise BenchError(f"etcd put {key} answered {status}: {body!r}")

    def count(self, url: str) -> int:
        response = request(url, "POST", "/v3/kv/range",
                           {"key": b64("k"), "range_end": b64("l"), "count_only": True,
                            "serializable": True}, timeout=10)
        if response.status != 200:
            raise BenchError(f"etcd count on {url} answered {response.status}")
        return int(response.body.get("count", 0))

    def read(self, url: str, key: str) -> str | None:
        response = request(url, "POST", "/v3/kv/range", {"key": b64(key)}, timeout=10)
        kvs = response.body.get("kvs") if response.status == 200 else None
        return base64.b64decode(kvs[0]["value"]).decode() if kvs else None

    def mode(self, line: Line) -> str:
        return line.etcd_mode

    def metrics_urls(self) -> dict[str, str]:
        by_name = {m.name: m.url for m in self.members}
        return {role: by_name[role.split(":")[1]] for role in self.pids()}

    def derive(self, before: dict[str, dict[str, float]], after: dict[str, dict[str, float]],
               requests: int) -> dict[str, dict[str, float]]:
        return derive_etcd(before, after, requests)


def _kvd_fsync(extra_args: list[str]) -> str:
    """The --fsync mode the extra options give kvd ("always" by default)."""
    mode = "always"
    for i, arg in enumerate(extra_args):
        if arg == "--fsync" and i + 1 < len(extra_args):
            mode = extra_args[i + 1]
        elif arg.startswith("--fsync="):
            mode = arg.split("=", 1)[1]
    return mode


# The nodes' own metrics, for per-request internals (best effort)

_METRIC = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)")
#: Metric families kept from /metrics (histogram buckets are dropped).
WANTED_METRICS = (
    "kvd_http_requests_total", "kvd_wal_batch_seconds_", "kvd_wal_batch_appends_",
    "kvd_replication_round_seconds_", "kvd_replication_batch_commands_",
    "etcd_disk_wal_fsync_duration_seconds_", "etcd_disk_backend_commit_duration_seconds_",
    "etcd_server_proposals_committed_total", "etcd_network_peer_sent_bytes_total",
)


def scrape(url: str) -> dict[str, float]:
    """Selected series of a Prometheus text page; {} if the node has none."""
    try:
        conn = http.client.HTTPConnection(url.split("://", 1)[1], timeout=5)
        try:
            conn.request("GET", "/metrics")
            raw = conn.getresponse()
            text = raw.read().decode("utf-8", "replace") if raw.status == 200 else ""
        finally:
            conn.close()
    except (OSError, http.client.HTTPException):
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(WANTED_METRICS) or "_bucket" in line:
            continue
        m = _METRIC.match(line)
        if m:
            try:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
            except ValueError:
                continue
    return out


def scrape_all(system: System) -> dict[str, dict[str, float]]:
    return {role: scrape(url) for role, url in system.metrics_urls().items()}


def _delta(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def _ratio(a: float, b: float, scale: float = 1.0, digits: int = 3) -> float | None:
    return round(a / b * scale, digits) if b else None


def derive_kvd(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]],
               requests: int) -> dict[str, dict[str, float]]:
    """Per node: WAL fsyncs, log entries and peer messages per client request."""
    out: dict[str, dict[str, float]] = {}
    for role, now in after.items():
        was = before.get(role, {})
        if not now:
            continue
        batches = _delta(was, now, "kvd_wal_batch_seconds_count")
        entries = _delta(was, now, "kvd_replication_round_seconds_count")
        figures: dict[str, Any] = {
            "wal_fsyncs_per_request": _ratio(batches, requests),
            "wal_fsync_mean_ms": _ratio(_delta(was, now, "kvd_wal_batch_seconds_sum"),
                                        batches, 1000),
            "wal_appends_per_fsync": _ratio(_delta(was, now, "kvd_wal_batch_appends_sum"),
                                            batches),
            "log_entries_per_request": _ratio(entries, requests),
            "commands_per_log_entry": _ratio(
                _delta(was, now, "kvd_replication_batch_commands_sum"), entries),
            "propose_to_commit_mean_ms": _ratio(
                _delta(was, now, "kvd_replication_round_seconds_sum"), entries, 1000),
        }
        peer: Counter[str] = Counter()
        for series in now:
            m = re.match(r'kvd_http_requests_total\{.*route="/peer/v1/([^"]+)"', series)
            if m:
                peer[m.group(1)] += _delta(was, now, series)
        for route, count in sorted(peer.items()):
            if count:
                figures[f"peer_{route}_received_per_request"] = _ratio(count, requests)
        out[role] = {k: v for k, v in figures.items() if v is not None}
    return out


def derive_etcd(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]],
                requests: int) -> dict[str, dict[str, float]]:
    """Per member: WAL fsyncs and backend commits per client request."""
    out: dict[str, dict[str, float]] = {}
    for role, now in after.items():
        was = before.get(role, {})
        if not now:
            continue
        fsyncs = _delta(was, now, "etcd_disk_wal_fsync_duration_seconds_count")
        commits = _delta(was, now, "etcd_disk_backend_commit_duration_seconds_count")
        sent = sum(_delta(was, now, k) for k in now
                   if k.startswith("etcd_network_peer_sent_bytes_total"))
        figures = {
            "wal_fsyncs_per_request": _ratio(fsyncs, requests),
            "wal_fsync_mean_ms": _ratio(
                _delta(was, now, "etcd_disk_wal_fsync_duration_seconds_sum"), fsyncs, 1000),
            "backend_commits_per_request": _ratio(commits, requests),
            "peer_bytes_sent_per_request": _ratio(sent, requests, digits=1),
        }
        out[role] = {k: v for k, v in figures.items() if v is not None}
    return out


# Running


def _run_quiet(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _tail(path: str, lines: int = 20) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


def value_for(key: str, size: int) -> str:
    return (key * (size // len(key) + 1))[:size]


def populate(system: System, keys: int, value_bytes: int, budget: float) -> float:
    """Write every key once through the leader (16 connections); returns the seconds."""
    started = time.monotonic()
    url = system.leader_url()
    names = [KEY_FORMAT.format(i) for i in range(keys)]
    local = threading.local()
    deadline = started + budget

    def put(name: str) -> None:
        if time.monotonic() > deadline:
            raise BenchError(f"pre-population of {keys} keys took over {budget:.0f} s")
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = Conn(url)
        system.put(conn, name, value_for(name, value_bytes))

    with ThreadPoolExecutor(16) as pool:
        for future in [pool.submit(put, name) for name in names]:
            future.result()
    # Local reads on the follower must find every key before we time them.
    follower = system.follower_url()
    wait_for(lambda: system.count(follower) >= keys, 30,
             f"the {system.name} follower to hold {keys} keys")
    for i in (0, keys // 2, keys - 1):
        name = KEY_FORMAT.format(i)
        got = system.read(follower, name)
        if got != value_for(name, value_bytes):
            raise BenchError(f"{system.name}: {name} reads back as {got!r} on the follower")
    return time.monotonic() - started


def wait_quiet(ours: list[int], limit: float) -> float:
    """Wait (up to ``limit`` s) until other processes keep < BUSY_CORES cores busy."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        busy, mine = machine_busy_seconds(), sum(cpu_seconds(p) for p in ours)
        time.sleep(1.0)
        other = (machine_busy_seconds() - busy) - (sum(cpu_seconds(p) for p in ours) - mine)
        if other < BUSY_CORES:
            break
    return time.monotonic() - started


class Runner:
    """Runs wrk lines against one system, keeping every child it starts."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.wrk = shutil.which("wrk") or "wrk"
        self._procs: list[subprocess.Popen[Any]] = []

    def wrk_command(self, system: System, line: Line, url: str, duration: float) -> list[str]:
        return [self.wrk, "-t", str(line.threads), "-c", str(line.connections),
                "-d", f"{duration:g}s", "--latency", "--timeout", f"{self.args.timeout:g}s",
                "-s", os.path.join(BENCH_DIR, system.script), url, "--",
                system.mode(line), str(self.args.keys), str(self.args.value_bytes)]

    def run_line(self, system: System, line: Line, duration: float,
                 quiet: bool = False, wait: bool = True) -> WrkResult:
        url = system.leader_url() if line.target == "leader" else system.follower_url()
        cmd = self.wrk_command(system, line, url, duration)
        result = WrkResult(line.name, system.name, url, line.connections, line.threads,
                           command=cmd)
        if not quiet:
            print(f"  {system.name} {line.name}: {duration:g} s ...", end="", flush=True)
        pids = system.pids()
        if wait and self.args.wait_quiet > 0:
            wait_quiet(list(pids.values()), self.args.wait_quiet)
        leader_before = system.leader_id()
        metrics_before = scrape_all(system)
        cpu_before = {role: cpu_seconds(pid) for role, pid in pids.items()}
        busy_before, children_before = machine_busy_seconds(), children_cpu()
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        self._procs.append(proc)
        try:
            output, _ = proc.communicate(timeout=duration + self.args.timeout + 30)
        except subprocess.TimeoutExpired:
            raise BenchError(f"wrk did not finish {line.name} on {system.name} in time") from None
        finally:
            stop_process(proc)  # a no-op once wrk has exited
            if proc in self._procs:
                self._procs.remove(proc)
        elapsed = time.monotonic() - started
        if proc.returncode != 0:
            raise BenchError(f"wrk exited with {proc.returncode}:\n{output}")
        parse_wrk(result, output)
        result.server_cpu_s = {role: round(cpu_seconds(pid) - cpu_before[role], 3)
                               for role, pid in pids.items()}
        result.wrk_cpu_s = round(children_cpu() - children_before, 3)
        busy = machine_busy_seconds() - busy_before
        used = sum(result.server_cpu_s.values()) + result.wrk_cpu_s
        result.other_load_cores = round(max(0.0, busy - used) / elapsed, 3)
        if result.requests:
            result.cluster_cpu_us_per_request = round(
                sum(result.server_cpu_s.values()) / result.requests * 1e6, 1)
        result.internals = system.derive(metrics_before, scrape_all(system), result.requests)
        result.leader_changed = system.leader_id() != leader_before
        if not quiet:
            p50, p99 = result.latency_ms.get("p50"), result.latency_ms.get("p99")
            print(f" {result.rps:,.0f} req/s, p50 {_fmt_ms(p50)}, p99 {_fmt_ms(p99)}"
                  + (f"  !! {result.error_text()} !!" if result.errors else "")
                  + ("  !! LEADER CHANGED !!" if result.leader_changed else ""), flush=True)
        return result

    def stop_all(self) -> None:
        for proc in list(self._procs):
            stop_process(proc)


def thread_cpu(pid: int) -> dict[str, tuple[str, float]]:
    """tid -> (thread name, CPU seconds so far) of every thread of ``pid``."""
    out: dict[str, tuple[str, float]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                data = f.read()
        except OSError:
            continue
        name = data[data.index("(") + 1 : data.rindex(")")]
        fields = data.rsplit(")", 1)[1].split()
        out[tid] = (name, (int(fields[11]) + int(fields[12])) / _TICK)
    return out


def profile_leader(runner: Runner, system: KvdSystem, duration: float, stamp: str
                   ) -> dict[str, Any]:
    """py-spy the kvd leader during an extra (unreported) write_c32 run.

    Two py-spy recorders sample the leader at once, 100 times a second, without
    pausing it (``--nonblocking``): one records every thread (``--threads``),
    whose main-thread samples outside the epoll wait say where the reactor's
    wall-clock time goes (system calls and time spent preempted included); the
    other keeps only samples holding the GIL (``--gil``), i.e. CPU spent
    running Python code. /proc gives each thread's CPU over the same time.
    """
    py_spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(py_spy):
        return {"error": "py-spy not installed: .venv/bin/pip install py-spy"}
    pids = system.pids()
    pid = pids[next(r for r in pids if r.startswith("leader"))]
    line = next(x for x in LINES if x.name == "write_c32")
    sample_s = max(1, int(duration) - 1)
    paths = {view: os.path.join(RESULTS_DIR, f"cluster-vs-etcd-{stamp}-kvd-leader-{view}.folded")
             for view in ("wall", "gil")}
    commands = {view: [py_spy, "record", "--pid", str(pid), "--duration", str(sample_s),
                       "--rate", "100", "--format", "raw", "--nonblocking", "--output", path,
                       *(["--threads"] if view == "wall" else ["--gil"])]
                for view, path in paths.items()}
    print(f"  profiling the kvd leader (pid {pid}) under {line.name} for {sample_s} s ...",
          flush=True)
    box: dict[str, WrkResult] = {}

    def load() -> None:
        box["result"] = runner.run_line(system, line, duration + 1, quiet=True, wait=False)

    if runner.args.wait_quiet > 0:
        wait_quiet(list(pids.values()), runner.args.wait_quiet)
    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    spies: dict[str, subprocess.Popen[str]] = {}
    outputs: dict[str, str] = {}
    try:
        time.sleep(0.5)  # let wrk connect first
        before, started = thread_cpu(pid), time.monotonic()
        for view, cmd in commands.items():
            spies[view] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                           text=True)
        for view, spy in spies.items():
            outputs[view] = spy.communicate(timeout=sample_s + 30)[0]
        after, elapsed = thread_cpu(pid), time.monotonic() - started
        loader.join(duration + runner.args.timeout + 40)
    finally:
        for spy in spies.values():
            stop_process(spy)
    for view, spy in spies.items():
        if spy.returncode != 0 or not os.path.exists(paths[view]):
            return {"error": f"py-spy ({view}) failed ({spy.returncode}): "
                             f"{outputs.get(view, '')[-2000:]}"}
    result = box.get("result")
    cores = {f"{after[t][0]} ({t})": round((after[t][1] - before.get(t, ("", 0.0))[1]) / elapsed,
                                            3) for t in after}
    return {
        "wall": summarise_folded(paths["wall"], main_thread_only=True),
        "gil": summarise_folded(paths["gil"], main_thread_only=False),
        "raw": paths, "pid": pid, "commands": commands,
        "rps_while_profiling": result.rps if result else None,
        "errors_while_profiling": result.errors if result else None,
        "thread_cores": dict(sorted(cores.items(), key=lambda kv: -kv[1])),
        "process_cores": round(sum(cores.values()), 3),
    }


#: Leaf frames where a thread waits rather than computes (py-spy's own idle
#: detection does not work with --nonblocking).
IDLE_LEAVES = (
    "Condition.wait (threading.py)",
    "EpollSelector.select (selectors.py)",
    "EPollReactor.doPoll (twisted/internet/epollreactor.py)",
    "select (selectors.py)",
)


def _frame_name(frame: str) -> tuple[str, str]:
    """``func (path/file.py:12)`` -> ("func (path/file.py)", "path/file.py")."""
    m = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame, ""
    return f"{m.group(1)} ({m.group(2)})", m.group(2)


def _package(path: str) -> str:
    """twisted/web/http.py -> twisted/web; json/decoder.py -> json; uuid.py -> uuid."""
    parts = path.split("/")
    if len(parts) == 1:
        return parts[0].removesuffix(".py")
    if parts[0] in ("twisted", "kvd") and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0]


def summarise_folded(path: str, top: int = 30, main_thread_only: bool = True
                     ) -> dict[str, Any]:
    """Where the busy samples go, from py-spy raw output.

    Lines are ``[thread (tid): name;]frame;frame... count``, outermost frame
    first. Shares are percentages of the busy samples: idle leaves dropped,
    and with ``main_thread_only`` (needs ``--threads``) those of the main
    (reactor) thread only.
    """
    per_thread: Counter[str] = Counter()
    idle_thread: Counter[str] = Counter()
    self_fn: Counter[str] = Counter()
    total_fn: Counter[str] = Counter()
    self_pkg: Counter[str] = Counter()
    busy = 0
    with open(path, errors="replace") as f:
        for raw in f:
            stack, _, count_text = raw.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = stack.split(";")
            thread = frames[0] if frames[0].startswith("thread ") else "?"
            frames = frames[1:] if thread != "?" else frames
            per_thread[thread] += count
            names = [_frame_name(frame) for frame in frames if frame]
            if not names:
                continue
            leaf, leaf_file = names[-1]
            if leaf in IDLE_LEAVES:
                idle_thread[thread] += count
                continue
            if main_thread_only and "MainThread" not in thread:
                continue
            busy += count
            self_fn[leaf] += count
            self_pkg[_package(leaf_file)] += count
            for name in {n for n, _ in names}:
                total_fn[name] += count

    def share(counter: Counter[str], total: int, n: int = top) -> list[tuple[str, float]]:
        return [(k, round(100.0 * v / total, 1)) for k, v in counter.most_common(n)] \
            if total else []

    # Frames under every busy sample (twistd's main, the reactor loop) say nothing.
    inclusive = Counter({k: v for k, v in total_fn.items() if v < 0.9 * busy})
    return {
        "busy_samples": busy,
        "threads": [(t, n, idle_thread[t]) for t, n in per_thread.most_common()],
        "self": share(self_fn, busy),
        "self_by_package": share(self_pkg, busy, 15),
        "inclusive": share(inclusive, busy),
    }


# Report


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else (f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms")


def ratios(results: dict[str, dict[str, WrkResult]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for line in LINES:
        kvd, etcd = results.get("kvd", {}).get(line.name), results.get("etcd", {}).get(line.name)
        if kvd is None or etcd is None or not etcd.rps:
            continue
        entry: dict[str, Any] = {"throughput": round(kvd.rps / etcd.rps, 3)}
        for pct in ("p50", "p99"):
            a, b = kvd.latency_ms.get(pct), etcd.latency_ms.get(pct)
            if a is not None and b:
                entry[f"latency_{pct}"] = round(a / b, 3)
        if kvd.cluster_cpu_us_per_request and etcd.cluster_cpu_us_per_request:
            entry["cpu_per_request"] = round(
                kvd.cluster_cpu_us_per_request / etcd.cluster_cpu_us_per_request, 3)
        entry["met_target"] = entry["throughput"] >= TARGET_RATIO and not (kvd.errors
                                                                         or etcd.errors)
        out[line.name] = entry
    return out


def print_table(results: dict[str, dict[str, WrkResult]]) -> None:
    rs = ratios(results)
    head = (f"{'line':<46} {'system':<5} {'req/s':>9} {'p50':>9} {'p99':>9} "
            f"{'cpu us/req':>10} {'kvd/etcd':>9} {'cpu k/e':>7}")
    print()
    print(head)
    print("-" * len(head))
    warnings = []
    for line in LINES:
        for system in ("kvd", "etcd"):
            r = results.get(system, {}).get(line.name)
            if r is None:
                continue
            ratio = cpu_ratio = ""
            if system == "kvd" and line.name in rs:
                value = rs[line.name]["throughput"]
                ratio = f"{value:.2f}" + ("" if value >= TARGET_RATIO else " MISSED")
                if "cpu_per_request" in rs[line.name]:
                    cpu_ratio = f"{rs[line.name]['cpu_per_request']:.2f}"
            cpu = "-" if r.cluster_cpu_us_per_request is None else \
                f"{r.cluster_cpu_us_per_request:,.0f}"
            title = line.title if system == "kvd" or "kvd" not in results else ""
            print(f"{title:<46} {system:<5} {r.rps:>9,.0f} {_fmt_ms(r.latency_ms.get('p50')):>9}"
                  f" {_fmt_ms(r.latency_ms.get('p99')):>9} {cpu:>10} {ratio:>9} {cpu_ratio:>7}")
            if r.errors:
                print(f"{'':<46} !!!!! {system} {line.name}: {r.errors} FAILED REQUESTS "
                      f"({r.error_text()}); its figures are not comparable !!!!!")
                warnings.append(f"{system} {line.name}: {r.error_text()}")
            if r.leader_changed:
                print(f"{'':<46} !!!!! {system} {line.name}: THE LEADER CHANGED DURING "
                      f"THIS LINE !!!!!")
                warnings.append(f"{system} {line.name}: leader changed")
            if r.other_load_cores is not None and r.other_load_cores > BUSY_CORES:
                warnings.append(f"{system} {line.name}: other processes kept "
                                f"{r.other_load_cores:.2f} cores busy (noisy machine)")
    print()
    etcd_lines = results.get("etcd", {})
    if etcd_lines:
        notes = []
        for name, ref in REFERENCE_ETCD_RPS.items():
            if name in etcd_lines:
                notes.append(f"{name} {etcd_lines[name].rps / ref:.2f}")
        print("etcd vs the earlier reference measurement (this run / reference): "
              + ", ".join(notes))
    if warnings:
        print("WARNINGS:")
        for w in warnings:
            print(f"  - {w}")


_SHORT = {
    "wal_fsyncs_per_request": "fsyncs/req",
    "wal_fsync_mean_ms": "fsync ms",
    "wal_appends_per_fsync": "appends/fsync",
    "log_entries_per_request": "entries/req",
    "commands_per_log_entry": "cmds/entry",
    "propose_to_commit_mean_ms": "commit ms",
    "backend_commits_per_request": "bolt commits/req",
    "peer_bytes_sent_per_request": "peer bytes/req",
}


def print_internals(results: dict[str, dict[str, WrkResult]]) -> None:
    """What each node did per client request, from its own /metrics."""
    rows = []
    for line in LINES:
        for system in ("kvd", "etcd"):
            r = results.get(system, {}).get(line.name)
            if r is None or not r.internals:
                continue
            for role, figures in r.internals.items():
                if role.startswith(("leader", "follower")) and figures:
                    text = ", ".join(
                        f"{_SHORT.get(k, k.replace('_received_per_request', '/req'))} {v:g}"
                        for k, v in figures.items())
                    rows.append(f"  {system:<4} {line.name:<22} {role.split(':')[0]:<8} {text}")
    if rows:
        print("\nper client request, from each node's /metrics (peer_X/req: peer messages "
              "received):")
        print("\n".join(rows))


def print_profile(profile: dict[str, Any]) -> None:
    if "error" in profile:
        print(f"\nprofile: {profile['error']}")
        return
    rps = profile.get("rps_while_profiling") or 0.0
    print(f"\nkvd leader under write_c32 ({rps:,.0f} req/s while sampled; the leader used "
          f"{profile['process_cores']:.2f} cores)")
    print("  CPU by thread (cores, from /proc):")
    for name, cores in list(profile["thread_cores"].items())[:4]:
        print(f"    {cores:5.2f}  {name}")
    views = (
        ("wall", "main (reactor) thread outside its epoll wait: wall-clock, system calls "
                 "and preemption included"),
        ("gil", "samples holding the GIL: CPU running Python code"),
    )
    for view, title in views:
        summary = profile[view]
        print(f"  {title} ({summary['busy_samples']} samples; {profile['raw'][view]}):")
        for heading, key, n in (("self time by function", "self", 15),
                                ("self time by package", "self_by_package", 10),
                                ("inclusive time by function", "inclusive", 20)):
            print(f"   {heading}:")
            for name, pct in summary[key][:n]:
                print(f"    {pct:5.1f}%  {name}")


# Main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="3-node kvd vs 3-node etcd on loopback, driven by wrk.")
    parser.add_argument("--duration", type=float, default=None,
                        help="seconds per wrk line (default 10; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="3 s per line")
    parser.add_argument("--only", choices=("kvd", "etcd"), help="run one system only")
    parser.add_argument("--lines", default=",".join(line.name for line in LINES),
                        help="comma-separated subset of the lines")
    parser.add_argument("--keys", type=int, default=1000, help="key space (default 1000)")
    parser.add_argument("--value-bytes", type=int, default=100, help="value size (default 100)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="wrk --timeout per request in seconds (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of unreported writes at 32 connections before a "
                             "system's lines (default 2)")
    parser.add_argument("--session-timeout", type=float, default=6.0,
                        help="kvd nodes' ZooKeeper session timeout (default 6, kvd's own)")
    parser.add_argument("--kvd-args", default="",
                        help="extra twistd kvd options, e.g. '--fsync none' (not a fair run)")
    parser.add_argument("--etcd-args", default="", help="extra etcd options")
    parser.add_argument("--etcd-binary", default=None, help="etcd executable (default: PATH)")
    parser.add_argument("--profile", action="store_true",
                        help="after kvd's lines, py-spy the leader under write_c32")
    parser.add_argument("--workdir", default=None,
                        help="parent of the temporary directory (default: $TMPDIR)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                        help="before each line, wait up to S seconds for other processes "
                             f"to use under {BUSY_CORES} cores (default 0: do not wait)")
    parser.add_argument("--keep", action="store_true", help="keep data dirs and logs")
    args = parser.parse_args(argv)
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    names = {line.name for line in LINES}
    args.lines = [x.strip() for x in args.lines.split(",") if x.strip()]
    unknown = [x for x in args.lines if x not in names]
    if unknown:
        parser.error(f"unknown lines: {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    return args


def check_tools(args: argparse.Namespace) -> str | None:
    """Raise NotInstalled with an install hint; returns the etcd binary (None if unused)."""
    if shutil.which("wrk") is None:
        raise NotInstalled("wrk not found: install it with `apt-get install -y wrk`")
    etcd = None
    if args.only != "kvd":
        etcd = args.etcd_binary or shutil.which("etcd")
        if etcd is None or not os.access(etcd, os.X_OK):
            raise NotInstalled(f"etcd not found ({args.etcd_binary or 'not on PATH'}): "
                               f"{ETCD_INSTALL_HINT}, or run with --only kvd")
    if args.only != "etcd":
        from kvd.testing.zookeeper import find_classpath, find_java
        try:
            find_java()
            find_classpath()
        except ZooKeeperNotInstalled as e:
            raise NotInstalled(str(e)) from None
    return etcd


def budget_seconds(args: argparse.Namespace, systems: int) -> float:
    per_line = args.duration + args.timeout + 40 + args.wait_quiet
    per_system = 240 + args.warmup + len(args.lines) * per_line + 180  # start, load, stop
    if args.profile:
        per_system += per_line
    return systems * per_system


def run_system(system: System, runner: Runner, args: argparse.Namespace, stamp: str,
               results: dict[str, WrkResult], info: dict[str, Any]) -> None:
    """Start ``system``, load it and run the lines; fills ``results`` and ``info``
    as it goes, so that an interrupted run still reports what it measured."""
    print(f"{system.name}: starting 3 nodes ...", flush=True)
    started = time.monotonic()
    system.start()
    info["startup_s"] = round(time.monotonic() - started, 2)
    info.update(system.describe())
    info["leader_url"], info["follower_url"] = system.leader_url(), system.follower_url()
    print(f"{system.name}: ready in {info['startup_s']:.1f} s; leader {system.leader_url()},"
          f" follower {system.follower_url()}", flush=True)
    info["populate_s"] = round(populate(system, args.keys, args.value_bytes, 300), 2)
    print(f"{system.name}: wrote {args.keys} keys of {args.value_bytes} bytes in "
          f"{info['populate_s']:.1f} s", flush=True)
    if args.warmup > 0:
        warm = runner.run_line(system, next(x for x in LINES if x.name == "write_c32"),
                               args.warmup, quiet=True, wait=False)
        info["warmup"] = {"rps": warm.rps, "errors": warm.errors}
    for line in LINES:
        if line.name in args.lines:
            results[line.name] = runner.run_line(system, line, args.duration)
    if args.profile and isinstance(system, KvdSystem):
        info["profile"] = profile_leader(runner, system, args.duration, stamp)


class _Interrupted(BaseException):
    pass


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        etcd_binary = check_tools(args)
    except NotInstalled as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    names = [n for n in ("kvd", "etcd") if args.only in (None, n)]
    budget = budget_seconds(args, len(names))

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        raise OutOfTime(f"the run went past its budget of {budget:.0f} s")

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted(f"signal {signum}")

    previous = {s: signal.getsignal(s) for s in (signal.SIGALRM, signal.SIGTERM)}
    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(int(budget))
    os.makedirs(RESULTS_DIR, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="kvd-vs-etcd-", dir=args.workdir)
    runner = Runner(args)
    current: System | None = None
    results: dict[str, dict[str, WrkResult]] = {}
    infos: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    print(f"kvd vs etcd: {args.duration:g} s per line, {args.keys} keys, "
          f"{args.value_bytes}-byte values, {os.cpu_count()} cores, work dir {workdir} "
          f"(time budget {budget:.0f} s)", flush=True)
    try:
        for name in names:
            system: System
            if name == "kvd":
                system = KvdSystem(os.path.join(workdir, "kvd"), args.value_bytes,
                                   shlex.split(args.kvd_args), args.session_timeout)
            else:
                assert etcd_binary is not None
                system = EtcdSystem(os.path.join(workdir, "etcd"), args.value_bytes,
                                    shlex.split(args.etcd_args), etcd_binary)
            current = system
            try:
                results[name], infos[name] = {}, {}
                run_system(system, runner, args, stamp, results[name], infos[name])
            except (BenchError, ZooKeeperStartError, TimeoutError, OSError) as e:
                failures.append(f"{name}: {e}")
                print(f"\nerror: {name} could not be measured: {e}", file=sys.stderr, flush=True)
            finally:
                runner.stop_all()
                print(f"{name}: stopping ...", flush=True)
                system.stop()
                current = None
    except (KeyboardInterrupt, _Interrupted, OutOfTime) as e:
        failures.append(f"interrupted: {e!r}")
        print(f"\ninterrupted ({e!r}); every process was stopped", file=sys.stderr,
              flush=True)
    finally:
        signal.alarm(0)
        runner.stop_all()
        if current is not None:  # interrupted while starting or stopping it
            current.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    print_table(results)
    print_internals(results)
    profile = infos.get("kvd", {}).get("profile")
    if profile:
        print_profile(profile)
    errors = [f"{r.system} {r.line}: {r.error_text()}" for lines in results.values()
              for r in lines.values() if r.errors]
    report = {
        "benchmark": "cluster-vs-etcd",
        "timestamp": stamp,
        "kvd_git": {"commit": _run_quiet(["git", "-C", REPO_DIR, "rev-parse", "HEAD"]),
                    "modified": _run_quiet(["git", "-C", REPO_DIR, "status", "--porcelain",
                                            "--", "kvd"]).splitlines()},
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                    "python": sys.version.split()[0],
                    "wrk": _run_quiet(["wrk", "-v"]).splitlines()[:1]},
        "settings": {"duration_s": args.duration, "keys": args.keys,
                     "value_bytes": args.value_bytes, "wrk_timeout_s": args.timeout,
                     "warmup_s": args.warmup, "workdir": workdir,
                     "lines": [asdict(line) for line in LINES if line.name in args.lines]},
        "systems": {name: {"info": infos.get(name, {}),
                           "lines": {k: asdict(v) for k, v in results.get(name, {}).items()}}
                    for name in names},
        "ratios_kvd_over_etcd": ratios(results),
        "target_ratio": TARGET_RATIO,
        "reference_etcd_rps": REFERENCE_ETCD_RPS,
        "errors": errors,
        "failures": failures,
    }
    out = os.path.join(RESULTS_DIR, f"cluster-vs-etcd-{stamp}.json")
    with open(out, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(f"\nresults: {out}")
    if args.keep or errors or failures:
        print(f"data dirs and logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    if errors:
        print(f"!!!!! {len(errors)} LINE(S) HAD FAILED REQUESTS: {'; '.join(errors)} !!!!!")
    return 1 if errors or failures else 0


if __name__ == "__main__":
    sys.exit(main())

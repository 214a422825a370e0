"""
What the benchmarks here share: running ``wrk`` and reading its report, the
CPU accounting of processes from /proc, starting and stopping processes,
loopback ports, a keep-alive HTTP client, the nodes' own /metrics, and the
``System`` a cluster benchmark drives (``kvd_system``, ``etcd_system``).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kvd.testing import process

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
RESULTS_DIR = os.path.join(BENCH_DIR, "results")
HOST = "127.0.0.1"
KEY_FORMAT = "k{:015d}"  # 16 bytes, the same as every .lua script here

#: Flag a run when other processes kept more than this many cores busy meanwhile.
BUSY_CORES = 0.25

_TICK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The benchmark could not run (a process would not start, wrk failed...)."""


# wrk's report (run with ``--latency``)

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


class WrkReportError(Exception):
    """wrk printed no summary: it failed to run."""


def _ms(number: str, unit: str) -> float:
    return float(number) * _UNITS[unit]


def read_report(output: str, label: str) -> dict[str, Any]:
    """requests, seconds, rps, latency_ms (p50...), non_2xx and socket_errors."""
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h)", output)
    if m is None:
        raise WrkReportError(f"wrk ({label}) printed no summary:\n{output}")
    report: dict[str, Any] = {"requests": int(m.group(1)),
                              "seconds": _ms(m.group(2), m.group(3)) / 1000}
    m = re.search(r"Requests/sec:\s+([\d.]+)", output)
    report["rps"] = float(m.group(1)) if m else 0.0
    report["latency_ms"] = {
        f"p{pct}": round(_ms(number, unit), 3)
        for pct, number, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*$", output,
                                            re.MULTILINE)
    }
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    report["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    report["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"),
                                       map(int, m.groups()), strict=True)) if m else {}
    return report


def read_wrk(output: str, label: str) -> dict[str, Any]:
    """``read_report``, failing with a BenchError when wrk printed no summary."""
    try:
        return read_report(output, label)
    except WrkReportError as e:
        raise BenchError(str(e)) from None


# Running wrk


def wrk_binary() -> str:
    return shutil.which("wrk") or "wrk"


def wrk_command(wrk: str, threads: int, connections: int, duration: str, timeout: str,
                url: str, script: str | None = None, args: Sequence[str] = ()) -> list[str]:
    """The wrk command line for one run; ``script`` is in bench/, its arguments go after
    ``--``."""
    cmd = [wrk, "-t", str(threads), "-c", str(connections), "-d", duration,
           "--latency", "--timeout", timeout]
    if script is not None:
        cmd += ["-s", os.path.join(BENCH_DIR, script)]
    cmd.append(url)
    if args:
        cmd += ["--", *args]
    return cmd


@dataclass
class WrkRun:
    """One finished wrk process, and the CPU the machine spent meanwhile."""

    output: str
    returncode: int | None
    #: Wall-clock seconds from starting wrk to having stopped it.
    seconds: float
    #: CPU seconds each watched process used meanwhile (same keys as ``pids``).
    cpu_s: dict[str, float]
    #: CPU seconds used by wrk itself.
    wrk_cpu_s: float
    #: CPU seconds the whole machine was busy, summed over cores.
    machine_busy_s: float


def run_wrk(cmd: list[str], pids: Mapping[str, int], timeout: float,
            procs: list[subprocess.Popen[Any]], tolerate_gone: bool = False) -> WrkRun:
    """Run ``cmd`` to its end and measure the CPU of ``pids`` (name -> pid) around it.

    wrk is kept in ``procs`` while it runs, so that whoever stops everything
    stops it too. Raises ``subprocess.TimeoutExpired`` (wrk stopped) after
    ``timeout`` seconds. With ``tolerate_gone``, a process that exited counts
    0 CPU seconds instead of failing with OSError.
    """
    cpu = cpu_seconds_or_zero if tolerate_gone else cpu_seconds
    cpu_before = {name: cpu(pid) for name, pid in pids.items()}
    busy_before, children_before = machine_busy_seconds(), children_cpu()
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    procs.append(proc)
    try:
        output, _ = proc.communicate(timeout=timeout)
    finally:
        stop_process(proc)  # a no-op once wrk has exited
        if proc in procs:
            procs.remove(proc)
    seconds = time.monotonic() - started
    cpu_s = {name: cpu(pid) - cpu_before[name] for name, pid in pids.items()}
    busy = machine_busy_seconds() - busy_before
    return WrkRun(output, proc.returncode, seconds, cpu_s, children_cpu() - children_before,
                  busy)


# CPU and memory of processes, from /proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def cpu_seconds_or_zero(pid: int) -> float:
    """``cpu_seconds``, 0 once the process is gone."""
    try:
        return cpu_seconds(pid)
    except OSError:
        return 0.0


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle, summed over cores."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    guest = sum(values[8:10]) if len(values) > 9 else 0  # already counted in user/nice
    return (sum(values) - idle - guest) / _TICK


def children_cpu() -> float:
    """CPU of every reaped child so far: around one wrk run, that wrk's CPU."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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


def wait_quiet(ours: list[int], limit: float) -> float:
    """Wait (up to ``limit`` s) until other processes keep < BUSY_CORES cores busy."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        busy, mine = machine_busy_seconds(), sum(cpu_seconds_or_zero(p) for p in ours)
        time.sleep(1.0)
        other = ((machine_busy_seconds() - busy)
                 - (sum(cpu_seconds_or_zero(p) for p in ours) - mine))
        if other < BUSY_CORES:
            break
    return time.monotonic() - started


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0]) * 1024
    return values


# Processes and ports


def free_port() -> int:
    """A free TCP port on the loopback address the benchmarks listen on."""
    return process.free_port(HOST)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``; always reaps."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def run_quiet(cmd: list[str]) -> str:
    """The stripped standard output of ``cmd``; "" if it could not run."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def tail(path: str, lines: int = 20) -> str:
    """The last lines of a log file."""
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


# HTTP (blocking, keep-alive)


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


def value_for(key: str, size: int) -> str:
    """The value the .lua scripts write for ``key``: the key repeated, cut to ``size``."""
    return (key * (size // len(key) + 1))[:size]


# The systems a cluster benchmark drives


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


def delta(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


def ratio(a: float, b: float, scale: float = 1.0, digits: int = 3) -> float | None:
    return round(a / b * scale, digits) if b else None


# Results


def file_stamp() -> str:
    """Now, in UTC, as it appears in the names of result files."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def write_json(path: str, report: Any, sort_keys: bool = False) -> None:
    with open(path, "w") as f:
        json.dump(report, f, indent=2, sort_keys=sort_keys)
        f.write("\n")

"""
Benchmark one standalone kvd node: throughput, memory per key, restart time.

Runs ``wrk`` (2 threads) against real ``twistd kvd --standalone`` processes on
loopback and against ``bench/noop_server.py``, the ceiling of the HTTP stack;
then loads a fresh node with N keys to measure RSS per key and the time a
restart takes to answer ``/readyz``. Prints a table and writes
``bench/results/standalone-<timestamp>.json``. See ``bench/README.rst``.

    .venv/bin/python bench/standalone.py [--duration 10] [--connections 32]
                                         [--keys 1000000] [--quick]

Benchmarks measure, they do not assert: missed targets are reported, and the
exit status is 1 only when requests failed or keys did not read back.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from harness import (
    BENCH_DIR,
    BUSY_CORES,
    HOST,
    KEY_FORMAT,
    RESULTS_DIR,
    BenchError,
    file_stamp,
    free_port,
    proc_status,
    read_wrk,
    run_wrk,
    stop_process,
    value_for,
    write_json,
    wrk_binary,
    wrk_command,
)
from kvd_system import node_pid, revision, standalone_node, stop_nodes

from kvd.testing.process import KvdProcess, request, wait_for

#: Targets from the design: fsync'd writes vs the no-op ceiling, memory, restart.
TARGET_WRITE_RATIO = 0.8
TARGET_BYTES_PER_KEY = 300
TARGET_RESTART_SECONDS = 5.0


# wrk


@dataclass
class WrkResult:
    """What one wrk run reported: throughput, latency percentiles, failures."""

    name: str
    requests: int = 0
    seconds: float = 0.0
    rps: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    non_2xx: int = 0
    socket_errors: dict[str, int] = field(default_factory=dict)
    #: CPU seconds the server process used during the run (all its threads).
    server_cpu_s: float | None = None
    #: Server CPU per answered request: steadier than req/s on a shared machine.
    server_cpu_us_per_request: float | None = None
    #: CPU seconds used by wrk itself.
    wrk_cpu_s: float | None = None
    #: Cores busy with anything else than the server and wrk, on average.
    other_load_cores: float | None = None
    command: list[str] = field(default_factory=list)
    output: str = ""

    @property
    def errors(self) -> int:
        """Every request that did not get a 2xx answer in time."""
        return self.non_2xx + sum(self.socket_errors.values())


def parse_wrk(name: str, output: str) -> WrkResult:
    """Read wrk's text report (run with ``--latency``)."""
    return WrkResult(name, output=output, **read_wrk(output, name))


class Runner:
    """Starts every process of the benchmark and stops them all, whatever happens."""

    def __init__(self, workdir: str, threads: int, connections: int) -> None:
        self.workdir = workdir
        self.threads = threads
        self.connections = connections
        self.wrk = wrk_binary()
        self._nodes: list[KvdProcess] = []
        self._procs: list[subprocess.Popen[Any]] = []

    # Processes

    def node(self, name: str, args: list[str]) -> KvdProcess:
        """A fresh standalone kvd node in its own directory, started and ready."""
        node = standalone_node(os.path.join(self.workdir, name), args)
        self._nodes.append(node)
        node.start(timeout=60)
        return node

    @contextmanager
    def noop_server(self, access_log: bool = False) -> Iterator[tuple[str, int]]:
        """Run bench/noop_server.py; yields its URL and pid."""
        port = free_port()
        log = os.path.join(self.workdir, f"noop-{port}.log")
        cmd = [sys.executable, os.path.join(BENCH_DIR, "noop_server.py"), "--port", str(port),
               "--interface", HOST, "--log", log]
        if access_log:
            cmd.append("--access-log")
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT)
        self._procs.append(proc)
        url = f"http://{HOST}:{port}"

        def up() -> bool:
            if proc.poll() is not None:
                raise BenchError(f"noop_server.py exited with {proc.returncode}; see {log}")
            return request(url, path="/noop", timeout=1).status == 200

        try:
            wait_for(up, 20, f"{url}/noop")
            yield url, proc.pid
        finally:
            stop_process(proc)

    def stop_all(self) -> None:
        """Stop every node, server and wrk this run started (SIGTERM, then SIGKILL)."""
        for proc in self._procs:
            stop_process(proc)
        stop_nodes(self._nodes)

    # wrk

    def _wrk_command(self, url: str, duration: str, script: str | None, args: list[str],
                     timeout: str) -> list[str]:
        """The wrk command line for one run; script arguments go after ``--``."""
        return wrk_command(self.wrk, self.threads, self.connections, duration, timeout, url,
                           script, args)

    def run_wrk(self, name: str, url: str, duration: int, server_pid: int,
                script: str | None = None, args: list[str] | None = None) -> WrkResult:
        """One timed wrk run; its parsed report and the CPU it cost the server."""
        cmd = self._wrk_command(url, f"{duration}s", script, args or [], "10s")
        print(f"  {name}: {duration} s ...", end="", flush=True)
        run = run_wrk(cmd, {"server": server_pid}, duration + 60, self._procs)
        server, machine, wrk_cpu = run.cpu_s["server"], run.machine_busy_s, run.wrk_cpu_s
        if run.returncode != 0:
            raise BenchError(f"wrk ({name}) exited with {run.returncode}:\n{run.output}")
        result = parse_wrk(name, run.output)
        result.command = cmd
        result.server_cpu_s = round(server, 3)
        result.wrk_cpu_s = round(wrk_cpu, 3)
        if result.requests:
            result.server_cpu_us_per_request = round(server / result.requests * 1e6, 1)
        if result.seconds:
            result.other_load_cores = round(max(0.0, machine - server - wrk_cpu)
                                            / result.seconds, 2)
        flag = f"  ({result.errors} ERRORS)" if result.errors else ""
        print(f" {result.rps:,.0f} req/s, {result.server_cpu_us_per_request or 0:,.0f} us "
              f"server CPU per request{flag}")
        return result

    def load(self, node: KvdProcess, keys: int, value_bytes: int, budget: float,
             name: str = "load") -> tuple[WrkResult, float, bool]:
        """Write keys 0..keys-1 once each with load.lua; (report, seconds, finished)."""
        marker = os.path.join(self.workdir, f"{name}-done-")
        for t in range(self.threads):
            if os.path.exists(marker + str(t)):
                os.unlink(marker + str(t))
        cmd = self._wrk_command(node.url, f"{max(1, math.ceil(budget))}s", "load.lua",
                                [str(keys), str(value_bytes), str(self.threads), marker], "30s")
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        self._procs.append(proc)
        finished = False
        next_report = started + 15
        try:
            while proc.poll() is None:
                if all(os.path.exists(marker + str(t)) for t in range(self.threads)):
                    finished = True
                    break
                if time.monotonic() >= next_report:
                    done = revision(node)
                    print(f"    {done:,} / {keys:,} keys after {time.monotonic() - started:.0f} s",
                          flush=True)
                    next_report += 15
                time.sleep(0.05)
            elapsed = time.monotonic() - started
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # wrk prints its report on SIGINT
            output, _ = proc.communicate(timeout=30)
        finally:
            stop_process(proc)
        result = parse_wrk(name, output)
        result.command = cmd
        return result, elapsed, finished


# Measurements of a node


def settle_rss(node: KvdProcess, data_dir: str, limit: float = 60.0) -> dict[str, int]:
    """RSS once no snapshot is being written and it stopped moving (or after ``limit``)."""
    deadline = time.monotonic() + limit
    last = proc_status(node_pid(node))
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = proc_status(node_pid(node))
        writing = any(n.endswith(".tmp") for n in os.listdir(os.path.join(data_dir, "snap")))
        if not writing and abs(now["VmRSS"] - last["VmRSS"]) <= 0.01 * last["VmRSS"]:
            return now
        last = now
    return last


def dir_summary(data_dir: str) -> dict[str, Any]:
    """Snapshot and WAL files of a data dir, to explain a restart time."""
    summary: dict[str, Any] = {}
    for sub, suffix in (("snap", ".snap"), ("wal", ".wal")):
        path = os.path.join(data_dir, sub)
        names = sorted(n for n in os.listdir(path) if n.endswith(suffix)) if os.path.isdir(
            path) else []
        summary[sub] = {
            "files": len(names),
            "bytes": sum(os.path.getsize(os.path.join(path, n)) for n in names),
            "newest": names[-1] if names else None,
            "newest_bytes": os.path.getsize(os.path.join(path, names[-1])) if names else 0,
        }
    return summary


def verify_keys(node: KvdProcess, keys: int, value_bytes: int, sample: int = 20) -> list[str]:
    """Read back the first, last and some random loaded keys; the problems found."""
    indexes = sorted({0, 1, keys // 2, keys - 1, *random.sample(range(keys), min(sample, keys))})
    problems = []
    for i in indexes:
        key = KEY_FORMAT.format(i)
        try:
            answer = node.call("GET", f"/api/v1/keys/{key}", timeout=10)
        except OSError as e:
            problems.append(f"{key}: {e!r}")
            continue
        if answer.status != 200:
            problems.append(f"{key}: HTTP {answer.status} {answer.body!r}")
        elif answer.body.get("value") != value_for(key, value_bytes):
            problems.append(f"{key}: wrong value {answer.body.get('value')!r}")
    return problems


def recovery_line(node: KvdProcess) -> str | None:
    """The node's last 'Recovered ...' log line: how much WAL it replayed, and how fast."""
    try:
        with open(node.log_path, errors="replace") as f:
            lines = [line.strip() for line in f if "Recovered " in line]
    except OSError:
        return None
    return lines[-1].split("] ", 1)[-1] if lines else None


def timed_restart(node: KvdProcess, how: str, keys: int, value_bytes: int) -> dict[str, Any]:
    """Stop ``node`` (SIGTERM or kill -9), start it again, time /readyz, verify keys."""
    started = time.monotonic()
    if how == "kill -9":
        node.kill()
    else:
        node.stop(timeout=60)
    stopped = time.monotonic() - started
    before = dir_summary(node.data_dir)
    started = time.monotonic()
    ready: float | None = None
    error = None
    try:
        node.start(timeout=120)
        ready = time.monotonic() - started
    except (TimeoutError, RuntimeError) as e:
        error = str(e)
    problems = verify_keys(node, keys, value_bytes) if error is None else [error]
    rss = proc_status(node_pid(node)) if error is None else {}
    return {
        "how": how,
        "stop_seconds": round(stopped, 3),
        "ready_seconds": None if ready is None else round(ready, 3),
        "data_dir": before,
        "recovery_log": recovery_line(node),
        "keys_verified": error is None and not problems,
        "problems": problems,
        "rss_bytes": rss.get("VmRSS"),
    }


# The benchmark


@dataclass
class Settings:
    """What this run was asked to do."""

    duration: int
    connections: int
    threads: int
    keys: int
    write_keys: int
    value_bytes: int
    load_budget: float
    snapshot_entries: int | None
    quick: bool
    keep: bool


def throughput(runner: Runner, s: Settings, report: dict[str, Any]) -> None:
    """Sections 1a-d: no-op ceiling, fsync'd and unsynced writes, reads."""
    runs: dict[str, WrkResult] = {}
    try:
        _throughput_runs(runner, s, report, runs)
    finally:
        report["runs"] = {name: dataclasses.asdict(r) for name, r in runs.items()}
        for r in runs.values():
            if r.errors:
                report["errors"].append(f"{r.name}: {r.non_2xx} non-2xx answers, socket "
                                        f"errors {r.socket_errors}")
        noop, put = runs.get("noop"), runs.get("put_fsync")
        if noop is not None and put is not None:
            report["write_ratio"] = round(put.rps / noop.rps, 3) if noop.rps else None
            if noop.server_cpu_us_per_request and put.server_cpu_us_per_request:
                report["write_ratio_cpu"] = round(
                    noop.server_cpu_us_per_request / put.server_cpu_us_per_request, 3)


def _throughput_runs(runner: Runner, s: Settings, report: dict[str, Any],
                     runs: dict[str, WrkResult]) -> None:
    print("HTTP ceiling (bench/noop_server.py, a no-op Klein route)")
    with runner.noop_server() as (url, pid):
        runs["noop"] = runner.run_wrk("no-op route", f"{url}/noop", s.duration, pid)
    put_args = [str(s.write_keys), str(s.value_bytes)]

    print("Node with --fsync always")
    node = runner.node("fsync-always", ["--fsync", "always"])
    runs["healthz"] = runner.run_wrk("kvd GET /healthz", f"{node.url}/healthz", s.duration,
                                     node_pid(node))
    runs["put_fsync"] = runner.run_wrk("PUT, fsync always", node.url, s.duration,
                                       node_pid(node), "write.lua", put_args)
    node.stop()

    print("Node with --fsync none")
    node = runner.node("fsync-none", ["--fsync", "none"])
    loaded, _, finished = runner.load(node, s.write_keys, s.value_bytes, 120, "preload")
    if not finished or loaded.errors:
        report["errors"].append(f"preloading {s.write_keys} keys for the reads failed: "
                                f"{loaded.errors} errors, finished={finished}")
    runs["put_nofsync"] = runner.run_wrk("PUT, fsync none", node.url, s.duration,
                                         node_pid(node), "write.lua", put_args)
    for mode in ("linearizable", "stale"):
        runs[f"get_{mode}"] = runner.run_wrk(f"GET {mode}", node.url, s.duration,
                                             node_pid(node), "read.lua",
                                             [str(s.write_keys), mode])
    node.stop()


def memory_and_restart(runner: Runner, s: Settings, report: dict[str, Any]) -> None:
    """Sections 2 and 3: RSS per key after a load, then restart times."""
    print(f"Memory: {s.keys:,} keys of 16 bytes, {s.value_bytes}-byte values, --fsync none")
    extra = ["--fsync", "none"]
    if s.snapshot_entries is not None:
        extra += ["--snapshot-entries", str(s.snapshot_entries)]
    node = runner.node("memory", extra)
    time.sleep(1.0)
    empty = proc_status(node_pid(node))
    loaded, elapsed, finished = runner.load(node, s.keys, s.value_bytes, s.load_budget)
    stored = revision(node)
    print(f"  loaded {stored:,} keys in {elapsed:.1f} s ({stored / elapsed:,.0f} keys/s)"
          + ("" if finished else "  -- LOAD DID NOT FINISH WITHIN THE BUDGET"))
    just_loaded = proc_status(node_pid(node))
    settled = settle_rss(node, node.data_dir)
    per_key = (settled["VmRSS"] - empty["VmRSS"]) / stored if stored > 0 else None
    report["memory"] = {
        "keys_requested": s.keys,
        "keys_stored": stored,
        "load_finished": finished,
        "load_seconds": round(elapsed, 3),
        "load_keys_per_second": round(stored / elapsed, 1) if elapsed else None,
        "load_wrk": dataclasses.asdict(loaded),
        "rss_empty_bytes": empty["VmRSS"],
        "rss_after_load_bytes": just_loaded["VmRSS"],
        "rss_settled_bytes": settled["VmRSS"],
        "rss_peak_bytes": settled["VmHWM"],
        "bytes_per_key": None if per_key is None else round(per_key, 1),
    }
    if not finished or stored != s.keys:
        report["errors"].append(f"load stored {stored} of {s.keys} keys (finished={finished})")
    if loaded.errors:
        report["errors"].append(f"load: {loaded.non_2xx} non-2xx answers, socket errors "
                                f"{loaded.socket_errors}")

    print("Restart")
    restarts = []
    for how in ("SIGTERM", "kill -9"):
        r = timed_restart(node, how, s.keys, s.value_bytes)
        restarts.append(r)
        shown = "FAILED" if r["ready_seconds"] is None else f"{r['ready_seconds']:.2f} s"
        print(f"  after {how}: ready in {shown}; {r['recovery_log']}")
        if r["problems"]:
            report["errors"].append(f"after {how}: {'; '.join(r['problems'][:5])}")
    report["restart"] = restarts
    node.stop()


# Output


def _fmt_ms(value: float | None) -> str:
    """Milliseconds for the table: microseconds below 1 ms."""
    if value is None:
        return "-"
    return f"{value * 1000:.0f}us" if value < 1 else f"{value:.1f}ms"


def _verdict(ok: bool | None) -> str:
    """How a target fared, for the table."""
    return "n/a" if ok is None else ("ok" if ok else "MISSED")


def table(report: dict[str, Any]) -> str:
    """The human-readable summary of a report."""
    s = report["settings"]
    lines = [
        f"kvd standalone benchmark, {report['started']}, {report['host']['cpus']} CPUs, "
        f"wrk {s['threads']} threads x {s['connections']} connections, "
        f"{s['duration']} s per run",
        "",
        f"  {'run':<34}{'req/s':>10}{'p50':>10}{'p99':>10}{'errors':>9}"
        f"{'CPU/req':>10}{'other':>8}",
    ]
    names = {
        "noop": "no-op Klein route (ceiling)",
        "healthz": "kvd GET /healthz",
        "put_fsync": "PUT, --fsync always",
        "put_nofsync": "PUT, --fsync none",
        "get_linearizable": "GET linearizable",
        "get_stale": "GET stale",
    }
    for key, label in names.items():
        r = report.get("runs", {}).get(key)
        if r is None:
            continue
        errors = r["non_2xx"] + sum(r["socket_errors"].values())
        cpu = r["server_cpu_us_per_request"]
        other = r["other_load_cores"]
        lines.append(f"  {label:<34}{r['rps']:>10,.0f}{_fmt_ms(r['latency_ms'].get('p50')):>10}"
                     f"{_fmt_ms(r['latency_ms'].get('p99')):>10}"
                     f"{(str(errors) + ' !!') if errors else '0':>9}"
                     f"{'-' if cpu is None else f'{cpu:,.0f}us':>10}"
                     f"{'-' if other is None else f'{other:.2f}':>8}")
    lines.append("  (CPU/req: server CPU per answered request; other: cores busy with "
                 "other processes)")
    ratio = report.get("write_ratio")
    if ratio is not None:
        lines.append(f"  {'fsync-always PUT / ceiling':<34}{ratio:>10.2f}"
                     f"   target >= {TARGET_WRITE_RATIO}: "
                     f"{_verdict(ratio >= TARGET_WRITE_RATIO)}")
    ratio_cpu = report.get("write_ratio_cpu")
    if ratio_cpu is not None:
        lines.append(f"  {'  same, by server CPU per request':<34}{ratio_cpu:>10.2f}")
    busy = [r["name"] for r in report.get("runs", {}).values()
            if (r["other_load_cores"] or 0) > BUSY_CORES]
    if busy:
        lines.append(f"  note: other processes kept more than {BUSY_CORES} core busy during")
        lines.append(f"    {', '.join(busy)};")
        lines.append("    req/s understate the server there, CPU/req is steadier")
    mem = report.get("memory")
    if mem:
        mib = 1024 * 1024
        per_key = mem["bytes_per_key"]
        lines += [
            "",
            f"  Memory, {mem['keys_stored']:,} keys (16-byte keys, "
            f"{s['value_bytes']}-byte values)",
            f"  {'RSS of an empty node':<34}{mem['rss_empty_bytes'] / mib:>10.1f} MiB",
            f"  {'RSS right after the load':<34}{mem['rss_after_load_bytes'] / mib:>10.1f} MiB",
            f"  {'RSS settled (measured)':<34}{mem['rss_settled_bytes'] / mib:>10.1f} MiB"
            f"   peak {mem['rss_peak_bytes'] / mib:.1f} MiB",
            f"  {'bytes per key above empty':<34}"
            f"{'-' if per_key is None else f'{per_key:,.0f}':>10}"
            f"   target <= {TARGET_BYTES_PER_KEY}: "
            f"{_verdict(None if per_key is None else per_key <= TARGET_BYTES_PER_KEY)}",
            f"  {'load rate':<34}{mem['load_keys_per_second'] or 0:>10,.0f} keys/s"
            f"   ({mem['load_seconds']:.0f} s"
            f"{'' if mem['load_finished'] else ', DID NOT FINISH'})",
        ]
    for r in report.get("restart", []):
        ready = r["ready_seconds"]
        snap, wal = r["data_dir"]["snap"], r["data_dir"]["wal"]
        lines.append(
            f"  {'restart after ' + r['how'] + ', /readyz in':<34}"
            f"{'FAILED' if ready is None else f'{ready:.2f} s':>10}"
            f"   target < {TARGET_RESTART_SECONDS:g} s: "
            f"{_verdict(None if ready is None else ready < TARGET_RESTART_SECONDS)}"
            f"; keys {'verified' if r['keys_verified'] else 'NOT VERIFIED'}"
        )
        m = re.search(r"Recovered (\d+) log entries after snapshot (\d+)", r["recovery_log"] or "")
        replayed = f", replayed {m.group(1)} entries after snapshot {m.group(2)}" if m else ""
        lines.append(
            f"  {'':<44}read a {snap['newest_bytes'] / 1024 / 1024:.0f} MiB snapshot"
            f" and {wal['bytes'] / 1024 / 1024:.0f} MiB of WAL{replayed}"
        )
    if report.get("interrupted"):
        lines += ["", "INTERRUPTED: the figures above are those of the runs that finished."]
    if report["errors"]:
        lines += ["", "!" * 78, "!!! THIS RUN HAD ERRORS; its figures are suspect:"]
        lines += [f"!!!   {e}" for e in report["errors"]]
        lines.append("!" * 78)
    return "\n".join(lines)


def write_results(report: dict[str, Any]) -> str:
    """Write the report as JSON under bench/results/; returns the path."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"standalone-{file_stamp()}.json")
    write_json(path, report, sort_keys=True)
    return path


def parse_args(argv: list[str] | None) -> Settings:
    """Command line to settings; ``--quick`` only changes the defaults."""
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--duration", type=int, default=None,
                   help="seconds per wrk run (default 10; 3 with --quick)")
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--keys", type=int, default=None,
                   help="keys to load for the memory and restart runs "
                        "(default 1,000,000; 100,000 with --quick)")
    p.add_argument("--write-keys", type=int, default=10_000,
                   help="key space of the write and read runs (default 10,000)")
    p.add_argument("--value-bytes", type=int, default=100)
    p.add_argument("--load-budget", type=float, default=600.0,
                   help="give up loading after this many seconds (default 600)")
    p.add_argument("--snapshot-entries", type=int, default=None,
                   help="pass --snapshot-entries to the memory node (default: kvd's)")
    p.add_argument("--quick", action="store_true", help="100,000 keys and 3-second runs")
    p.add_argument("--keep", action="store_true",
                   help="keep the data dirs and logs (kept anyway when the run had errors)")
    a = p.parse_args(argv)
    duration = a.duration if a.duration is not None else (3 if a.quick else 10)
    keys = a.keys if a.keys is not None else (100_000 if a.quick else 1_000_000)
    if duration < 1 or keys < 1 or a.write_keys < 1 or a.connections < a.threads:
        p.error("--duration, --keys and --write-keys must be positive, and "
                "--connections at least --threads")
    return Settings(duration, a.connections, a.threads, keys, a.write_keys, a.value_bytes,
                    a.load_budget, a.snapshot_entries, a.quick, a.keep)


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so that every process gets stopped."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    """Run every section, print the table, save the JSON; 1 if requests failed."""
    s = parse_args(argv)
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install wrk", file=sys.stderr)
        return 2
    # Ctrl-C, kill and a closed terminal all stop every process we started,
    # even when started from a shell that ignores SIGINT in background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    workdir = tempfile.mkdtemp(prefix="kvd-bench-")
    report: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": dataclasses.asdict(s),
        "host": {"cpus": os.cpu_count(), "loadavg": os.getloadavg(),
                 "python": sys.version.split()[0]},
        "targets": {"write_ratio_min": TARGET_WRITE_RATIO,
                    "bytes_per_key_max": TARGET_BYTES_PER_KEY,
                    "restart_seconds_max": TARGET_RESTART_SECONDS},
        "errors": [],
    }
    runner = Runner(workdir, s.threads, s.connections)
    started = time.monotonic()
    interrupted = False
    try:
        throughput(runner, s, report)
        memory_and_restart(runner, s, report)
    except KeyboardInterrupt:
        interrupted = True
        report["interrupted"] = True
        print("\ninterrupted; stopping every process", file=sys.stderr)
    except (BenchError, TimeoutError, RuntimeError, OSError) as e:
        report["errors"].append(f"aborted: {e}")
        print(f"\nbenchmark aborted: {e}", file=sys.stderr)
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not skip cleanup
        runner.stop_all()
        if s.keep or report["errors"]:
            report["workdir"] = workdir
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report["elapsed_seconds"] = round(time.monotonic() - started, 1)
    print()
    print(table(report))
    path = write_results(report)
    print(f"\nresults: {os.path.relpath(path)}  ({report['elapsed_seconds']:.0f} s in all)")
    if "workdir" in report:
        print(f"data dirs and logs kept in {workdir}")
    if interrupted:
        return 130
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())

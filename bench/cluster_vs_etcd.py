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
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from types import FrameType
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
if REPO_DIR not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, REPO_DIR)

from etcd_system import ETCD_INSTALL_HINT, EtcdSystem  # noqa: E402
from harness import (  # noqa: E402
    BUSY_CORES,
    KEY_FORMAT,
    RESULTS_DIR,
    BenchError,
    Conn,
    Line,
    System,
    file_stamp,
    read_wrk,
    run_quiet,
    run_wrk,
    scrape_all,
    stop_process,
    value_for,
    wait_quiet,
    write_json,
    wrk_binary,
    wrk_command,
)
from kvd_system import KvdSystem  # noqa: E402
from profiling import print_profile, profile_node  # noqa: E402

from kvd.testing.process import wait_for  # noqa: E402
from kvd.testing.zookeeper import ZooKeeperNotInstalled, ZooKeeperStartError  # noqa: E402

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


class NotInstalled(BenchError):
    """A program the benchmark needs is missing."""


class OutOfTime(BaseException):
    """The whole run went past its time budget (raised by SIGALRM)."""


LINES = [
    Line("write_c1", "writes, 1 conn, leader", 1, 1, "leader", "put", "put"),
    Line("write_c32", "writes, 32 conns, leader", 32, 2, "leader", "put", "put"),
    Line("write_c128", "writes, 128 conns, leader", 128, 2, "leader", "put", "put"),
    Line("read_linearizable_c32", "linearizable reads, 32 conns, follower", 32, 2,
         "follower", "get", "range"),
    Line("read_stale_c32", "stale/serializable reads, 32 conns, follower", 32, 2,
         "follower", "stale", "serializable"),
]
#: Lines run again on the same kvd cluster through its etcd gateway, with
#: cluster_etcd.lua (the very requests etcd gets); compared with etcd's line
#: of the same name. Reported as "v3_<line>".
GATEWAY_LINES = ["write_c1", "write_c32", "read_linearizable_c32", "read_stale_c32"]
GATEWAY_PREFIX = "v3_"


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
    report = read_wrk(output, f"{result.system} {result.line}")
    for name, value in report.items():
        setattr(result, name, value)
    return result


# Running


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


class Runner:
    """Runs wrk lines against one system, keeping every child it starts."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.wrk = wrk_binary()
        self._procs: list[subprocess.Popen[Any]] = []

    def wrk_command(self, system: System, line: Line, url: str, duration: float) -> list[str]:
        return wrk_command(self.wrk, line.threads, line.connections, f"{duration:g}s",
                           f"{self.args.timeout:g}s", url, system.script,
                           [system.mode(line), str(self.args.keys), str(self.args.value_bytes)])

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
        try:
            run = run_wrk(cmd, pids, duration + self.args.timeout + 30, self._procs,
                          tolerate_gone=True)
        except subprocess.TimeoutExpired:
            raise BenchError(f"wrk did not finish {line.name} on {system.name} in time") from None
        if run.returncode != 0:
            raise BenchError(f"wrk exited with {run.returncode}:\n{run.output}")
        parse_wrk(result, run.output)
        result.server_cpu_s = {role: round(seconds, 3) for role, seconds in run.cpu_s.items()}
        result.wrk_cpu_s = round(run.wrk_cpu_s, 3)
        used = sum(result.server_cpu_s.values()) + result.wrk_cpu_s
        result.other_load_cores = round(max(0.0, run.machine_busy_s - used) / run.seconds, 3)
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


# Report


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else (f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms")


def ratios(results: dict[str, dict[str, WrkResult]], prefix: str = "",
           ) -> dict[str, dict[str, Any]]:
    """kvd over etcd per line; with ``prefix``, kvd's gateway lines over etcd's."""
    out: dict[str, dict[str, Any]] = {}
    for line in LINES:
        kvd = results.get("kvd", {}).get(prefix + line.name)
        etcd = results.get("etcd", {}).get(line.name)
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
        out[prefix + line.name] = entry
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
    gateway = ratios(results, GATEWAY_PREFIX)
    gateway_rows = [(line, results["kvd"][GATEWAY_PREFIX + line.name]) for line in LINES
                    if GATEWAY_PREFIX + line.name in results.get("kvd", {})]
    if gateway_rows:
        print()
        print("kvd's etcd gateway (/v3/kv/put, /v3/kv/range) driven by cluster_etcd.lua, "
              "the requests etcd gets above:")
        print(head)
        print("-" * len(head))
        for line, r in gateway_rows:
            entry = gateway.get(GATEWAY_PREFIX + line.name, {})
            ratio = "" if "throughput" not in entry else f"{entry['throughput']:.2f}" + (
                "" if entry["throughput"] >= TARGET_RATIO else " MISSED")
            cpu_ratio = "" if "cpu_per_request" not in entry else \
                f"{entry['cpu_per_request']:.2f}"
            cpu = "-" if r.cluster_cpu_us_per_request is None else \
                f"{r.cluster_cpu_us_per_request:,.0f}"
            print(f"{line.title:<46} {'kvd':<5} {r.rps:>9,.0f} "
                  f"{_fmt_ms(r.latency_ms.get('p50')):>9} {_fmt_ms(r.latency_ms.get('p99')):>9}"
                  f" {cpu:>10} {ratio:>9} {cpu_ratio:>7}")
            if r.errors:
                print(f"{'':<46} !!!!! kvd {r.line}: {r.errors} FAILED REQUESTS "
                      f"({r.error_text()}) !!!!!")
                warnings.append(f"kvd {r.line}: {r.error_text()}")
            etcd = results.get("etcd", {}).get(line.name)
            if etcd is not None:  # the same requests: etcd's line, repeated for reading
                cpu = "-" if etcd.cluster_cpu_us_per_request is None else \
                    f"{etcd.cluster_cpu_us_per_request:,.0f}"
                print(f"{'':<46} {'etcd':<5} {etcd.rps:>9,.0f} "
                      f"{_fmt_ms(etcd.latency_ms.get('p50')):>9} "
                      f"{_fmt_ms(etcd.latency_ms.get('p99')):>9} {cpu:>10}")
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
    parser.add_argument("--gateway-lines", default=",".join(GATEWAY_LINES),
                        help="lines run again on kvd through its etcd gateway with etcd's "
                             "script ('' for none)")
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
                        help="after kvd's lines, py-spy the node --profile-line targets")
    parser.add_argument("--profile-line", default="write_c32",
                        help="the line run while profiling (default write_c32)")
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
    args.gateway_lines = [x.strip() for x in args.gateway_lines.split(",") if x.strip()]
    unknown = [x for x in (*args.lines, *args.gateway_lines) if x not in names]
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
    lines = len(args.lines) + len(args.gateway_lines)
    per_system = 240 + args.warmup + lines * per_line + 180  # start, load, stop
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
        line = next(x for x in LINES if x.name == args.profile_line)
        info["profile"] = profile_node(
            system, line.target, line.name,
            lambda seconds: runner.run_line(system, line, seconds, quiet=True, wait=False),
            args.duration, args.wait_quiet, args.timeout, stamp)
    if args.gateway_lines and isinstance(system, KvdSystem):
        system.use_gateway()
        for line in LINES:
            if line.name in args.gateway_lines:
                result = runner.run_line(system, line, args.duration)
                result.line = GATEWAY_PREFIX + line.name
                results[result.line] = result


class _Interrupted(BaseException):
    pass


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        etcd_binary = check_tools(args)
    except NotInstalled as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stamp = file_stamp()
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
        "kvd_git": {"commit": run_quiet(["git", "-C", REPO_DIR, "rev-parse", "HEAD"]),
                    "modified": run_quiet(["git", "-C", REPO_DIR, "status", "--porcelain",
                                            "--", "kvd"]).splitlines()},
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                    "python": sys.version.split()[0],
                    "wrk": run_quiet(["wrk", "-v"]).splitlines()[:1]},
        "settings": {"duration_s": args.duration, "keys": args.keys,
                     "value_bytes": args.value_bytes, "wrk_timeout_s": args.timeout,
                     "warmup_s": args.warmup, "workdir": workdir,
                     "lines": [asdict(line) for line in LINES if line.name in args.lines]},
        "systems": {name: {"info": infos.get(name, {}),
                           "lines": {k: asdict(v) for k, v in results.get(name, {}).items()}}
                    for name in names},
        "ratios_kvd_over_etcd": ratios(results),
        "ratios_kvd_gateway_over_etcd": ratios(results, GATEWAY_PREFIX),
        "target_ratio": TARGET_RATIO,
        "reference_etcd_rps": REFERENCE_ETCD_RPS,
        "errors": errors,
        "failures": failures,
    }
    out = os.path.join(RESULTS_DIR, f"cluster-vs-etcd-{stamp}.json")
    write_json(out, report)
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

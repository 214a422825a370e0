"""
One torture run: a real cluster behind peer proxies, clients, a nemesis, then the checks.

The run goes: ZooKeeper and N ``twistd kvd`` nodes start (each advertising
its peer proxy, reaching ZooKeeper through its own link, its reactor clock
steppable); the clients start; after a quiet spell the nemesis injects
faults until the fault window ends, heals everything and the clients go on
for a quiet spell; then the clients stop and the run is checked:

``linearizable``
    the recorded history passes the Wing-Gong-Lowe checker;
``acknowledged-writes-survive``
    every acknowledged put/CAS is still there in the final linearizable reads
    through every node and in every node's final state (its value, or a later
    revision);
``replicas-converge``
    once healed and idle, every node has the same applied and commit index,
    store revision and key/value/revision digest;
``writes-resume``
    after every heal (the last one included) a write is acknowledged within
    the bound, both for the nemesis' probe and for the clients after the last;
``revisions-unique``
    no two acknowledged writes got the same revision;
``answers-well-formed``
    no 500 and no status or body the API contract does not allow;
``nodes-stay-up``
    no node exited by itself.

Everything is kept in the run directory: ``history.jsonl`` (the checker's
JSON lines format, re-checkable with ``python -m kvd.torture.checker``),
``trace.jsonl`` (each op again, with the node that served it and its raw
answer), ``report.txt``, ``torture.log`` and each node's ``kvd.log``; the
data dirs are deleted after a passing run unless asked to keep them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogPublisher,
    textFileLogObserver,
)

from kvd.testing import wallclock
from kvd.testing.cluster import Cluster
from kvd.testing.process import KvdProcess, free_port
from kvd.testing.zookeeper import ZooKeeperServer
from kvd.torture.checker import (
    CAS,
    GET,
    ILLEGAL,
    OK,
    OUTCOMES,
    PUT,
    CheckResult,
    Operation,
    check_history,
    operation_to_json,
    save_history,
)
from kvd.torture.nemesis import FAULTS, FaultEvent, Nemesis, Timing
from kvd.torture.proxy import ProxyNet, ZooKeeperLinks
from kvd.torture.recorder import Recorder, Workload

log = Logger()


@dataclass(frozen=True)
class TortureConfig:
    """Everything a run depends on; the defaults suit a one-minute run."""

    duration: float = 60.0
    clients: int = 8
    faults: tuple[str, ...] = FAULTS
    seed: int = 1
    #: The run directory is created inside it (a temporary directory if None).
    workdir: str | None = None
    nodes: int = 3
    #: Voters the cluster starts with (``--replicas``; None: every node); the rest
    #: join as learners (for ``grow-shrink``).
    replicas: int | None = None
    keys: int = 5
    session_timeout: float = 2.0
    #: kvd's ``--write-timeout``: below the client timeout, so clients see 504s.
    write_timeout: float = 3.0
    request_timeout: float = 5.0
    #: kvd's ``--snapshot-entries``: small, so snapshots and log compaction happen.
    snapshot_entries: int = 500
    quiet_before: float = 5.0
    quiet_after: float = 10.0
    recovery_bound: float = 15.0
    #: Seconds the linearizability search may spend per key.
    check_budget: float = 60.0
    think: float = 0.0
    #: Retries of a write of unknown outcome, with the same Idempotency-Key.
    retries: int = 1
    keep_data: bool = False


@dataclass
class Check:
    """The verdict of one check, with what it found."""

    name: str
    passed: bool
    summary: str
    details: list[str] = field(default_factory=list)

    def format(self, max_details: int = 20) -> str:
        """Verdict line, then details (at most ``max_details``)."""
        lines = [f"  [{'PASS' if self.passed else 'FAIL'}] {self.name}: {self.summary}"]
        for detail in self.details[:max_details]:
            lines += ["      " + line for line in detail.splitlines()]
        if len(self.details) > max_details:
            lines.append(f"      ... and {len(self.details) - max_details} more")
        return "\n".join(lines)


@dataclass
class Report:
    """What a run did and found."""

    config: TortureConfig
    run_dir: str
    history_path: str = ""
    ops: Counter[tuple[str, str]] = field(default_factory=Counter)
    answers: Counter[tuple[str, str]] = field(default_factory=Counter)
    faults: list[FaultEvent] = field(default_factory=list)
    windows: dict[str, tuple[float, float, int, int]] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    elapsed: float = 0.0
    proxy_connections: tuple[int, int] = (0, 0)
    #: ZooKeeper connections reset by ``zk-cut`` at the nodes' links.
    zk_link_resets: int = 0
    #: Retries of unknown writes (same Idempotency-Key), and how many a retry settled.
    retries: tuple[int, int] = (0, 0)
    error: str | None = None

    @property
    def passed(self) -> bool:
        """True when the run completed and every check passed."""
        return self.error is None and bool(self.checks) and all(c.passed for c in self.checks)

    def format(self) -> str:
        """The human-readable report printed at the end of a run."""
        c = self.config
        lines = [
            f"kvd torture run: seed {c.seed}, {c.nodes} nodes, {c.clients} clients, "
            f"{c.keys} keys, {c.duration:g}s planned, {self.elapsed:.1f}s taken",
            f"run directory: {self.run_dir}",
            "",
            "operations by outcome:",
        ]
        kinds = [PUT, CAS, GET]
        for kind in kinds:
            counts = ", ".join(f"{o} {self.ops[(kind, o)]}" for o in OUTCOMES)
            total = sum(self.ops[(kind, o)] for o in OUTCOMES)
            lines.append(f"  {kind:<4} {total:>6}: {counts}")
        total = sum(self.ops.values())
        lines.append(
            f"  all  {total:>6}: "
            + ", ".join(f"{o} {sum(self.ops[(k, o)] for k in kinds)}" for o in OUTCOMES)
        )
        lines.append(f"retries of unknown writes (same Idempotency-Key): {self.retries[0]}, "
                     f"{self.retries[1]} settled by the retry's answer")
        lines.append("answers (status or error, every attempt):")
        for kind in kinds:
            seen = sorted((label, n) for (k, label), n in self.answers.items() if k == kind)
            lines.append(f"  {kind:<4} " + ", ".join(f"{label}: {n}" for label, n in seen))
        injected = [f for f in self.faults if f.injected]
        per_kind = Counter(f.name for f in injected)
        lines += ["", f"faults injected: {len(injected)} "
                      f"({', '.join(f'{k} x{n}' for k, n in sorted(per_kind.items())) or 'none'})"]
        missing = sorted(set(c.faults) - set(per_kind))
        if missing:
            lines.append(f"  asked for but never injected: {', '.join(missing)}")
        lines += ["  " + f.describe() for f in self.faults]
        identified, unknown = self.proxy_connections
        lines.append(f"  peer connections through the proxies: {identified} identified by "
                     f"source, {unknown} of unknown source; {self.zk_link_resets} ZooKeeper "
                     f"connections reset at the nodes' links")
        lines += ["", "throughput (acknowledged ops/s, all ops/s):"]
        for name, (start, end, ok, count) in self.windows.items():
            span = max(end - start, 1e-9)
            lines.append(f"  {name:<7} [{start:7.2f}s, {end:7.2f}s]: {ok / span:8.1f} ok/s, "
                         f"{count / span:8.1f} ops/s")
        lines += ["", "checks:"]
        lines += [check.format() for check in self.checks]
        if self.error:
            lines += ["", f"RUN ERROR: {self.error}"]
        lines += ["", f"history: {self.history_path}" if self.history_path else "",
                  f"verdict: {'PASS' if self.passed else 'FAIL'}"]
        if not self.passed:
            lines.append(f"evidence kept in {self.run_dir} (history.jsonl, trace.jsonl, "
                         f"report.txt, torture.log, node*/kvd.log, node*/data, zookeeper/)")
        return "\n".join(lines)


def make_run_dir(workdir: str | None, seed: int) -> str:
    """A fresh directory for this run inside ``workdir``."""
    base = workdir or tempfile.mkdtemp(prefix="kvd-torture-")
    os.makedirs(base, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        path = os.path.join(base, f"run-{stamp}-seed{seed}" + (f"-{n}" if n else ""))
        try:
            os.makedirs(path)
            return os.path.abspath(path)
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a run directory in {base}")


async def _sleep(reactor: IReactorTime, seconds: float) -> None:
    await deferLater(reactor, max(0.0, seconds))


class _Run:
    """The state of one run, so that the steps and the cleanup can share it."""

    def __init__(self, reactor: Any, config: TortureConfig, run_dir: str) -> None:
        self.reactor = reactor
        self.config = config
        self.run_dir = run_dir
        self.report = Report(config, run_dir)
        self.zookeeper = ZooKeeperServer(os.path.join(run_dir, "zookeeper"))
        self.cluster: Cluster | None = None
        self.net: ProxyNet | None = None
        self.links: ZooKeeperLinks | None = None
        self.recorder: Recorder | None = None
        self.nemesis: Nemesis | None = None
        self.origin = 0.0

    def now(self) -> float:
        return time.monotonic() - self.origin

    # Set-up and tear-down

    def node_pids(self) -> dict[int, int]:
        """Node process id -> node index, for the proxies."""
        pids = {}
        if self.cluster is not None:
            for index, node in enumerate(self.cluster.nodes):
                if node.proc is not None and node.proc.poll() is None:
                    pids[node.proc.pid] = index
        return pids

    async def start_cluster(self) -> None:
        """ZooKeeper, one peer proxy and one ZooKeeper link per node, and the nodes.

        Each node advertises its peer proxy as its peer URL, reaches ZooKeeper
        through its own link, and reads the wall clock through an offset file
        (``clock-step``).
        """
        c = self.config
        await deferToThread(self.zookeeper.start)
        self.net = ProxyNet(self.reactor, self.node_pids)
        self.links = ZooKeeperLinks(self.reactor, lambda: {})
        nodes = []
        for i in range(c.nodes):
            node = KvdProcess(os.path.join(self.run_dir, f"node{i}"))
            peer_port = free_port()
            proxy = self.net.add(peer_port)
            self.links.add(self.zookeeper.port)
            clock = os.path.join(node.workdir, "wall-clock-offset")
            os.makedirs(node.workdir, exist_ok=True)
            wallclock.write_offset(clock, 0.0)
            node.env = {wallclock.ENV: clock}
            node.args = [
                "--zookeeper", self.links.hosts(i), "--cluster", "torture",
                "--session-timeout", str(c.session_timeout),
                "--write-timeout", str(c.write_timeout),
                "--snapshot-entries", str(c.snapshot_entries),
                "--replicas", str(c.nodes if c.replicas is None else c.replicas),
                # Peers reach each other only through the proxies.
                "--peer-listen", f"tcp:{peer_port}:interface=127.0.0.1",
                "--advertise-peer", proxy.url,
            ]
            nodes.append(node)
        self.cluster = Cluster(self.run_dir, self.zookeeper, size=c.nodes, name="torture",
                               session_timeout=c.session_timeout, nodes=nodes)
        await deferToThread(self.cluster.start, 90.0)

    def emergency_stop(self) -> None:
        """Blocking: kill every process of the run (reactor shutdown, Ctrl-C)."""
        if self.cluster is not None:
            for node in self.cluster.nodes:
                try:
                    node.signal(signal.SIGCONT)
                    node.kill()
                except Exception:
                    pass
        self.zookeeper.stop(timeout=5)

    async def stop_everything(self) -> None:
        """Stop the nodes, ZooKeeper, the proxies and the client connections."""
        if self.recorder is not None:
            await self.recorder.stop()  # already stopped unless the run failed half-way
            await self.recorder.close()
        if self.cluster is not None:
            await deferToThread(self.cluster.stop)
        await deferToThread(self.zookeeper.stop)
        if self.net is not None:
            self.report.proxy_connections = (self.net.identified, self.net.unknown_sources)
            await self.net.close()
        if self.links is not None:
            self.report.zk_link_resets = self.links.resets
            await self.links.close()

    # The run itself

    async def run(self) -> None:
        """Start, record under faults, heal, stop the clients, check."""
        c = self.config
        await self.start_cluster()
        assert self.cluster is not None and self.net is not None
        log.info("Cluster up: {urls}", urls=[n.url for n in self.cluster.nodes])
        self.origin = time.monotonic()
        workload = Workload(clients=c.clients, keys=c.keys, request_timeout=c.request_timeout,
                            think=c.think, retries=c.retries)
        self.recorder = Recorder(self.reactor, [n.url for n in self.cluster.nodes], workload,
                                 c.seed, self.origin)
        timing = Timing(session_timeout=c.session_timeout, recovery_bound=c.recovery_bound)
        self.nemesis = Nemesis(self.reactor, self.cluster, self.zookeeper, self.net,
                               tuple(c.faults), c.seed, self.origin, timing, links=self.links)
        self.recorder.start()
        fault_window_end = c.duration - c.quiet_after
        await _sleep(self.reactor, c.quiet_before)
        try:
            if c.faults:
                await self.nemesis.run(until=fault_window_end)
        finally:
            await self.nemesis.heal_all()
        last_heal = self.nemesis.last_heal
        after_from = last_heal if last_heal is not None else self.now()
        await _sleep(self.reactor, max(c.duration - self.now(),
                                       after_from + c.quiet_after - self.now()))
        await self.nemesis.check_exits()
        await self.recorder.stop()
        clients_end = self.now()
        log.info("Clients stopped after {t:.1f}s; checking", t=clients_end)
        first_fault = min((f.started for f in self.nemesis.events if f.injected
                           and f.started is not None), default=None)
        self.report.windows = self.throughput(first_fault, last_heal, clients_end)
        checks = self.report.checks
        converged, states = await self.converge()
        checks.append(converged)
        finals = await self.final_reads()
        history = self.recorder.history
        self.report.history_path = os.path.join(self.run_dir, "history.jsonl")
        await deferToThread(save_history, history, self.report.history_path)
        await deferToThread(_save_trace, history, self.recorder.trace,
                            os.path.join(self.run_dir, "trace.jsonl"))
        checks.append(await self.check_linearizable(history))
        checks.append(self.check_acknowledged(history, finals, states))
        checks.append(self.check_writes_resume(history, last_heal))
        checks.append(self.check_revisions_unique(history))
        checks.append(self.check_answers())
        checks.append(self.check_nodes_up())
        self.report.ops = Counter(self.recorder.outcomes)
        self.report.answers = Counter(self.recorder.answers)
        self.report.retries = (self.recorder.retried, self.recorder.settled_by_retry)
        self.report.faults = list(self.nemesis.events)

    def throughput(self, first_fault: float | None, last_heal: float | None, end: float
                   ) -> dict[str, tuple[float, float, int, int]]:
        """(start, end, acknowledged ops, all ops) completed in each phase of the run."""
        assert self.recorder is not None
        if first_fault is None or last_heal is None:
            bounds = {"all": (0.0, end)}
        else:
            bounds = {"before": (0.0, first_fault), "during": (first_fault, last_heal),
                      "after": (last_heal, end)}
        windows = {}
        for name, (start, stop) in bounds.items():
            inside = [op for op in self.recorder.history
                      if op.complete is not None and start <= op.complete < stop]
            windows[name] = (start, stop, sum(op.outcome == OK for op in inside), len(inside))
        return windows

    # Convergence

    async def _json(self, url: str) -> tuple[int, Any, dict[str, str]]:
        assert self.recorder is not None
        answer = await self.recorder._exchange("GET", url)
        if answer.error is not None:
            raise RuntimeError(answer.describe())
        return answer.status or 0, answer.body, answer.headers

    async def _node_states(self) -> list[dict[str, Any]]:
        """Each node's index, revision and state digest (stale reads: no round trip)."""
        assert self.cluster is not None
        states = []
        for i, node in enumerate(self.cluster.nodes):
            try:
                _, before, _ = await self._json(f"{node.url}/api/v1/cluster")
                status, scan, headers = await self._json(
                    f"{node.url}/api/v1/keys?prefix=&consistency=stale")
                _, after, _ = await self._json(f"{node.url}/api/v1/cluster")
            except Exception as e:
                states.append({"node": i, "error": str(e)})
                continue
            kvs = scan.get("kvs", []) if status == 200 and isinstance(scan, dict) else None
            digest = hashlib.sha256(json.dumps(kvs, sort_keys=True).encode()).hexdigest()
            states.append({
                "node": i, "role": after.get("role"), "epoch": after.get("epoch"),
                "applied": after.get("applied_index"), "commit": after.get("commit_index"),
                "stable": before.get("applied_index") == after.get("applied_index"),
                "revision": headers.get("x-kvd-revision"), "keys": len(kvs or []),
                "digest": digest[:16], "kvs": kvs, "scan_status": status,
            })
        return states

    async def converge(self, bound: float = 30.0) -> tuple[Check, list[dict[str, Any]]]:
        """Wait (up to ``bound``) until every node holds the same state at the same index."""
        deadline = time.monotonic() + bound
        states: list[dict[str, Any]] = []
        while True:
            states = await self._node_states()
            fields = [(s.get("applied"), s.get("commit"), s.get("revision"), s.get("digest"))
                      for s in states]
            same = all("error" not in s and s["stable"] and s["applied"] == s["commit"]
                       for s in states) and len(set(fields)) == 1
            if same:
                s = states[0]
                return Check("replicas-converge", True,
                             f"{len(states)} nodes at applied index {s['applied']}, revision "
                             f"{s['revision']}, {s['keys']} keys, digest {s['digest']}"), states
            if time.monotonic() > deadline:
                break
            await _sleep(self.reactor, 0.25)
        details = [
            f"node{s['node']}: " + (s["error"] if "error" in s else
                                    f"role {s['role']} epoch {s['epoch']} applied {s['applied']} "
                                    f"commit {s['commit']} revision {s['revision']} keys "
                                    f"{s['keys']} digest {s['digest']}")
            for s in states
        ]
        details += _state_differences(states)
        return Check("replicas-converge", False,
                     f"nodes still differ {bound:g}s after the clients stopped", details), states

    async def final_reads(self, bound: float = 30.0) -> dict[int, dict[str, Operation]]:
        """A linearizable read of every key through every node (recorded in the history).

        Failed reads are retried until ``bound`` seconds have passed in all.
        """
        assert self.recorder is not None and self.cluster is not None
        deadline = time.monotonic() + bound
        finals: dict[int, dict[str, Operation]] = {}
        for i, node in enumerate(self.cluster.nodes):
            finals[i] = {}
            for key in self.recorder.keys:
                while True:
                    op = await self.recorder.get(f"final-node{i}", node.url, key)
                    if op.outcome == OK:
                        finals[i][key] = op
                        break
                    if time.monotonic() > deadline:
                        break
                    await _sleep(self.reactor, 0.25)
        return finals

    # Checks

    async def check_linearizable(self, history: Sequence[Operation]) -> Check:
        """The Wing-Gong-Lowe checker over the whole history."""
        result: CheckResult = await deferToThread(
            check_history, history, self.config.check_budget)
        text = result.format()
        first = text.splitlines()[0]
        if result.verdict == OK:
            return Check("linearizable", True, first)
        details = [r.format() for r in result.keys.values() if r.verdict != OK]
        if result.verdict == ILLEGAL:
            return Check("linearizable", False, f"NOT linearizable: {first}", details)
        return Check("linearizable", False, f"undecided (search budget exhausted): {first}",
                     details)

    def check_acknowledged(self, history: Sequence[Operation],
                           finals: dict[int, dict[str, Operation]],
                           states: list[dict[str, Any]]) -> Check:
        """Every acknowledged write, or a later one, is in every final read and node state."""
        acked: dict[str, list[Operation]] = {}
        for op in history:
            if op.outcome == OK and op.kind in (PUT, CAS) and isinstance(op.output, int):
                acked.setdefault(op.key, []).append(op)
        problems = []
        views: list[tuple[str, dict[str, tuple[str | None, int]]]] = []
        for node, reads in finals.items():
            views.append((f"final linearizable read through node{node}",
                          {k: tuple(op.output) for k, op in reads.items()}))
            missing = sorted(set(self._keys()) - set(reads))
            if missing:
                problems.append(f"node{node}: no final read succeeded for {missing}")
        for state in states:
            if state.get("kvs") is not None:
                views.append((f"final state of node{state['node']}",
                              {kv["key"]: (kv["value"], kv["revision"]) for kv in state["kvs"]}))
        checked = 0
        for key, ops in acked.items():
            last = max(ops, key=lambda o: o.output)
            for where, view in views:
                if key not in view and where.startswith("final linearizable"):
                    continue  # reported above
                value, revision = view.get(key, (None, 0))
                checked += 1
                if revision < last.output or (revision == last.output
                                              and value != last.args[-1]):
                    shown = "absent" if value is None else f"{value!r} at revision {revision}"
                    problems.append(
                        f"key {key!r}: {where} shows {shown}, but this write was acknowledged: "
                        f"{last.describe()}")
        n = sum(len(ops) for ops in acked.values())
        if problems:
            return Check("acknowledged-writes-survive", False,
                         f"{len(problems)} lost or missing acknowledged writes", problems)
        return Check("acknowledged-writes-survive", True,
                     f"{n} acknowledged writes on {len(acked)} keys, latest of each found in "
                     f"{len(views)} final views")

    def _keys(self) -> list[str]:
        assert self.recorder is not None
        return self.recorder.keys

    def check_writes_resume(self, history: Sequence[Operation], last_heal: float | None
                            ) -> Check:
        """After every heal, writes are acknowledged again within the bound."""
        assert self.nemesis is not None
        bound = self.config.recovery_bound
        problems = [f"no probe write acknowledged within {bound:g}s of the heal: {e.describe()}"
                    for e in self.nemesis.events if e.injected and e.recovered is None]
        times = [e.recovered for e in self.nemesis.events if e.recovered is not None]
        summary = (f"after {len(times)} heals, probe writes acknowledged within "
                   f"{max(times):.2f}s at most" if times else "no fault was healed")
        if last_heal is not None:
            after = [op.complete for op in history if op.kind in (PUT, CAS) and op.outcome == OK
                     and op.invoke >= last_heal and op.complete is not None]
            first = min(after, default=None)
            if first is None or first - last_heal > bound:
                problems.append(f"no client write invoked after the last heal "
                                f"(t={last_heal:.2f}s) was acknowledged within {bound:g}s")
            else:
                summary += f"; clients' first write after the last heal took " \
                           f"{first - last_heal:.2f}s"
        return Check("writes-resume", not problems, summary if not problems else
                     f"{len(problems)} slow recoveries (bound {bound:g}s)", problems)

    def check_revisions_unique(self, history: Sequence[Operation]) -> Check:
        """Two acknowledged writes never share a revision (revisions are a global counter)."""
        by_revision: dict[int, list[Operation]] = {}
        for op in history:
            if op.outcome == OK and op.kind in (PUT, CAS) and isinstance(op.output, int):
                by_revision.setdefault(op.output, []).append(op)
        clashes = {r: ops for r, ops in by_revision.items() if len(ops) > 1}
        if clashes:
            details = [f"revision {r}:\n" + "\n".join(op.describe() for op in ops)
                       for r, ops in sorted(clashes.items())]
            return Check("revisions-unique", False,
                         f"{len(clashes)} revisions given to several writes", details)
        return Check("revisions-unique", True,
                     f"{len(by_revision)} acknowledged writes, all revisions distinct")

    def check_answers(self) -> Check:
        """No answer outside the client API's contract."""
        assert self.recorder is not None
        anomalies = self.recorder.anomalies
        if anomalies:
            kinds = ", ".join(f"{label} x{n}"
                              for label, n in self.recorder.anomaly_kinds.most_common())
            return Check("answers-well-formed", False,
                         f"{len(anomalies)} answers outside the API contract: {kinds} (a 500 "
                         f"leaves a traceback in node*/kvd.log)", anomalies)
        return Check("answers-well-formed", True, "every answer had an allowed status and shape")

    def check_nodes_up(self) -> Check:
        """No node exited without being killed."""
        assert self.nemesis is not None
        exits = self.nemesis.unexpected_exits
        if exits:
            return Check("nodes-stay-up", False, f"{len(exits)} unexpected node exits", exits)
        return Check("nodes-stay-up", True, "no node exited by itself")


def _state_differences(states: list[dict[str, Any]]) -> list[str]:
    """Keys whose value or revision differ between nodes' final states."""
    views = {s["node"]: {kv["key"]: (kv["value"], kv["revision"]) for kv in s["kvs"]}
             for s in states if s.get("kvs") is not None}
    keys = sorted({k for view in views.values() for k in view})
    out = []
    for key in keys:
        seen = {node: view.get(key) for node, view in views.items()}
        if len(set(seen.values())) > 1:
            out.append(f"key {key!r}: " + ", ".join(f"node{n}={v}" for n, v in seen.items()))
    return out


async def run_torture(reactor: Any, config: TortureConfig) -> Report:
    """Run one torture run on ``reactor`` and return its report (never raises for a finding).

    Every process started is stopped before this returns (and on reactor shutdown).
    """
    started = time.monotonic()
    run_dir = make_run_dir(config.workdir, config.seed)
    log_file = open(os.path.join(run_dir, "torture.log"), "a", encoding="utf-8")
    observer = FilteringLogObserver(
        textFileLogObserver(log_file),
        [LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)],
    )
    globalLogPublisher.addObserver(observer)
    run = _Run(reactor, config, run_dir)
    trigger = reactor.addSystemEventTrigger("before", "shutdown", run.emergency_stop)
    try:
        try:
            await run.run()
        except Exception as e:
            log.failure("The torture run failed")
            run.report.error = f"{type(e).__name__}: {e}"
        finally:
            try:
                await run.stop_everything()
            finally:
                reactor.removeSystemEventTrigger(trigger)
        run.report.elapsed = time.monotonic() - started
        text = run.report.format()
        with open(os.path.join(run_dir, "report.txt"), "w", encoding="utf-8") as f:
            f.write(text + "\n")
        if run.report.passed and not config.keep_data:
            await deferToThread(_remove_data, run_dir, config.nodes)
        return run.report
    finally:
        globalLogPublisher.removeObserver(observer)
        log_file.close()


def _save_trace(history: Sequence[Operation], trace: Sequence[dict[str, str | int]],
                path: str) -> None:
    """Each op of the history with the node that served it and its raw answer."""
    with open(path, "w", encoding="utf-8") as f:
        for n, (op, extra) in enumerate(zip(history, trace, strict=True)):
            f.write(json.dumps({"n": n, **operation_to_json(op), **extra}, sort_keys=True))
            f.write("\n")


def _remove_data(run_dir: str, nodes: int) -> None:
    """Delete node data dirs and ZooKeeper's data (logs, history and report stay)."""
    for i in range(nodes):
        shutil.rmtree(os.path.join(run_dir, f"node{i}", "data"), ignore_errors=True)
    shutil.rmtree(os.path.join(run_dir, "zookeeper", "data"), ignore_errors=True)


def run_blocking(config: TortureConfig) -> Report:
    """Run with the global reactor from a plain program (the reactor must not be running)."""
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred
    from twisted.internet.task import react

    out: list[Report] = []

    async def main(_: Any) -> None:
        out.append(await run_torture(reactor, config))

    try:
        react(lambda r: ensureDeferred(main(r)))
    except SystemExit:
        pass
    if not out:
        raise RuntimeError("the torture run was interrupted")
    return out[0]


__all__ = ["Check", "Report", "TortureConfig", "run_blocking", "run_torture"]

"""
The nemesis: injects one fault at a time into a live cluster, heals it, and
measures how long the cluster takes to serve writes again.

It runs on the reactor as a coroutine; everything that blocks (the testing
helpers ``Cluster``, ``KvdProcess`` and ``ZooKeeperServer``, file writes)
runs in the reactor's thread pool, so the recorder's clients keep going.

Faults (``FAULTS``):

* ``kill-leader`` / ``kill-follower``: ``kill -9``, a short outage, restart.
  While the node is down its peer proxy refuses connections, as a dead host's
  port would.
* ``pause-leader``: ``SIGSTOP`` for longer than the ZooKeeper session timeout,
  then ``SIGCONT``: the old leader wakes up fenced (or must be).
* ``partition-leader`` / ``partition-follower``: cut one node's peer traffic
  both ways at the proxies (mode ``drop`` or ``reset``, chosen at random).
  ZooKeeper traffic is not cut.
* ``zk-restart``: stop ZooKeeper, wait, start it again (same port and data).
* ``zk-expire``: force the expiry of the leader's ZooKeeper session.
* ``torn-tail``: ``kill -9`` a node (the leader or a follower), append garbage
  bytes to its newest WAL segment, restart it.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from kvd.testing.cluster import Cluster
from kvd.testing.process import wait_for
from kvd.testing.zookeeper import ZooKeeperServer
from kvd.torture.proxy import MODES, ProxyNet

log = Logger()

FAULTS = (
    "kill-leader",
    "kill-follower",
    "pause-leader",
    "partition-leader",
    "partition-follower",
    "zk-restart",
    "zk-expire",
    "torn-tail",
)

#: Key the nemesis writes to see whether the cluster serves writes (not in the history).
PROBE_KEY = "torture-probe"

T = TypeVar("T")


@dataclass
class FaultEvent:
    """One fault as it happened; times are seconds since the run's origin."""

    name: str
    target: str = ""
    started: float | None = None
    healed: float | None = None
    #: Seconds from the heal to the first write acknowledged through the leader.
    recovered: float | None = None
    detail: str = ""
    #: Why the fault could not be injected (then it is not counted as injected).
    error: str | None = None

    @property
    def injected(self) -> bool:
        """Whether the fault really happened."""
        return self.started is not None and self.error is None

    def describe(self) -> str:
        """One line for the report."""
        when = f"t={self.started:7.2f}s" if self.started is not None else "t=      -"
        held = (
            f"held {self.healed - self.started:5.2f}s"
            if self.healed is not None and self.started is not None
            else "not healed"
        )
        recovery = (
            f"writes again after {self.recovered:5.2f}s"
            if self.recovered is not None
            else "no write acknowledged within the bound"
        )
        line = f"{when} {self.name:<18} {self.target:<16} {held}, {recovery}"
        if self.detail:
            line += f"; {self.detail}"
        if self.error:
            line = f"{when} {self.name:<18} NOT INJECTED: {self.error}"
        return line


@dataclass
class Timing:
    """How long faults last, in seconds (ranges are drawn uniformly)."""

    session_timeout: float = 2.0
    kill_hold: tuple[float, float] = (1.0, 3.0)
    pause_extra: tuple[float, float] = (1.0, 2.0)
    partition_hold: tuple[float, float] = (4.0, 6.0)
    zk_hold: tuple[float, float] = (1.0, 3.0)
    torn_hold: tuple[float, float] = (0.5, 1.5)
    gap: tuple[float, float] = (0.5, 1.5)
    #: The cluster must serve writes again within this after every heal.
    recovery_bound: float = 15.0
    #: How long to wait for a leader before a fault that needs one is skipped.
    leader_wait: float = 20.0


@dataclass
class Nemesis:
    """Faults and heals for one cluster, its ZooKeeper and its peer proxies."""

    reactor: Any
    cluster: Cluster
    zookeeper: ZooKeeperServer
    net: ProxyNet
    faults: tuple[str, ...]
    seed: int
    origin: float
    timing: Timing = field(default_factory=Timing)
    events: list[FaultEvent] = field(default_factory=list)
    #: Nodes killed by the nemesis and not restarted yet.
    killed: set[int] = field(default_factory=set)
    paused: set[int] = field(default_factory=set)
    #: Nodes that exited without being killed: each one is a finding.
    unexpected_exits: list[str] = field(default_factory=list)
    zookeeper_down: bool = False

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._probes = 0
        unknown = set(self.faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults: {', '.join(sorted(unknown))}")

    def now(self) -> float:
        """Seconds since the run's origin."""
        return time.monotonic() - self.origin

    @property
    def last_heal(self) -> float | None:
        """When the last injected fault was healed."""
        heals = [e.healed for e in self.events if e.injected and e.healed is not None]
        return max(heals) if heals else None

    # Helpers

    def _thread(self, f: Callable[..., T], *args: Any, **kwargs: Any) -> Awaitable[T]:
        return deferToThread(f, *args, **kwargs)

    async def _sleep(self, seconds: float) -> None:
        await deferLater(self.reactor, max(0.0, seconds))

    def _hold(self, span: tuple[float, float]) -> float:
        return self.rng.uniform(*span)

    def name(self, index: int) -> str:
        """Readable node name."""
        return f"node{index}"

    async def _leader(self) -> int:
        """Index of the serving leader (waits for one)."""
        node = await self._thread(self.cluster.wait_leader, self.timing.leader_wait)
        return self.cluster.nodes.index(node)

    async def _follower(self) -> int:
        """Index of a random running node that is not the leader."""
        leader = await self._leader()
        candidates = [
            i for i in range(len(self.cluster.nodes)) if i != leader and i not in self.killed
        ]
        if not candidates:
            raise RuntimeError("no follower is running")
        return self.rng.choice(candidates)

    # The loop

    async def run(self, until: float) -> None:
        """Inject faults one after the other until ``until`` (seconds since the origin).

        Every fault listed runs once (in a seeded random order) before any runs twice.
        """
        order: list[str] = []
        while self.now() < until:
            await self.check_exits()
            if not order:
                order = list(self.faults)
                self.rng.shuffle(order)
            name = order.pop(0)
            event = FaultEvent(name)
            self.events.append(event)
            try:
                await self._inject(event)
            except Exception as e:
                event.error = event.error or f"{type(e).__name__}: {e}"
                log.warn("Fault {name} failed: {error}", name=name, error=event.error)
            finally:
                await self.heal_all()
            if event.injected:
                event.recovered = await self.wait_writes(self.timing.recovery_bound)
                log.info("Fault {line}", line=event.describe())
                await self.wait_all_ready(10.0)
            await self._sleep(self._hold(self.timing.gap))

    async def _inject(self, event: FaultEvent) -> None:
        handlers: dict[str, Callable[[FaultEvent], Awaitable[None]]] = {
            "kill-leader": self._kill_leader,
            "kill-follower": self._kill_follower,
            "pause-leader": self._pause_leader,
            "partition-leader": self._partition_leader,
            "partition-follower": self._partition_follower,
            "zk-restart": self._zk_restart,
            "zk-expire": self._zk_expire,
            "torn-tail": self._torn_tail,
        }
        await handlers[event.name](event)

    # Faults

    async def _kill(self, index: int) -> None:
        node = self.cluster.nodes[index]
        self.killed.add(index)
        await self._thread(node.kill)
        await self.net.proxies[index].close()

    async def _restart(self, index: int) -> None:
        if index not in self.killed:
            return
        self.net.proxies[index].listen()
        await self._thread(self.cluster.nodes[index].start, wait=False)
        self.killed.discard(index)

    async def _kill_and_restart(self, event: FaultEvent, index: int, role: str) -> None:
        event.target = f"{self.name(index)} ({role})"
        hold = self._hold(self.timing.kill_hold)
        event.started = self.now()
        await self._kill(index)
        await self._sleep(hold)
        await self._restart(index)
        event.healed = self.now()

    async def _kill_leader(self, event: FaultEvent) -> None:
        await self._kill_and_restart(event, await self._leader(), "leader")

    async def _kill_follower(self, event: FaultEvent) -> None:
        await self._kill_and_restart(event, await self._follower(), "follower")

    async def _pause_leader(self, event: FaultEvent) -> None:
        index = await self._leader()
        node = self.cluster.nodes[index]
        event.target = f"{self.name(index)} (leader)"
        hold = self.timing.session_timeout + self._hold(self.timing.pause_extra)
        event.started = self.now()
        self.paused.add(index)
        await self._thread(self.cluster.pause, node)
        try:
            await self._sleep(hold)
        finally:
            await self._thread(self.cluster.resume, node)
            self.paused.discard(index)
            event.healed = self.now()

    async def _partition(self, event: FaultEvent, index: int, role: str) -> None:
        mode = self.rng.choice(MODES)
        event.target = f"{self.name(index)} ({role})"
        event.detail = f"mode {mode}, peer traffic only (ZooKeeper reachable)"
        hold = self._hold(self.timing.partition_hold)
        event.started = self.now()
        self.net.isolate(index, mode)
        try:
            await self._sleep(hold)
        finally:
            self.net.heal()
            event.healed = self.now()

    async def _partition_leader(self, event: FaultEvent) -> None:
        await self._partition(event, await self._leader(), "leader")

    async def _partition_follower(self, event: FaultEvent) -> None:
        await self._partition(event, await self._follower(), "follower")

    async def _zk_restart(self, event: FaultEvent) -> None:
        event.target = "zookeeper"
        hold = self._hold(self.timing.zk_hold)
        event.started = self.now()
        self.zookeeper_down = True
        await self._thread(self.zookeeper.stop)
        try:
            await self._sleep(hold)
        finally:
            await self._thread(self.zookeeper.start)
            self.zookeeper_down = False
            event.healed = self.now()

    async def _zk_expire(self, event: FaultEvent) -> None:
        index = await self._leader()
        node = self.cluster.nodes[index]
        event.target = f"{self.name(index)} (leader)"
        session_id, password = await self._thread(self.cluster.zookeeper_session, node)
        event.detail = f"session 0x{session_id:x}"
        event.started = self.now()
        await self._thread(self.zookeeper.expire_session, session_id, password)
        event.healed = self.now()

    async def _torn_tail(self, event: FaultEvent) -> None:
        leader = await self._leader()
        if self.rng.random() < 0.5:
            index, role = leader, "leader"
        else:
            index, role = await self._follower(), "follower"
        event.target = f"{self.name(index)} ({role})"
        hold = self._hold(self.timing.torn_hold)
        event.started = self.now()
        await self._kill(index)
        garbage = bytes([self.rng.randrange(1, 256)]) + self.rng.randbytes(
            self.rng.randrange(0, 64)
        )
        try:
            event.detail = await self._thread(
                append_to_newest_segment, self.cluster.nodes[index].data_dir, garbage
            )
            await self._sleep(hold)
        finally:
            await self._restart(index)
            event.healed = self.now()

    # Heals and health

    async def heal_all(self) -> None:
        """Undo whatever may still be in force: partitions, pauses, kills, ZooKeeper down."""
        if self.net.blocked:
            self.net.heal()
        for index in sorted(self.paused):
            await self._thread(self.cluster.resume, self.cluster.nodes[index])
        self.paused.clear()
        for index in sorted(self.killed):
            await self._restart(index)
        if self.zookeeper_down or not self.zookeeper.running:
            await self._thread(self.zookeeper.start)
            self.zookeeper_down = False

    async def check_exits(self) -> None:
        """Record and restart nodes that exited although nobody killed them."""
        for index, node in enumerate(self.cluster.nodes):
            if index in self.killed or node.proc is None or node.proc.poll() is None:
                continue
            code = node.proc.returncode
            tail = node.log_tail(15)
            message = (
                f"t={self.now():.2f}s {self.name(index)} exited by itself with status "
                f"{code}; last log lines:\n{tail}"
            )
            self.unexpected_exits.append(message)
            log.error("{message}", message=message)
            self.killed.add(index)
            await self._restart(index)

    async def wait_writes(self, bound: float) -> float | None:
        """Seconds until a write through the leader is acknowledged; None if not in ``bound``."""
        started = time.monotonic()
        self._probes += 1
        value = f"probe-{self._probes}"

        def acknowledged() -> bool:
            leader = self.cluster.leader()
            if leader is None:
                return False
            return self.cluster.put(leader, PROBE_KEY, value, timeout=3).status == 200

        try:
            await self._thread(wait_for, acknowledged, bound, "a write acknowledged", 0.1)
        except TimeoutError:
            return None
        return time.monotonic() - started

    async def wait_all_ready(self, bound: float) -> bool:
        """Wait until every node answers /readyz 200 (so the next fault meets a whole cluster)."""

        def ready() -> bool:
            return all(node.ready() for node in self.cluster.nodes)

        try:
            await self._thread(wait_for, ready, bound, "every node ready", 0.1)
        except TimeoutError:
            log.warn("Not every node became ready within {bound}s", bound=bound)
            return False
        return True


def append_to_newest_segment(data_dir: str, garbage: bytes) -> str:
    """Append ``garbage`` to the newest WAL segment of ``data_dir`` (a torn write); blocking."""
    wal = os.path.join(data_dir, "wal")
    segments = sorted(name for name in os.listdir(wal) if name.endswith(".wal"))
    if not segments:
        raise RuntimeError(f"no WAL segment in {wal}")
    path = os.path.join(wal, segments[-1])
    with open(path, "ab") as f:
        f.write(garbage)
        f.flush()
        os.fsync(f.fileno())
    return f"{len(garbage)} garbage bytes appended to {os.path.basename(path)}"


__all__ = [
    "FAULTS",
    "PROBE_KEY",
    "FaultEvent",
    "Nemesis",
    "Timing",
    "append_to_newest_segment",
]

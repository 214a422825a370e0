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
  bytes to its newest WAL segment, restart it. A torn voter does not count in
  a sync quorum until it has acknowledged a leader; once wipes (below) left
  no voter to spare, only a learner (a wiped node) is torn, since tearing a
  voter would make every election fail for good, by design.
* ``zk-cut``: cut one node's ZooKeeper connection. Every node reaches
  ZooKeeper through its own link (``kvd.torture.proxy.ZooKeeperLinks``: its
  ``--zookeeper`` is a proxy in front of the ZooKeeper port); a cut resets
  that node's ZooKeeper connections and refuses new ones, then lets them
  through again. One of three variants, at random:

  - ``session-survives``: the leader's or a follower's link is cut for 25-60%
    of the session timeout: the session usually survives (SUSPENDED, then
    CONNECTED again; a leader steps down and takes a new epoch);
  - ``session-lost``: cut for the session timeout plus 1-3 s: ZooKeeper
    expires the session (LOST, ephemeral znodes gone, a new session);
  - ``election``: the leader's link is cut (short or long, as above) and a
    tripwire is armed on every voter's link (the old leader's included): the
    first voter to send a create of an election znode, a ``multi`` (the
    epoch transaction) or either (chosen at random per fault) has that
    request forwarded, then its link is cut, either at once, dropping the
    reply (ConnectionLoss for a create or a transaction that took effect: a
    ghost election znode, an epoch taken without knowing it), or 0-300 ms
    later (while it reads the election, syncs, commits its marker); that
    link stays cut for a short or a long hold. The cut thus lands on the
    node being elected, right after its create or during its epoch
    transaction. If no voter trips within the session timeout plus 5 s of
    the leader's heal, only the leader's cut happened.
* ``wipe-voter``: ``kill -9`` a voter (the leader or a follower), delete its
  whole data dir, restart it with its old ``--node-id`` and the same flags.
  The wiped disk gets a new incarnation, so by design (safety rule 5) the node
  comes back as a learner and the cluster has one voter fewer: at most
  ``replicas - majority`` wipes happen per run (one with 3 nodes, two with
  5; :func:`wipe_budget`), then the fault is no longer chosen. Every
  acknowledged write must survive all the same.
* ``member-change``: take a follower out of the voter set and promote it
  back once it is caught up (``DELETE /api/v1/members/{id}``, then ``POST
  .../promote``): two changes through the log, each joint then alone, while
  the clients write. A wiped voter is taken first if there is one: it comes
  back as a voter on its new disk, and the wipe budget grows back.
* ``leader-transfer``: ``POST /api/v1/leader/transfer`` at the leader: it
  hands over to the most caught-up voter.
* ``grow-shrink`` (not in ``FAULTS``: it needs learners, ``--replicas``
  below ``--nodes``): promote every learner, then remove as many of the old
  voters, the leader last; one change at a time.
* ``clock-step``: step the leader's or a follower's wall clock forward (two
  times in three) or backward by 20-180 s for 2-5 s, then back to the true
  time. It simulates an NTP step of the node's wall clock (``time.time``;
  Twisted's default reactor time would move with it, which is why kvd runs
  its reactor on monotonic time: nothing may fire early or stall). The node
  runs with ``$KVD_TESTING_WALL_CLOCK_FILE`` (``kvd.testing.wallclock``,
  installed by ``kvd.tap.makeService``): the nemesis writes the offset there
  and sends ``SIGUSR2``. Only that process's ``time.time`` moves, not
  ``time.monotonic``, not ZooKeeper's, not the harness's.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import Logger

from kvd.testing import wallclock
from kvd.testing.cluster import Cluster
from kvd.testing.process import wait_for
from kvd.testing.zookeeper import ZooKeeperServer
from kvd.torture.proxy import MODES, TRIP_MATCHES, ProxyNet, Tripwire, ZooKeeperLinks

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
    "zk-cut",
    "wipe-voter",
    "clock-step",
    "member-change",
    "leader-transfer",
)

#: Faults not in ``--faults all``: ``grow-shrink`` needs learners (``--replicas``
#: below the number of nodes).
EXTRA_FAULTS = ("grow-shrink",)

#: The variants of ``zk-cut``.
ZK_CUT_VARIANTS = ("session-survives", "session-lost", "election")

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
    #: A short ZooKeeper cut, as fractions of the session timeout (the session survives).
    zk_short: tuple[float, float] = (0.25, 0.6)
    #: A long ZooKeeper cut: the session timeout plus this (the session is lost).
    zk_long_extra: tuple[float, float] = (1.0, 3.0)
    #: An ``election`` cut's tripwire stays armed this long after the leader's heal
    #: (plus the session timeout).
    trip_window: float = 5.0
    #: An ``election`` cut lands this long after the tripping request (0: at once).
    trip_delay: tuple[float, float] = (0.0, 0.3)
    wipe_hold: tuple[float, float] = (0.5, 2.0)
    #: Size of a wall clock step, seconds, and how likely a step is backward.
    clock_step: tuple[float, float] = (20.0, 180.0)
    clock_backward: float = 1 / 3
    clock_hold: tuple[float, float] = (2.0, 5.0)
    gap: tuple[float, float] = (0.5, 1.5)
    #: The cluster must serve writes again within this after every heal.
    recovery_bound: float = 15.0
    #: How long to wait for a leader before a fault that needs one is skipped.
    leader_wait: float = 20.0


@dataclass
class Nemesis:
    """Faults and heals for one cluster, its ZooKeeper and its peer proxies."""

    reactor: IReactorTime
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
    #: Each node's own ZooKeeper link (``zk-cut``); None: the nodes reach ZooKeeper directly.
    links: ZooKeeperLinks | None = None
    #: Voters whose data dir was wiped: learners from then on.
    wiped: set[int] = field(default_factory=set)
    #: Wall clock offsets in force (``clock-step``), by node.
    clocks: dict[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._probes = 0
        unknown = set(self.faults) - set(FAULTS) - set(EXTRA_FAULTS)
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

    def voters(self) -> list[int]:
        """Indexes of the running nodes that are still voters (never wiped)."""
        return [i for i in range(len(self.cluster.nodes))
                if i not in self.wiped and i not in self.killed]

    async def _leader_or_follower(self, voter: bool = False) -> tuple[int, str]:
        """The leader or (one time in two) a follower; a voter if ``voter``."""
        leader = await self._leader()
        if self.rng.random() < 0.5:
            return leader, "leader"
        if voter:
            others = [i for i in self.voters() if i != leader]
            if others:
                return self.rng.choice(others), "follower"
            return leader, "leader"
        return await self._follower(), "follower"

    def eligible(self, name: str) -> bool:
        """Whether fault ``name`` may still be chosen (``wipe-voter`` has a budget per run)."""
        if name == "wipe-voter":
            return len(self.wiped) < wipe_budget(len(self.cluster.nodes))
        return True

    # The loop

    async def run(self, until: float) -> None:
        """Inject faults one after the other until ``until`` (seconds since the origin).

        Every fault listed runs once (in a seeded random order) before any runs twice.
        """
        order: list[str] = []
        while self.now() < until:
            await self.check_exits()
            if not order:
                order = [name for name in self.faults if self.eligible(name)]
                self.rng.shuffle(order)
                if not order:  # every fault asked for is spent
                    await self._sleep(self._hold(self.timing.gap))
                    continue
            name = order.pop(0)
            if not self.eligible(name):
                continue
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
            "zk-cut": self._zk_cut,
            "wipe-voter": self._wipe_voter,
            "clock-step": self._clock_step,
            "member-change": self._member_change,
            "leader-transfer": self._leader_transfer,
            "grow-shrink": self._grow_shrink,
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

    def may_tear_voter(self) -> bool:
        """Whether a voter may get a torn tail: a torn voter is not counted in a sync quorum
        until it acknowledged a leader (safety rule 5), so after wipes it must not leave fewer
        clean voters than a sync quorum, or no leader could ever be elected again."""
        replicas = len(self.cluster.nodes)
        return replicas - len(self.wiped) - 1 >= sync_quorum(replicas)

    async def _torn_tail(self, event: FaultEvent) -> None:
        leader = await self._leader()
        learners = [i for i in sorted(self.wiped) if i not in self.killed]
        if not self.may_tear_voter():
            if not learners:
                raise RuntimeError("no voter to spare and no learner to tear")
            index, role = self.rng.choice(learners), "learner"
        elif self.rng.random() < 0.5:
            index, role = leader, "leader"
        else:
            index = await self._follower()
            role = "learner" if index in self.wiped else "follower"
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

    def _links(self) -> ZooKeeperLinks:
        if self.links is None:
            raise RuntimeError("the nodes do not reach ZooKeeper through their own links")
        return self.links

    def _zk_hold(self, long: bool) -> float:
        """A ZooKeeper cut: shorter than the session timeout, or longer (``long``)."""
        timeout = self.timing.session_timeout
        if long:
            return timeout + self._hold(self.timing.zk_long_extra)
        return timeout * self._hold(self.timing.zk_short)

    async def _zk_cut(self, event: FaultEvent) -> None:
        links = self._links()
        variant = self.rng.choice(ZK_CUT_VARIANTS)
        if variant == "election":
            await self._zk_cut_election(event, links)
            return
        index, role = await self._leader_or_follower()
        hold = self._zk_hold(variant == "session-lost")
        event.target = f"{self.name(index)} ({role})"
        event.detail = (f"{variant}: ZooKeeper link reset for {hold:.2f}s (session timeout "
                        f"{self.timing.session_timeout:g}s)")
        event.started = self.now()
        links.cut_link(index)
        try:
            await self._sleep(hold)
        finally:
            links.restore(index)
            event.healed = self.now()

    async def _zk_cut_election(self, event: FaultEvent, links: ZooKeeperLinks) -> None:
        """Cut the leader's link, then the link of whichever voter next creates an election
        znode or runs the epoch transaction, right after that request."""
        leader = await self._leader()
        voters = self.voters()
        hold = self._zk_hold(self.rng.random() < 0.5)
        delay = 0.0 if self.rng.random() < 0.5 else self._hold(self.timing.trip_delay)
        trip_hold = self._zk_hold(self.rng.random() < 0.5)
        on = self.rng.choice(sorted(TRIP_MATCHES))
        trips: list[tuple[int, str, float]] = []
        event.target = f"{self.name(leader)} (leader)"
        event.started = self.now()
        started = event.started
        links.cut_link(leader)
        links.arm(Tripwire(frozenset(voters), lambda i, what: trips.append((i, what, self.now())),
                           delay, TRIP_MATCHES[on]))
        leader_back = started + hold
        deadline = leader_back + self.timing.session_timeout + self.timing.trip_window
        leader_cut, trip_healed = True, False
        try:
            while True:
                now = self.now()
                if leader_cut and now >= leader_back:
                    links.restore(leader)
                    leader_cut = False
                if trips and not trip_healed and now >= trips[0][2] + delay + trip_hold:
                    links.restore(trips[0][0])
                    trip_healed = True
                if not leader_cut and (trip_healed or not trips and now >= deadline):
                    break
                await self._sleep(0.05)
        finally:
            links.disarm()
            links.restore(leader)
            if trips:
                links.restore(trips[0][0])
            event.healed = self.now()
        detail = f"election: leader's ZooKeeper link reset for {hold:.2f}s, tripwire on {on}"
        if trips:
            index, what, at = trips[0]
            when = "at once, reply dropped" if delay <= 0 else f"{delay * 1000:.0f} ms later"
            detail += (f"; tripwire fired on {self.name(index)} at +{at - started:.2f}s after "
                       f"{what}: cut {when}, for {trip_hold:.2f}s")
        else:
            detail += "; no voter sent such a request: the tripwire never fired"
        event.detail = detail

    async def _wipe_voter(self, event: FaultEvent) -> None:
        budget = wipe_budget(len(self.cluster.nodes))
        if len(self.wiped) >= budget:
            raise RuntimeError(f"the wipe budget ({budget}) is spent")
        index, role = await self._leader_or_follower(voter=True)
        node = self.cluster.nodes[index]
        node_id = await self._thread(read_node_id, node.data_dir)
        event.target = f"{self.name(index)} ({role})"
        hold = self._hold(self.timing.wipe_hold)
        event.started = self.now()
        await self._kill(index)
        self.wiped.add(index)
        try:
            await self._thread(shutil.rmtree, node.data_dir)
            set_flag(node.args, "--node-id", node_id)
            event.detail = (f"node id {node_id}: data dir deleted, restarted with --node-id, a "
                            f"learner from now on ({budget - len(self.wiped)} wipes left)")
            await self._sleep(hold)
        finally:
            await self._restart(index)
            event.healed = self.now()

    def _admin(self, node: Any, method: str, path: str, body: Any = None) -> Any:
        """One call of the client API as the cluster's helpers make it (token and all)."""
        return node.call(method, path, body, headers=self.cluster._auth(), timeout=20)

    async def _member_change(self, event: FaultEvent) -> None:
        """Take a voter out of the set and promote it back, two changes through the
        log (rule 4) while the clients write. A wiped voter (a learner on a new disk)
        is the one taken, if any: it comes back as a voter of its new disk, and the
        wipe budget grows back."""
        leader_index = await self._leader()
        leader = self.cluster.nodes[leader_index]
        running = [i for i in range(len(self.cluster.nodes))
                   if i != leader_index and i not in self.killed]
        wiped = [i for i in running if i in self.wiped]
        if not running:
            raise RuntimeError("no follower is running")
        index = self.rng.choice(wiped or running)
        node = self.cluster.nodes[index]
        node_id = await self._thread(read_node_id, node.data_dir)
        event.target = f"{self.name(index)} ({'wiped' if index in self.wiped else 'voter'})"
        event.started = self.now()
        try:
            removed = await self._thread(self._admin, leader, "DELETE",
                                         f"/api/v1/members/{node_id}")
            if removed.status != 200:
                raise RuntimeError(f"remove answered {removed.status}: {removed.body}")
            promoted = await self._promote_when_ready(leader, node_id)
            event.detail = (f"node id {node_id}: removed, then promoted back; voters "
                            f"{', '.join(promoted.body['voters'])}")
            self.wiped.discard(index)
        finally:
            event.healed = self.now()

    async def _promote_when_ready(self, leader: Any, node_id: str) -> Any:
        """Promote ``node_id`` once the leader finds it caught up (400 until then)."""
        deadline = self.now() + self.timing.recovery_bound
        while True:
            answer = await self._thread(self._admin, leader, "POST",
                                        f"/api/v1/members/{node_id}/promote")
            if answer.status == 200:
                return answer
            if answer.status != 400 or self.now() > deadline:
                raise RuntimeError(f"promote answered {answer.status}: {answer.body}")
            await self._sleep(0.2)

    async def _grow_shrink(self, event: FaultEvent) -> None:
        """Promote every learner (N voters -> N + learners), then remove as many of the
        voters there were, the leader last if at all: the set ends as large as it
        began, with other members, after one change per step (rule 4)."""
        leader = self.cluster.nodes[await self._leader()]
        answer = await self._thread(self._admin, leader, "GET", "/api/v1/members")
        if answer.status != 200:
            raise RuntimeError(f"members answered {answer.status}")
        rows = answer.body["members"]
        learners = [m["node_id"] for m in rows if not m["voter"]]
        leader_id = next(m["node_id"] for m in rows if m["role"] == "leader")
        old = sorted((m["node_id"] for m in rows if m["voter"]), key=lambda i: i == leader_id)
        if not learners:
            raise RuntimeError("no learner to promote (run with --replicas below --nodes)")
        event.target = f"{len(old)} -> {len(old) + len(learners)} -> {len(old)} voters"
        event.started = self.now()
        try:
            for node_id in learners:
                await self._promote_when_ready(leader, node_id)
            for node_id in old[:len(learners)]:
                removed = await self._thread(self._admin, leader, "DELETE",
                                             f"/api/v1/members/{node_id}")
                if removed.status != 200:
                    raise RuntimeError(f"remove answered {removed.status}: {removed.body}")
                if node_id == leader_id:
                    break  # it handed over; the next fault finds the new leader
            event.detail = (f"promoted {', '.join(learners)}; removed "
                            f"{', '.join(old[:len(learners)])}")
        finally:
            event.healed = self.now()

    async def _leader_transfer(self, event: FaultEvent) -> None:
        """``POST /api/v1/leader/transfer`` to the most caught-up voter, under load."""
        index = await self._leader()
        leader = self.cluster.nodes[index]
        event.target = f"{self.name(index)} (leader)"
        event.started = self.now()
        try:
            answer = await self._thread(self._admin, leader, "POST", "/api/v1/leader/transfer")
            if answer.status != 200:
                raise RuntimeError(f"transfer answered {answer.status}: {answer.body}")
            event.detail = f"handed to {answer.body['target']}"
        finally:
            event.healed = self.now()

    async def _set_clock(self, index: int, offset: float) -> None:
        """Step node ``index``'s wall clock to true time + ``offset``."""
        node = self.cluster.nodes[index]
        path = node.env.get(wallclock.ENV)
        if not path:
            raise RuntimeError(f"{self.name(index)} runs without ${wallclock.ENV}")
        await self._thread(wallclock.write_offset, path, offset)
        if offset:
            self.clocks[index] = offset
        else:
            self.clocks.pop(index, None)
        proc = node.proc
        # A process that does not catch SIGUSR2 yet reads the file once it does.
        if proc is not None and proc.poll() is None and wallclock.catches_signal(proc.pid):
            node.signal(wallclock.SIGNAL)

    async def _clock_step(self, event: FaultEvent) -> None:
        index, role = await self._leader_or_follower()
        if not self.cluster.nodes[index].env.get(wallclock.ENV):
            raise RuntimeError(f"{self.name(index)} runs without ${wallclock.ENV}")
        step = self._hold(self.timing.clock_step)
        offset = -step if self.rng.random() < self.timing.clock_backward else step
        hold = self._hold(self.timing.clock_hold)
        event.target = f"{self.name(index)} ({role})"
        event.detail = (f"wall clock (time.time) stepped {offset:+.1f}s for {hold:.2f}s, "
                        f"then back")
        event.started = self.now()
        await self._set_clock(index, offset)
        try:
            await self._sleep(hold)
        finally:
            await self._set_clock(index, 0.0)
            event.healed = self.now()

    # Heals and health

    async def heal_all(self) -> None:
        """Undo whatever may still be in force: partitions, pauses, kills, ZooKeeper down."""
        if self.net.blocked:
            self.net.heal()
        if self.links is not None and (self.links.cut or self.links.tripwire
                                       or self.links.pending):
            self.links.heal()
        for index in sorted(self.clocks):
            await self._set_clock(index, 0.0)
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


def wipe_budget(replicas: int) -> int:
    """How many voters a run may wipe: each wipe leaves one voter fewer for good, and a
    majority of the ``replicas`` voters must stay."""
    return max(0, replicas - (replicas // 2 + 1))


def sync_quorum(replicas: int) -> int:
    """Voters a new leader must sync with: N - W + 1, W the default majority."""
    return replicas - (replicas // 2 + 1) + 1


def read_node_id(data_dir: str) -> str:
    """The node id kept in ``data_dir`` (its ``node-id`` file); blocking."""
    with open(os.path.join(data_dir, "node-id"), encoding="utf-8") as f:
        return str(json.load(f)["node_id"])


def set_flag(args: list[str], flag: str, value: str) -> None:
    """Set ``flag value`` in a command line, in place (replacing an earlier value)."""
    if flag in args:
        at = args.index(flag)
        args[at + 1:at + 2] = [value]
    else:
        args += [flag, value]


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
    "EXTRA_FAULTS",
    "FAULTS",
    "PROBE_KEY",
    "FaultEvent",
    "Nemesis",
    "Timing",
    "ZK_CUT_VARIANTS",
    "append_to_newest_segment",
    "read_node_id",
    "set_flag",
    "sync_quorum",
    "wipe_budget",
]

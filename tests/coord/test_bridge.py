"""Tests for the kazoo-to-Twisted bridge against a real ZooKeeper."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import pytest_twisted
from kazoo.exceptions import (
    BadVersionError,
    ConnectionClosedError,
    NodeExistsError,
    NoNodeError,
)
from twisted.internet import reactor, task, threads
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.python import threadable
from zope.interface import provider

from kvd.coord.bridge import (
    CONNECTED,
    LOST,
    SUSPENDED,
    TransactionFailed,
    ZooKeeperService,
)
from kvd.testing.zookeeper import ZooKeeperServer
from tests.zkfixture import zookeeper, zookeeper_factory  # noqa: F401

TIMEOUT = 15.0


@inlineCallbacks
def wait_until(predicate: Callable[[], object], what: str, timeout: float = TIMEOUT) -> Any:
    """Poll ``predicate`` on the reactor until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        yield task.deferLater(reactor, 0.01, lambda: None)


def within(d: Deferred[Any], timeout: float = TIMEOUT) -> Deferred[Any]:
    """Fail ``d`` with TimeoutError instead of hanging the test run."""
    return d.addTimeout(timeout, reactor)


@pytest.fixture
def services() -> Iterator[Callable[..., ZooKeeperService]]:
    """Make ZooKeeperServices that are stopped at teardown."""
    made: list[ZooKeeperService] = []

    def make(hosts: str, **kwargs: Any) -> ZooKeeperService:
        kwargs.setdefault("timeout", 4.0)
        service = ZooKeeperService(hosts, **kwargs)
        made.append(service)
        return service

    yield make
    for service in made:
        if service.running:
            pytest_twisted.blockon(service.stopService())


@pytest.fixture
def zpath(request: pytest.FixtureRequest) -> str:
    """A znode path private to the test."""
    return "/tests/" + request.node.name.replace("[", "-").replace("]", "")


@inlineCallbacks
def connected(make: Callable[..., ZooKeeperService], hosts: str, **kwargs: Any) -> Any:
    service = make(hosts, **kwargs)
    yield within(service.startService())
    assert service.state == CONNECTED and service.connected
    return service


class Recorder:
    """Collects callback values with the thread facts at delivery time."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.on_reactor_thread: list[bool] = []

    def __call__(self, value: Any) -> None:
        self.values.append(value)
        self.on_reactor_thread.append(
            threadable.isInIOThread() and threading.current_thread() is threading.main_thread()
        )


@pytest_twisted.inlineCallbacks
def test_create_get_set_delete(zookeeper: ZooKeeperServer, services, zpath: str):  # noqa: F811
    svc = yield connected(services, zookeeper.hosts)
    path = yield svc.create(zpath + "/a/node", b"v1", makepath=True)
    assert path == zpath + "/a/node"
    data, stat = yield svc.get(path)
    assert (data, stat.version) == (b"v1", 0)
    stat = yield svc.set(path, b"v2")
    assert stat.version == 1
    assert (yield svc.get(path))[0] == b"v2"
    assert (yield svc.exists(path)).version == 1
    assert (yield svc.get_children(zpath + "/a")) == ["node"]
    seq = yield svc.create(zpath + "/a/seq-", sequence=True, ephemeral=True)
    assert seq.startswith(zpath + "/a/seq-") and len(seq) > len(zpath + "/a/seq-")
    with pytest.raises(NodeExistsError):
        yield svc.create(path)
    yield svc.delete(path, version=1)
    assert (yield svc.exists(path)) is None
    with pytest.raises(NoNodeError):
        yield svc.get(path)
    yield svc.ensure_path(zpath + "/b/c/d")
    assert (yield svc.exists(zpath + "/b/c/d")) is not None
    yield svc.delete(zpath, recursive=True)
    assert (yield svc.exists(zpath)) is None


@pytest_twisted.inlineCallbacks
def test_versioned_set_conflict_raises_bad_version(
    zookeeper: ZooKeeperServer,  # noqa: F811
    services,
    zpath: str,
):
    svc = yield connected(services, zookeeper.hosts)
    yield svc.create(zpath, b"0", makepath=True)
    yield svc.set(zpath, b"1", version=0)
    with pytest.raises(BadVersionError):
        yield svc.set(zpath, b"stale", version=0)
    with pytest.raises(BadVersionError):
        yield svc.delete(zpath, version=0)
    assert (yield svc.get(zpath))[0] == b"1"


@pytest_twisted.inlineCallbacks
def test_transaction_commits_atomically(zookeeper: ZooKeeperServer, services, zpath: str):  # noqa: F811
    svc = yield connected(services, zookeeper.hosts)
    yield svc.create(zpath, b"0", makepath=True)
    results = (
        yield svc.transaction()
        .check(zpath, 0)
        .set_data(zpath, b"1", 0)
        .create(zpath + "/child", b"c")
        .commit()
    )
    assert results[0] is True and results[1].version == 1 and results[2] == zpath + "/child"

    with pytest.raises(TransactionFailed) as caught:
        yield svc.transaction().create(zpath + "/never").set_data(zpath, b"x", 0).commit()
    assert isinstance(caught.value.error, BadVersionError) and caught.value.index == 1
    assert (yield svc.exists(zpath + "/never")) is None


@pytest_twisted.inlineCallbacks
def test_operations_fail_cleanly_when_not_running(zookeeper: ZooKeeperServer, services):  # noqa: F811
    svc = services(zookeeper.hosts)
    with pytest.raises(ConnectionClosedError):
        yield svc.get("/")
    with pytest.raises(ConnectionClosedError):
        yield svc.watch_data("/", lambda value: None)
    with pytest.raises(TypeError):  # kazoo's argument checks arrive through the Deferred too
        yield (yield connected(services, zookeeper.hosts)).create("/x", "not bytes")


@pytest_twisted.inlineCallbacks
def test_watches_fire_on_reactor_thread(zookeeper: ZooKeeperServer, services, zpath: str):  # noqa: F811
    svc = yield connected(services, zookeeper.hosts)
    writer = yield connected(services, zookeeper.hosts)
    data = Recorder()
    children = Recorder()
    assert (yield svc.watch_data(zpath, data)) is None
    assert (yield svc.watch_children(zpath, children)) is None

    yield writer.create(zpath, b"one", makepath=True)
    yield wait_until(lambda: data.values and children.values, "create seen by both watches")
    assert data.values[-1][0] == b"one" and children.values[-1] == []

    yield writer.set(zpath, b"two")
    yield writer.create(zpath + "/kid")
    yield wait_until(lambda: data.values[-1][0] == b"two", "data change")
    yield wait_until(lambda: children.values[-1] == ["kid"], "child added")

    yield writer.delete(zpath, recursive=True)
    yield wait_until(lambda: data.values[-1] is None, "deletion")
    yield wait_until(lambda: children.values[-1] is None, "parent deletion")
    assert all(data.on_reactor_thread) and all(children.on_reactor_thread)


@pytest_twisted.inlineCallbacks
def test_watch_callback_returning_false_stops(zookeeper: ZooKeeperServer, services, zpath: str):  # noqa: F811
    svc = yield connected(services, zookeeper.hosts)
    yield svc.create(zpath, b"0", makepath=True)
    seen: list[bytes] = []
    kept: list[bytes] = []

    def once(value: Any) -> bool:
        seen.append(value[0])
        return False

    yield svc.watch_data(zpath, once)
    yield svc.watch_data(zpath, lambda value: kept.append(value[0]))
    yield svc.set(zpath, b"1")
    yield wait_until(lambda: kept == [b"1"], "first change")
    yield svc.set(zpath, b"2")
    yield wait_until(lambda: kept == [b"1", b"2"], "second change")
    assert seen == [b"1"]


@pytest_twisted.inlineCallbacks
def test_data_watch_rearms_after_zookeeper_restart(
    zookeeper: ZooKeeperServer,  # noqa: F811
    services,
    zpath: str,
):
    svc = yield connected(services, zookeeper.hosts)
    yield svc.create(zpath, b"before", makepath=True)
    data = Recorder()
    assert (yield svc.watch_data(zpath, data))[0] == b"before"
    try:
        yield threads.deferToThread(zookeeper.stop)
        yield wait_until(lambda: svc.state == SUSPENDED, "SUSPENDED")
    finally:
        yield threads.deferToThread(zookeeper.start)
    yield within(svc.when_connected())

    writer = yield connected(services, zookeeper.hosts)
    yield writer.set(zpath, b"after")
    yield wait_until(lambda: data.values and data.values[-1][0] == b"after", "change after restart")
    assert all(data.on_reactor_thread)
    assert [value[0] for value in data.values] == [b"after"]  # no duplicates from the reconnect


@pytest_twisted.inlineCallbacks
def test_state_listener_across_restart(zookeeper_factory, services):  # noqa: F811
    # A server of its own that allows a 20 s session: a restart on a loaded machine
    # took longer than the shared server's 4 s maximum, and the session expired.
    server = zookeeper_factory(max_session_timeout_ms=20_000)
    yield threads.deferToThread(server.start)
    svc = yield connected(services, server.hosts, timeout=20.0)
    states = Recorder()
    svc.add_state_listener(states)
    session = svc.client_id
    try:
        yield threads.deferToThread(server.stop)
        yield wait_until(lambda: SUSPENDED in states.values, "SUSPENDED")
    finally:
        yield threads.deferToThread(server.start)
    # kazoo's reconnect backs off while the server is down: on a loaded CI machine
    # it took longer than the usual 15 s deadline once.
    yield wait_until(lambda: states.values[-1:] == [CONNECTED], "CONNECTED", timeout=30.0)
    assert states.values == [SUSPENDED, CONNECTED]
    assert svc.state == CONNECTED
    assert svc.client_id == session  # the session survived the restart
    assert all(states.on_reactor_thread)


@pytest_twisted.inlineCallbacks
def test_forced_session_expiry_is_lost_then_reconnects(
    zookeeper: ZooKeeperServer,  # noqa: F811
    services,
    zpath: str,
):
    svc = yield connected(services, zookeeper.hosts)
    writer = yield connected(services, zookeeper.hosts)
    yield svc.create(zpath + "/mine", b"e", ephemeral=True, makepath=True)
    data = Recorder()
    yield svc.watch_data(zpath, data)
    states = Recorder()
    svc.add_state_listener(states)
    session_id, password = svc.client_id

    yield threads.deferToThread(zookeeper.expire_session, session_id, password)
    yield wait_until(lambda: LOST in states.values, "LOST")
    yield wait_until(lambda: states.values[-1] == CONNECTED, "CONNECTED with a new session")
    assert states.values.index(LOST) < len(states.values) - 1
    assert svc.client_id[0] != session_id
    assert (yield svc.exists(zpath + "/mine")) is None  # the ephemeral went with the session
    assert all(states.on_reactor_thread)

    yield writer.set(zpath, b"after expiry")
    yield wait_until(
        lambda: data.values and data.values[-1][0] == b"after expiry",
        "watch re-armed on new session",
    )


@pytest_twisted.inlineCallbacks
def test_chroot_is_created_and_applied(zookeeper: ZooKeeperServer, services, zpath: str):  # noqa: F811
    chroot = zpath + "/chroot/kvd"
    svc = yield connected(services, f"{zookeeper.hosts},{zookeeper.hosts}{chroot}")
    assert svc.chroot == chroot and svc.servers == f"{zookeeper.hosts},{zookeeper.hosts}"
    assert (yield svc.create("/inside", b"x")) == "/inside"
    root = yield connected(services, zookeeper.hosts)
    assert (yield root.get(chroot + "/inside"))[0] == b"x"


@pytest_twisted.inlineCallbacks
def test_start_while_zookeeper_down_logs_and_connects_later(zookeeper_factory, services):  # noqa: F811
    server = zookeeper_factory()
    events: list[LogEvent] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        if event.get("log_namespace", "").startswith("kvd.coord"):
            events.append(event)

    ticks: list[float] = []
    ticker = task.LoopingCall(lambda: ticks.append(time.monotonic()))
    globalLogPublisher.addObserver(observe)
    try:
        ticker.start(0.02)
        svc = services(server.hosts, unreachable_warning_after=0.3)
        began = time.monotonic()
        started = svc.startService()
        assert time.monotonic() - began < 0.5
        assert not started.called and svc.state == LOST

        def unreachable_logged() -> bool:
            return any(
                "unreachable" in formatEvent(e) and e.get("zk_hosts") == server.hosts
                for e in events
            )

        yield wait_until(unreachable_logged, "an 'unreachable' warning naming the address")
        assert server.hosts in formatEvent(
            next(e for e in events if "unreachable" in formatEvent(e))
        )
        assert not started.called

        server.start(wait=False)  # only spawns java; the reactor keeps running
        yield within(started)
        assert svc.connected
        assert (yield svc.exists("/")) is not None
    finally:
        globalLogPublisher.removeObserver(observe)
        if ticker.running:
            ticker.stop()
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert len(ticks) > 10 and max(gaps) < 0.5, f"reactor blocked for {max(gaps):.2f}s"

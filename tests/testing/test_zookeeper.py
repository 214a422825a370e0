"""Tests for the throw-away ZooKeeper server used by tests and ``make run``."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from kazoo.client import KazooClient, KazooState

from kvd.testing import zookeeper as zkmod
from kvd.testing.zookeeper import (
    ZooKeeperNotInstalled,
    ZooKeeperServer,
    four_letter_word,
    free_port,
)
from tests.zkfixture import zookeeper, zookeeper_factory  # noqa: F401

REPO = Path(__file__).resolve().parents[2]


def test_serves_on_loopback(zookeeper: ZooKeeperServer) -> None:  # noqa: F811
    assert zookeeper.hosts == f"127.0.0.1:{zookeeper.port}"
    assert zookeeper.running and zookeeper.is_serving()
    assert four_letter_word("127.0.0.1", zookeeper.port, "ruok") == "imok"
    config = zookeeper.config_path.read_text()
    assert "tickTime=200\n" in config
    assert "minSessionTimeout=400\n" in config
    assert f"dataDir={zookeeper.data_dir}\n" in config
    assert zookeeper.log_path.exists()


def test_restart_keeps_port_and_data(zookeeper_factory) -> None:  # noqa: F811
    server = zookeeper_factory()
    server.start()
    port = server.port
    client = KazooClient(server.hosts)
    client.start(timeout=10)
    try:
        client.create("/kept", b"yes")
        code = server.stop()
        assert code is not None
        assert not server.running and not server.is_serving()
        assert server.stop() == code  # idempotent
        server.start()
        assert server.port == port and server.is_serving()
        # A new session: the first may have expired if the restart was slow (a
        # loaded machine); what must survive is the port and the data.
        again = KazooClient(server.hosts)
        again.start(timeout=10)
        try:
            assert again.get("/kept")[0] == b"yes"
        finally:
            again.stop()
            again.close()
    finally:
        client.stop()
        client.close()


def test_stop_kills_a_server_that_ignores_sigterm(zookeeper_factory) -> None:  # noqa: F811
    server = zookeeper_factory()
    server.start()
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM
    started = time.monotonic()
    assert server.stop(timeout=0.5) == -signal.SIGKILL
    assert time.monotonic() - started < 5
    assert not server.running


def test_expire_session(zookeeper: ZooKeeperServer) -> None:  # noqa: F811
    client = KazooClient(zookeeper.hosts, timeout=4)
    states: list[str] = []
    lost_then_connected = threading.Event()

    def listener(state: str) -> None:
        states.append(state)
        if KazooState.LOST in states and state == KazooState.CONNECTED:
            lost_then_connected.set()

    client.add_listener(listener)
    client.start(timeout=10)
    try:
        client.create("/ephemeral-owner", ephemeral=True)
        session_id, password = client.client_id
        zookeeper.expire_session(session_id, password)
        assert lost_then_connected.wait(10), states
        assert states[-2:] == [KazooState.LOST, KazooState.CONNECTED]
        assert client.client_id[0] != session_id
        assert client.exists("/ephemeral-owner") is None
    finally:
        client.stop()
        client.close()


def test_context_manager(tmp_path: Path) -> None:
    with ZooKeeperServer(tmp_path / "zk", tick_time_ms=100) as server:
        assert server.is_serving()
        assert "minSessionTimeout=200\n" in server.config_path.read_text()
    assert not server.running
    assert not server.is_serving()


def test_missing_jar_says_how_to_install(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(zkmod.CLASSPATH_ENV, str(tmp_path / "nope.jar"))
    with pytest.raises(ZooKeeperNotInstalled, match="apt-get install zookeeper"):
        ZooKeeperServer(tmp_path / "zk").start()


def test_missing_java_says_how_to_install(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(zkmod.shutil, "which", lambda name: None)
    with pytest.raises(ZooKeeperNotInstalled, match="apt-get install zookeeper"):
        ZooKeeperServer(tmp_path / "zk").start()


def test_main_runs_in_foreground_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    directory = tmp_path / "run-zk"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kvd.testing.zookeeper",
            "--port",
            str(port),
            "--dir",
            str(directory),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = _read_line(proc.stdout, deadline=time.monotonic() + 30)
        assert f"ready on 127.0.0.1:{port}" in line
        assert four_letter_word("127.0.0.1", port, "ruok") == "imok"
        assert (directory / "zoo.cfg").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        with pytest.raises(OSError):
            four_letter_word("127.0.0.1", port, "ruok")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _read_line(stream, deadline: float) -> str:
    """Read one line from a pipe, failing at ``deadline`` instead of hanging."""
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    data = b""
    try:
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no complete line before the deadline: {data!r}"
            if selector.select(remaining):
                chunk = os.read(stream.fileno(), 4096)
                assert chunk, f"stream closed after {data!r}"
                data += chunk
    finally:
        selector.close()
    return data.decode()

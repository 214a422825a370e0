"""
Pytest fixtures that run real throw-away ZooKeeper servers.

Import them into a test module (conftest.py is owned elsewhere)::

    from tests.zkfixture import zookeeper, zookeeper_factory  # noqa: F401

``zookeeper`` is one running server per test module; a test that stops it
must start it again (in a ``finally``). ``zookeeper_factory`` makes
*unstarted* servers in the test's tmp dir and stops them at teardown, for
tests that need a server of their own (e.g. one that is down at first).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from kvd.testing.zookeeper import ZooKeeperServer


@pytest.fixture(scope="module")
def zookeeper(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ZooKeeperServer]:
    """A running ZooKeeper (tick 200 ms) shared by the tests of one module."""
    server = ZooKeeperServer(tmp_path_factory.mktemp("zookeeper"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def zookeeper_factory(tmp_path: Any) -> Iterator[Callable[..., ZooKeeperServer]]:
    """Make unstarted ZooKeeperServers (kwargs as for the class); all stopped at teardown."""
    servers: list[ZooKeeperServer] = []

    def make(**kwargs: Any) -> ZooKeeperServer:
        server = ZooKeeperServer(tmp_path / f"zookeeper-{len(servers)}", **kwargs)
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()

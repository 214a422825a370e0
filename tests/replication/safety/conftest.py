"""Fixtures of the safety tests: an inline reactor, no threads, WALs closed after."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kvd import node as node_module
from tests.replication.support import InlineReactor, close_all, inline_defer_to_thread


@pytest.fixture(autouse=True)
def no_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Snapshot files are read and written on the calling thread; WALs closed after."""
    # Snapshot files are read and installed through the node only.
    monkeypatch.setattr(node_module, "deferToThread", inline_defer_to_thread)
    yield
    close_all()


@pytest.fixture
def reactor() -> InlineReactor:
    return InlineReactor()

"""Fixtures of the safety tests: an inline reactor, no threads, WALs closed after."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.replication.support import InlineReactor, close_all


@pytest.fixture(autouse=True)
def close_wals() -> Iterator[None]:
    """Every node's WAL is closed after its test."""
    yield
    close_all()


@pytest.fixture
def reactor() -> InlineReactor:
    return InlineReactor()

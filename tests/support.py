"""In-memory stand-ins for the reactor's threads, for single-module unit tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.task import Clock
from twisted.python.failure import Failure

from kvd.node import Node, NodeSettings
from kvd.service import open_node, recover_store
from kvd.wal.layout import DataDir


class InlinePool:
    """A thread pool that runs each job at once on the calling thread."""

    def callInThreadWithCallback(
        self, onResult: Callable[[bool, Any], None], f: Callable[..., Any], *a: Any, **kw: Any
    ) -> None:
        try:
            result = f(*a, **kw)
        except BaseException:
            onResult(False, Failure())
        else:
            onResult(True, result)


class InlineReactor(Clock):
    """A ``Clock`` whose ``callFromThread`` runs at once: threads are inline here."""

    def callFromThread(self, f: Callable[..., Any], *a: Any, **kw: Any) -> None:
        f(*a, **kw)


def open_inline_node(
    path: str, reactor: InlineReactor, settings: NodeSettings | None = None, fsync: bool = True,
    segment_bytes: int = 16 * 1024 * 1024,
) -> Node:
    """A standalone node on real files, driven synchronously by ``reactor``."""
    data_dir = DataDir(path)
    outcome = recover_store(data_dir, None)
    node, _ = open_node(
        reactor, data_dir, outcome, settings or NodeSettings(url="http://127.0.0.1:1"),
        fsync, pool=InlinePool(), segment_bytes=segment_bytes,
    )
    d = node.become_standalone()
    reactor.advance(0)
    assert d.called, "a standalone node should serve once its marker is durable"
    return node

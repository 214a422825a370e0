"""In-memory stand-ins for the reactor's threads, for single-module unit tests."""

from __future__ import annotations

from kvd.node import Node, NodeSettings
from kvd.service import open_node, recover_store
from kvd.testing.inline import InlinePool, InlineReactor
from kvd.wal.layout import DataDir

__all__ = ["InlinePool", "InlineReactor", "open_inline_node"]


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

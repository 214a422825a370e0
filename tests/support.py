"""In-memory stand-ins for the reactor's threads, for single-module unit tests."""

from __future__ import annotations

from kvd.node import Node, NodeSettings
from kvd.replica import Replica, open_replica
from kvd.replication.follower import Follower
from kvd.testing.inline import InlinePool, InlineReactor, inline_defer_to_thread
from kvd.wal import snapshot
from kvd.wal.layout import DataDir
from kvd.wal.storage import recover_store

__all__ = ["InlinePool", "InlineReactor", "follower_of", "inline_defer_to_thread",
           "open_inline_node", "replica_of", "snapshot_inline"]

#: The parts of every node a test opened, so that a test can reach a node's
#: follower and a teardown can close its WAL.
_opened: dict[Node, Replica] = {}


def replica_of(node: Node) -> Replica:
    """The parts wired with ``node`` when a test opened it."""
    return _opened[node]


def follower_of(node: Node) -> Follower:
    """The follower half of ``node`` (the peer API's handlers)."""
    return _opened[node].follower


def open_inline_node(
    path: str, reactor: InlineReactor, settings: NodeSettings | None = None, fsync: bool = True,
    segment_bytes: int = 16 * 1024 * 1024,
) -> Node:
    """A standalone node on real files, driven synchronously by ``reactor``
    (snapshots too are read and written on the calling thread)."""
    data_dir = DataDir(path)
    outcome = recover_store(data_dir, None)
    replica = open_replica(
        reactor, data_dir, outcome, settings or NodeSettings(url="http://127.0.0.1:1"),
        fsync, pool=InlinePool(), segment_bytes=segment_bytes,
        defer_to_thread=inline_defer_to_thread,
    )
    _opened[replica.node] = replica
    node = replica.node
    d = node.become_standalone()
    reactor.advance(0)
    assert d.called, "a standalone node should serve once its marker is durable"
    return node


def snapshot_inline(node: Node, path: str) -> int:
    """What kvd.wal.storage.Snapshotter does, on the calling thread."""
    data_dir = DataDir(path)
    index = node.store.applied_index
    epoch = node.rlog.epoch_at(index)
    assert epoch is not None
    writer = replica_of(node).writer
    active = writer.active_segment
    meta = {"promised_epoch": node.rlog.promised_epoch}
    snapshot.write(data_dir, snapshot.Snapshot(epoch, index, node.store.snapshot_state(), meta))
    keep_from = node.rlog.tail_start(index, node.settings.log_tail,
                                     node.settings.log_tail_bytes)
    node.rlog.compact(keep_from)
    writer.delete_segments_before(active, keep_from)
    return index

"""
One node's parts over its recovered state, wired together: the node, its
follower half, its TTL timers and its snapshots.

This is the one place that wires them, for the service and for the tests
alike: each part gets what it needs in its constructor or through a hook of
the node, and none of them constructs another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThread

from kvd.node import Node, NodeSettings
from kvd.replication.follower import Follower
from kvd.replication.log import ReplicatedLog
from kvd.replication.peer import PeerClient
from kvd.store import Store
from kvd.ttl import ExpiryScheduler
from kvd.wal.layout import DataDir, Identity
from kvd.wal.recovery import Recovered
from kvd.wal.storage import Snapshotter, open_writer
from kvd.wal.writer import DEFAULT_SEGMENT_BYTES, WalWriter


@dataclass(frozen=True)
class Replica:
    """A node and the parts that serve it."""

    node: Node
    #: Answers NEWEPOCH, PREPARE, snapshot chunks and FETCH (the peer API's handlers).
    follower: Follower
    #: TTL timers; armed while the node leads.
    expiry: ExpiryScheduler
    writer: WalWriter


def assemble(
    reactor: Any,
    data_dir: DataDir,
    outcome: tuple[Recovered, Store, Identity],
    writer: WalWriter,
    settings: NodeSettings,
    peer: PeerClient | None = None,
    on_fatal: Callable[[str], None] | None = None,
    observe_round: Callable[[int, float], None] | None = None,
    clock: IReactorTime | None = None,
    defer_to_thread: Callable[..., Deferred[Any]] = deferToThread,
) -> Replica:
    """The parts of a node over recovered state and its (started) WAL writer."""
    recovered, store, identity = outcome
    node = Node(reactor, identity, settings, store, ReplicatedLog(writer, recovered),
                data_dir=data_dir, clock=clock, peer=peer,
                snapshotter=Snapshotter(writer, data_dir, settings.log_tail,
                                        settings.log_tail_bytes),
                on_fatal=on_fatal, observe_round=observe_round,
                defer_to_thread=defer_to_thread)
    if recovered.snapshot is not None:
        node.adopt_snapshot_meta(recovered.snapshot.meta)
    expiry = ExpiryScheduler(lambda: node.store, node.submit, node.clock)
    node.on_applied.append(expiry.applied)
    node.on_leading.append(expiry.leading)
    Node.log.info(
        "Node {node_id} recovered: applied index {applied}, last index {last}, "
        "revision {revision}, {keys} keys",
        node_id=identity.node_id, applied=store.applied_index,
        last=node.rlog.last_index, revision=store.revision, keys=len(store),
    )
    return Replica(node, Follower(node), expiry, writer)


def open_replica(
    reactor: Any,
    data_dir: DataDir,
    outcome: tuple[Recovered, Store, Identity],
    settings: NodeSettings,
    fsync: bool,
    pool: Any = None,
    segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    clock: IReactorTime | None = None,
    defer_to_thread: Callable[..., Deferred[Any]] = deferToThread,
) -> Replica:
    """A node over recovered state with a WAL writer of its own (tests, the stub)."""
    writer = open_writer(reactor, data_dir, outcome[0], fsync, pool=pool,
                         segment_bytes=segment_bytes)
    return assemble(reactor, data_dir, outcome, writer, settings, clock=clock,
                    defer_to_thread=defer_to_thread)

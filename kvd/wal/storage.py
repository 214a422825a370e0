"""
A node's storage as a service: recovery of the data dir, the WAL writer, snapshots.

Recovery reads the whole data dir, so it runs on a thread; the node over it
starts only once it has finished. Stopping writes out what was appended lazily
and closes the active segment. Snapshots are encoded and written off the
reactor too, then the log is compacted behind them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure

from kvd.replication.log import ReplicatedLog
from kvd.store import DEFAULT_HISTORY, Store
from kvd.wal import snapshot
from kvd.wal.layout import DataDir, Identity
from kvd.wal.recovery import Recovered, recover
from kvd.wal.writer import DEFAULT_SEGMENT_BYTES, WalWriter

log = Logger()


def release_free_memory() -> None:
    """Hand the heap freed after a snapshot's peak back to the OS (glibc only).

    Encoding a snapshot briefly needs as much memory again as the store; glibc
    keeps what was freed, so the process would stay at its peak otherwise.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def recover_store(data_dir: DataDir, node_id: str | None,
                  history: int = DEFAULT_HISTORY) -> tuple[Recovered, Store, Identity]:
    """Read the data dir back: log, store as of the last commit mark, identity. Blocking."""
    data_dir.create()
    identity = data_dir.identity(node_id)
    recovered = recover(data_dir)
    if recovered.snapshot is not None:
        store = Store.from_snapshot(recovered.snapshot.store, history=history)
    else:
        store = Store(history=history)
    # Only what is known committed reaches the store; the rest waits for a leader.
    for entry in recovered.entries:
        if entry.index > recovered.commit_mark:
            break
        store.apply(entry.index, entry.commands)
        entry.release()
    return recovered, store, identity


def open_writer(reactor: IReactorThreads, data_dir: DataDir, recovered: Recovered,
                fsync: bool, on_fatal: Callable[[Failure], None] | None = None,
                pool: Any = None, observe_batch: Callable[[int, float], None] | None = None,
                segment_bytes: int = DEFAULT_SEGMENT_BYTES) -> WalWriter:
    """The WAL writer of a recovered data dir, started, appending to its last segment."""
    writer = WalWriter(reactor, data_dir, recovered.segments, fsync=fsync, on_fatal=on_fatal,
                       pool=pool, observe_batch=observe_batch, segment_bytes=segment_bytes)
    writer.start()
    writer.open_last()
    return writer


class SnapshotSource(Protocol):
    """What a snapshot is taken of (``kvd.node.Node`` is one)."""

    store: Store
    rlog: ReplicatedLog

    def voter_sets_at(self, index: int) -> list[dict[str, str]]: ...

    def adopt_snapshot_meta(self, meta: dict[str, Any]) -> None: ...


class Snapshotter:
    """Snapshots of a node's applied store, one at a time, then compaction of its log."""

    def __init__(self, writer: WalWriter, data_dir: DataDir, log_tail: int,
                 log_tail_bytes: int) -> None:
        """``log_tail`` entries before the snapshot, of at most ``log_tail_bytes``,
        stay in memory for lagging followers."""
        self._writer = writer
        self._data_dir = data_dir
        self._log_tail = log_tail
        self._log_tail_bytes = log_tail_bytes
        self._running = False

    def __call__(self, source: SnapshotSource) -> Deferred[None]:
        """Snapshot ``source``'s applied store off the reactor thread, then compact."""
        writer = self._writer
        if self._running:
            return succeed(None)
        index = source.store.applied_index
        epoch = source.rlog.epoch_at(index)
        if epoch is None:
            return succeed(None)
        self._running = True
        # The voter set travels with the snapshot: once compacted, the log's
        # config entry is gone, and voters live in the log (safety rule 4).
        # The sets in effect at the snapshot's index: a config entry above it is
        # still in the log, and may yet be truncated.
        sets = source.voter_sets_at(index)
        meta = {"voters": sorted([i, inc] for i, inc in sets[-1].items()),
                **({"joint": sorted([i, inc] for i, inc in sets[0].items())}
                   if len(sets) > 1 else {}),
                # Compaction may delete the segment holding the promise record.
                "promised_epoch": source.rlog.promised_epoch,
                "promised_leader": source.rlog.promised_leader}
        state = snapshot.Snapshot(epoch, index, source.store.snapshot_state(), meta)
        active_at_capture = writer.active_segment
        keep_from = source.rlog.tail_start(index, self._log_tail, self._log_tail_bytes)

        def compact(path: str) -> Deferred[object]:
            log.info("Snapshot {path} at index {index}", path=path, index=index)
            source.adopt_snapshot_meta(meta)
            source.rlog.compact(keep_from)
            return writer.run_exclusive(
                lambda: writer.delete_segments_before(active_at_capture, keep_from)
            )

        def done(result: object) -> None:
            self._running = False
            if isinstance(result, Failure):
                log.failure("Snapshot failed", result)

        written: Deferred[str] = deferToThread(snapshot.write, self._data_dir, state)
        compacted = written.addCallback(compact)
        released = compacted.addCallback(lambda _: deferToThread(release_free_memory))
        return released.addBoth(done)


class StorageService(Service):
    """Recovers the data dir on a thread when started; owns the WAL writer after."""

    def __init__(self, reactor: IReactorThreads, data_dir: DataDir, node_id: str | None,
                 history: int, fsync: bool, on_fatal: Callable[[Failure], None],
                 observe_batch: Callable[[int, float], None] | None = None) -> None:
        self._reactor = reactor
        self.data_dir = data_dir
        self._node_id = node_id
        self._history = history
        self._fsync = fsync
        self._on_fatal = on_fatal
        self._observe_batch = observe_batch
        #: What recovery found, and the writer appending after it, once started.
        self.recovered: tuple[Recovered, Store, Identity] | None = None
        self.writer: WalWriter | None = None

    def startService(self) -> Deferred[None]:
        super().startService()
        log.info("Recovering {data_dir}", data_dir=self.data_dir.root)
        d = deferToThread(recover_store, self.data_dir, self._node_id, self._history)
        return d.addCallback(self._recovered)

    def _recovered(self, outcome: tuple[Recovered, Store, Identity]) -> None:
        self.recovered = outcome
        self.writer = open_writer(self._reactor, self.data_dir, outcome[0], self._fsync,
                                  self._on_fatal, observe_batch=self._observe_batch)

    def stopService(self) -> Deferred[object]:
        super().stopService()
        writer = self.writer
        if writer is None:
            return succeed(None)
        closing = writer.flush()
        return closing.addBoth(lambda _: writer.run_exclusive(writer.close))

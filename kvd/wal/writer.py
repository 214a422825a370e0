"""
The WAL writer: appends on the reactor thread, ``write`` + ``fdatasync`` on one thread.

epoll refuses regular files, so a ``FileDescriptor`` would block the reactor
in ``write(2)`` and give no fsync. Instead every append made while the
writer thread is busy joins the next batch: one fsync covers them all (group
commit), and each batch's Deferreds fire back on the reactor thread.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorCore, IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from kvd.wal.layout import DataDir

#: How long a record that needs no fsync of its own waits for a batch to join.
LAZY_DELAY = 0.01

#: Start a new segment once the active one holds this many bytes.
DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024


@dataclass
class Segment:
    """One ``<name>.wal`` file and the highest entry index it holds."""

    name: int
    path: str
    max_index: int = 0
    size: int = 0


@dataclass
class _Append:
    records: list[bytes]
    first_index: int
    last_index: int
    force_sync: bool
    lazy: bool = False
    done: Deferred[None] = field(default_factory=Deferred)


class WalWriter:
    """Group-committing appender to the segments of one data dir."""

    log = Logger()

    def __init__(
        self,
        reactor: IReactorThreads,
        data_dir: DataDir,
        segments: list[Segment],
        fsync: bool = True,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        on_fatal: Callable[[Failure], None] | None = None,
        observe_batch: Callable[[int, float], None] | None = None,
        pool: ThreadPool | None = None,
    ) -> None:
        self._reactor = reactor
        self._dir = data_dir
        self._segments = segments
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._on_fatal = on_fatal
        self._observe_batch = observe_batch
        self._pending: list[_Append] = []
        self._lazy: list[bytes] = []
        self._lazy_first = 0
        self._lazy_timer: Any = None
        self._writing = False
        self._failed: Failure | None = None
        self._fd: int | None = None
        self._own_pool = pool is None
        self._pool = pool or ThreadPool(minthreads=1, maxthreads=1, name="kvd-wal")

    def start(self) -> None:
        if not self._own_pool:
            return
        self._pool.start()
        if IReactorCore.providedBy(self._reactor):
            self._reactor.addSystemEventTrigger("during", "shutdown", self._pool.stop)

    def append(
        self,
        records: list[bytes],
        first_index: int,
        last_index: int = 0,
        force_sync: bool = False,
    ) -> Deferred[None]:
        """Write ``records``; the Deferred fires once they are durable.

        ``first_index`` names a new segment if this batch starts one;
        ``last_index`` is the highest entry index among the records (0: none).
        ``force_sync`` makes promises and truncations durable even with
        ``--fsync none``.
        """
        if self._failed is not None:
            return _failed(self._failed)
        item = _Append(records, first_index, last_index, force_sync)
        self._pending.append(item)
        if not self._writing:
            self._flush()
        return item.done

    def append_lazy(self, records: list[bytes], first_index: int) -> None:
        """Records that need no fsync of their own (commit marks): they ride along
        with the next batch, or are written unsynced after ``LAZY_DELAY``.
        """
        if self._failed is not None:
            return
        self._lazy.extend(records)
        self._lazy_first = first_index
        if not self._writing and self._lazy_timer is None:
            # The reactor provides IReactorTime too.
            self._lazy_timer = cast(IReactorTime, self._reactor).callLater(
                LAZY_DELAY, self._flush_lazy)

    def _flush_lazy(self) -> None:
        self._lazy_timer = None
        if self._lazy and not self._writing:
            self._flush()

    def run_exclusive(self, work: Callable[[], object]) -> Deferred[object]:
        """Run ``work`` on the writer thread, between two batches."""
        return deferToThreadPool(self._reactor, self._pool, work)

    @property
    def active_segment(self) -> int:
        return self._segments[-1].name if self._segments else -1

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if self._lazy:
            batch.insert(0, _Append(self._lazy, self._lazy_first, 0, False, lazy=True))
            self._lazy = []
        self._writing = True
        d = deferToThreadPool(self._reactor, self._pool, self._write_batch, batch)
        d.addCallbacks(self._written, self._write_failed, callbackArgs=(batch,),
                       errbackArgs=(batch,))

    def _written(self, elapsed: float, batch: list[_Append]) -> None:
        self._writing = False
        if self._observe_batch is not None:
            self._observe_batch(len(batch), elapsed)
        for item in batch:
            item.done.callback(None)
        if self._writing:
            return
        if self._pending:
            self._flush()
        elif self._lazy and self._lazy_timer is None:
            # Marks made by the callbacks above (a follower's new commit index)
            # wait for the next append, as ``append_lazy`` promises, instead of
            # costing a write of their own after every batch.
            self._lazy_timer = cast(IReactorTime, self._reactor).callLater(
                LAZY_DELAY, self._flush_lazy)

    def _write_failed(self, failure: Failure, batch: list[_Append]) -> None:
        # Never retry a failed fsync: the page cache may have dropped the data.
        self._failed = failure
        self.log.critical(
            "WAL write or fsync failed, the node must stop: {error}",
            error=failure.getErrorMessage(),
        )
        for item in batch + self._pending:
            item.done.errback(failure)
        self._pending = []
        if self._on_fatal is not None:
            self._on_fatal(failure)

    # The methods below run on the writer thread only.

    def _write_batch(self, batch: list[_Append]) -> float:
        started = time.monotonic()
        sync = any(item.force_sync or (self._fsync and not item.lazy) for item in batch)
        chunk: list[bytes] = []
        for item in batch:
            if self._fd is None or self._segments[-1].size >= self._segment_bytes:
                self._write_out(chunk, sync)
                chunk = []
                self._roll(item.first_index)
            chunk.extend(item.records)
            size = sum(len(r) for r in item.records)
            self._segments[-1].size += size
            if item.last_index:
                self._segments[-1].max_index = max(self._segments[-1].max_index, item.last_index)
        self._write_out(chunk, sync)
        return time.monotonic() - started

    def _write_out(self, chunk: list[bytes], sync: bool) -> None:
        if not chunk or self._fd is None:
            return
        data = b"".join(chunk)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        if sync:
            os.fdatasync(self._fd)

    def _roll(self, first_index: int) -> None:
        """Close the active segment and start the next one, durably named."""
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        if self._segments and self._segments[-1].size == 0:
            # Reopen an empty segment rather than litter the directory.
            segment = self._segments[-1]
        else:
            # Names must sort in write order even after a truncation.
            name = max(first_index, self._segments[-1].name + 1 if self._segments else 0)
            segment = Segment(name, self._dir.segment_path(name))
            self._segments.append(segment)
        self._fd = os.open(segment.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        segment.size = os.fstat(self._fd).st_size
        self._dir.fsync_dir(self._dir.wal)

    def open_last(self) -> None:
        """Continue appending to the newest segment left by recovery."""
        if self._segments:
            segment = self._segments[-1]
            self._fd = os.open(segment.path, os.O_WRONLY | os.O_APPEND, 0o644)
            segment.size = os.fstat(self._fd).st_size

    def delete_segments_before(self, active_at_capture: int, covered_index: int) -> int:
        """Delete the leading segments closed before a snapshot and covered by it."""
        deleted = 0
        while len(self._segments) > 1:
            segment = self._segments[0]
            if segment.name >= active_at_capture or segment.max_index > covered_index:
                break
            os.unlink(segment.path)
            self._segments.pop(0)
            deleted += 1
        if deleted:
            self._dir.fsync_dir(self._dir.wal)
        return deleted

    def flush(self) -> Deferred[None]:
        """Write out lazy records now; fires when everything appended so far is written."""
        if self._lazy_timer is not None and self._lazy_timer.active():
            self._lazy_timer.cancel()
        self._lazy_timer = None
        return self.append([], self._lazy_first)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _failed(failure: Failure) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    d.errback(failure)
    return d

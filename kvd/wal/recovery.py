"""
Start-up recovery: the newest valid snapshot, then every later WAL record.

A bad record at the very end of the last segment is a torn write: it is cut
off with a log line. A bad record anywhere else is corruption: the node
refuses to start and names the file and offset.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from twisted.logger import Logger

from kvd.wal import record, snapshot
from kvd.wal.layout import DataDir
from kvd.wal.record import LogEntry, RecordType
from kvd.wal.writer import Segment

log = Logger()

#: Log replay progress every this many bytes.
PROGRESS_BYTES = 64 * 1024 * 1024


class WalCorruption(Exception):
    """A record in the middle of the WAL is unreadable; refusing to start."""


@dataclass
class Recovered:
    """Everything the WAL and the newest snapshot say about this node."""

    snapshot: snapshot.Snapshot | None
    #: Entries after the snapshot, in index order, contiguous.
    entries: list[LogEntry] = field(default_factory=list)
    promised_epoch: int = 0
    #: The leader the promise of ``promised_epoch`` was made to ("" if unknown yet).
    promised_leader: str = ""
    commit_mark: int = 0
    torn_tail: bool = False
    segments: list[Segment] = field(default_factory=list)

    @property
    def base(self) -> tuple[int, int]:
        """The (epoch, index) the entries follow."""
        if self.snapshot is None:
            return (0, 0)
        return (self.snapshot.epoch, self.snapshot.index)


def recover(data_dir: DataDir) -> Recovered:
    """Read a data dir back into memory. Blocking: run it off the reactor."""
    data_dir.create()
    state = Recovered(snapshot=snapshot.load_newest(data_dir))
    if state.snapshot is not None:
        # The promise may have lived in a segment the snapshot let us delete.
        state.promised_epoch = max(int(state.snapshot.meta.get("promised_epoch", 0)),
                                   state.snapshot.epoch)
        if state.promised_epoch == int(state.snapshot.meta.get("promised_epoch", -1)):
            state.promised_leader = str(state.snapshot.meta.get("promised_leader", ""))
    base_epoch, base_index = state.base
    names = data_dir.segment_names()
    replayed = 0
    next_report = PROGRESS_BYTES
    started = time.monotonic()
    for position, name in enumerate(names):
        path = data_dir.segment_path(name)
        with open(path, "rb") as f:
            data = f.read()
        records, bad = record.read_records(data)
        if bad is not None:
            last = position == len(names) - 1
            if not (last and bad.at_tail):
                raise WalCorruption(
                    f"{path}: unreadable record at offset {bad.offset} ({bad.reason}); "
                    "refusing to start. Restore this node from a peer or a backup."
                )
            log.warn(
                "Dropping a torn WAL tail: {path} offset {offset}, {dropped} bytes ({reason})",
                path=path, offset=bad.offset, dropped=len(data) - bad.offset, reason=bad.reason,
            )
            # The flag first, durably: a crash after the cut but before it would
            # leave a node that lost entries and still counts in R (rule 5).
            data_dir.mark_torn_tail()
            with open(path, "r+b") as f:
                f.truncate(bad.offset)
                os.fsync(f.fileno())
            state.torn_tail = True
            data = data[: bad.offset]
        segment = Segment(name, path, size=len(data))
        for _, payload in records:
            base_epoch, base_index = _replay(state, payload, segment, (base_epoch, base_index))
        state.segments.append(segment)
        replayed += len(data)
        if replayed >= next_report:
            log.info(
                "Replaying the WAL: {mib} MiB, {entries} entries so far",
                mib=replayed // (1024 * 1024), entries=len(state.entries),
            )
            next_report += PROGRESS_BYTES
    log.info(
        "Recovered {entries} log entries after snapshot {snapshot} from {segments} segments "
        "in {seconds:.2f}s; promised epoch {promised}, commit mark {commit}",
        entries=len(state.entries), snapshot=state.base[1], segments=len(names),
        seconds=time.monotonic() - started, promised=state.promised_epoch,
        commit=state.commit_mark,
    )
    return state


def _replay(
    state: Recovered, payload: list[Any], segment: Segment, base: tuple[int, int]
) -> tuple[int, int]:
    kind = payload[0]
    base_epoch, base_index = base
    if kind == RecordType.ENTRY:
        _, epoch, index, commands = payload
        segment.max_index = max(segment.max_index, index)
        if index <= base_index:
            return base
        last = state.entries[-1].index if state.entries else base_index
        if index <= last:
            # An entry rewritten after a truncation we did not record as such.
            del state.entries[index - base_index - 1 :]
        elif index != last + 1:
            raise WalCorruption(f"{segment.path}: entry {index} follows {last}; gap in the log")
        state.entries.append(LogEntry(epoch, index, commands))
    elif kind == RecordType.PROMISE:
        epoch, leader = payload[1], str(payload[2]) if len(payload) > 2 else ""
        if epoch > state.promised_epoch or (epoch == state.promised_epoch and leader):
            state.promised_epoch, state.promised_leader = epoch, leader
    elif kind == RecordType.TRUNCATE:
        first_dropped = payload[1]
        if first_dropped <= base_index:
            return base
        del state.entries[first_dropped - base_index - 1 :]
    elif kind == RecordType.COMMIT:
        state.commit_mark = max(state.commit_mark, payload[1])
    elif kind == RecordType.SNAPSHOT:
        _, epoch, index = payload
        # Entries after an installed snapshot that we already held are kept.
        kept = [e for e in state.entries if e.index > index]
        if kept and kept[0].index != index + 1:
            kept = []
        state.entries = kept
        return (epoch, index) if index > base_index else base
    return base

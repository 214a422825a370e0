"""
The WAL record codec: ``u32 length | u32 crc32c | payload``.

Payloads are msgpack arrays whose first element is the record type, so a
reader can tell an entry from an epoch promise, a truncation, a commit mark
or a snapshot-installed mark without a schema.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import crc32c
import msgpack

HEADER = struct.Struct("<II")

#: Refuse to believe a length above this: it is garbage, not a record.
MAX_RECORD_BYTES = 256 * 1024 * 1024


class RecordType(IntEnum):
    ENTRY = 1  # [1, epoch, index, commands]
    PROMISE = 2  # [2, epoch, leader id]: the leader id is "" when not known yet
    TRUNCATE = 3  # [3, first index dropped]
    COMMIT = 4  # [4, commit index]
    SNAPSHOT = 5  # [5, epoch, index]: a snapshot was installed at (epoch, index)


def pack(payload: list[Any]) -> bytes:
    body = msgpack.packb(payload, use_bin_type=True)
    return HEADER.pack(len(body), crc32c.crc32c(body)) + body


def unpack_payload(body: bytes) -> list[Any]:
    return msgpack.unpackb(body, raw=False, strict_map_key=False)


def entry(epoch: int, index: int, packed_commands: bytes) -> bytes:
    """An entry record around commands already packed: they are not encoded again."""
    body = (b"\x94" + msgpack.packb(RecordType.ENTRY) + msgpack.packb(epoch)
            + msgpack.packb(index) + packed_commands)
    return HEADER.pack(len(body), crc32c.crc32c(body)) + body


def promise(epoch: int, leader: str = "") -> bytes:
    """A promise of ``epoch``, and of the one node it was made to (safety rule 15)."""
    return pack([RecordType.PROMISE, epoch, leader])


def truncate(first_dropped: int) -> bytes:
    return pack([RecordType.TRUNCATE, first_dropped])


def commit(commit_index: int) -> bytes:
    return pack([RecordType.COMMIT, commit_index])


def snapshot_installed(epoch: int, index: int) -> bytes:
    return pack([RecordType.SNAPSHOT, epoch, index])


@dataclass(frozen=True)
class BadRecord:
    """Where and why a segment stops making sense."""

    offset: int
    reason: str
    #: True when nothing valid follows: a torn write, not corruption.
    at_tail: bool


def _read_one(data: bytes, offset: int) -> tuple[list[Any], int] | str:
    """Decode the record at ``offset``; the payload and the next offset, or why not."""
    if len(data) - offset < HEADER.size:
        return "short header"
    length, checksum = HEADER.unpack_from(data, offset)
    if length > MAX_RECORD_BYTES:
        return f"implausible length {length}"
    end = offset + HEADER.size + length
    if end > len(data):
        return f"record of {length} bytes runs past the end of the file"
    body = data[offset + HEADER.size : end]
    if crc32c.crc32c(body) != checksum:
        return "checksum mismatch"
    try:
        payload = unpack_payload(body)
    except Exception as e:  # msgpack raises several types for bad input
        return f"undecodable payload ({e})"
    if not isinstance(payload, list) or not payload:
        return "payload is not a record"
    return payload, end


def _anything_valid_after(data: bytes, offset: int) -> bool:
    """Does any well-formed record start after ``offset``?

    A torn write leaves garbage only at the very end; a valid record beyond a
    bad one means the bad one is corruption in the middle of the log.
    """
    for start in range(offset + 1, len(data) - HEADER.size + 1):
        length, checksum = HEADER.unpack_from(data, start)
        end = start + HEADER.size + length
        if length == 0 or end > len(data):
            continue
        if crc32c.crc32c(data[start + HEADER.size : end]) == checksum:
            return True
    return False


def read_records(data: bytes) -> tuple[list[tuple[int, list[Any]]], BadRecord | None]:
    """All records of a segment as ``(offset, payload)``, and the first bad spot, if any."""
    records: list[tuple[int, list[Any]]] = []
    offset = 0
    while offset < len(data):
        outcome = _read_one(data, offset)
        if isinstance(outcome, str):
            return records, BadRecord(offset, outcome, not _anything_valid_after(data, offset))
        payload, end = outcome
        records.append((offset, payload))
        offset = end
    return records, None


def iter_payloads(data: bytes) -> Iterator[list[Any]]:
    records, bad = read_records(data)
    if bad is not None:
        raise ValueError(f"bad record at offset {bad.offset}: {bad.reason}")
    for _, payload in records:
        yield payload


class LogEntry:
    """One replicated log entry: a batch of commands stamped with its epoch.

    The commands are packed (msgpack) once, and that one encoding goes to the
    WAL and to every follower. Once applied, ``release`` drops the decoded
    commands: the log kept in memory between snapshots holds bytes, not dicts.
    """

    __slots__ = ("_commands", "_packed", "epoch", "index")

    def __init__(self, epoch: int, index: int, commands: list[dict[str, Any]] | None = None,
                 packed: bytes | None = None) -> None:
        if commands is None and packed is None:
            raise ValueError("a log entry needs its commands, packed or not")
        self.epoch = epoch
        self.index = index
        self._commands = commands
        self._packed = packed

    @property
    def commands(self) -> list[dict[str, Any]]:
        if self._commands is None:
            assert self._packed is not None
            self._commands = msgpack.unpackb(self._packed, raw=False, strict_map_key=False)
        return self._commands

    @property
    def packed(self) -> bytes:
        if self._packed is None:
            self._packed = msgpack.packb(self._commands, use_bin_type=True)
        return self._packed

    def release(self) -> None:
        """Keep only the packed form (the entry was applied)."""
        self._packed = self.packed
        self._commands = None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LogEntry):
            return NotImplemented
        return (self.epoch, self.index, self.packed) == (other.epoch, other.index, other.packed)

    def __repr__(self) -> str:
        return f"LogEntry(epoch={self.epoch}, index={self.index})"

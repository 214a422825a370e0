"""
Snapshots: the applied store at one log position, checksummed like a record.

They are serialised and fsynced off the reactor thread; the newest one that
reads back whole is the base of recovery.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import crc32c
import msgpack
from twisted.logger import Logger

from kvd.wal.layout import DataDir
from kvd.wal.record import HEADER

log = Logger()

#: How many snapshots to keep: the newest, and one in case it is unreadable.
KEEP_SNAPSHOTS = 2


@dataclass
class Snapshot:
    """The store state as of log position ``(epoch, index)``."""

    epoch: int
    index: int
    store: dict[str, Any]
    #: Extra replicated state (the voter set) that lives beside the store.
    meta: dict[str, Any]


def encode(snapshot: Snapshot) -> bytes:
    body = msgpack.packb(
        {"epoch": snapshot.epoch, "index": snapshot.index, "store": snapshot.store,
         "meta": snapshot.meta},
        use_bin_type=True,
    )
    return HEADER.pack(len(body), crc32c.crc32c(body)) + body


def _checked_body(data: bytes) -> bytes:
    if len(data) < HEADER.size:
        raise ValueError("snapshot shorter than its header")
    length, checksum = HEADER.unpack_from(data)
    body = data[HEADER.size :]
    if len(body) != length or crc32c.crc32c(body) != checksum:
        raise ValueError("snapshot checksum or length mismatch")
    return body


def decode(data: bytes) -> Snapshot:
    obj = msgpack.unpackb(_checked_body(data), raw=False, strict_map_key=False)
    return Snapshot(obj["epoch"], obj["index"], obj["store"], obj.get("meta", {}))


def position(data: bytes) -> tuple[int, int]:
    """A snapshot's (epoch, index), without decoding the store it holds."""
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(_checked_body(data))
    found: dict[str, int] = {}
    for _ in range(unpacker.read_map_header()):
        key = unpacker.unpack()
        if key in ("epoch", "index"):
            found[key] = unpacker.unpack()
        else:
            unpacker.skip()
    return found["epoch"], found["index"]


def write(data_dir: DataDir, snapshot: Snapshot) -> str:
    """Write a snapshot durably and drop all but the newest few. Blocking."""
    path = data_dir.snapshot_path(snapshot.index)
    data_dir.write_atomically(path, encode(snapshot))
    for index in data_dir.snapshot_indexes()[:-KEEP_SNAPSHOTS]:
        os.unlink(data_dir.snapshot_path(index))
    return path


def write_raw(data_dir: DataDir, data: bytes) -> Snapshot:
    """Check a snapshot received from a peer, write it durably; returns it decoded. Blocking."""
    decoded = decode(data)
    write_bytes(data_dir, decoded.index, data)
    return decoded


def write_bytes(data_dir: DataDir, index: int, data: bytes) -> None:
    """Write the bytes of a checked snapshot at ``index`` durably. Blocking."""
    data_dir.write_atomically(data_dir.snapshot_path(index), data)


def check_meta(meta: Any) -> None:
    """Raise ValueError unless ``meta`` is what ``take_snapshot`` writes."""
    if not isinstance(meta, dict):
        raise ValueError("snapshot meta is not a map")
    for name in ("voters", "joint"):
        voters = meta.get(name, [])
        if name == "joint" and voters is None:
            continue
        if not isinstance(voters, list) or not all(
                isinstance(v, list) and len(v) == 2 and all(isinstance(p, str) for p in v)
                for v in voters):
            raise ValueError(f"snapshot {name} are not [node id, incarnation] pairs")
    if meta.get("joint") and not meta.get("voters"):
        raise ValueError("snapshot joint voters without the new set")
    if type(meta.get("promised_epoch", 0)) is not int:
        raise ValueError("snapshot promised_epoch is not an integer")
    if not isinstance(meta.get("promised_leader", ""), str):
        raise ValueError("snapshot promised_leader is not a string")


def snapshot_voter_sets(meta: dict[str, Any]) -> list[dict[str, str]]:
    """The voter sets in effect at a checked snapshot's index: old and new while
    joint, none if it recorded none."""
    sets = [{i: inc for i, inc in meta.get(name) or []} for name in ("joint", "voters")]
    return [s for s in sets if s]


def read_newest_raw(data_dir: DataDir) -> tuple[int, int, bytes] | None:
    """The newest snapshot file as it is on disk, with its (epoch, index). Blocking."""
    indexes = data_dir.snapshot_indexes()
    if not indexes:
        return None
    with open(data_dir.snapshot_path(indexes[-1]), "rb") as f:
        data = f.read()
    return (*position(data), data)


def load_newest(data_dir: DataDir) -> Snapshot | None:
    """The newest snapshot that reads back whole. Blocking."""
    for index in reversed(data_dir.snapshot_indexes()):
        path = data_dir.snapshot_path(index)
        try:
            with open(path, "rb") as f:
                return decode(f.read())
        except (OSError, ValueError, KeyError, msgpack.ExtraData) as e:
            log.warn("Skipping unreadable snapshot {path}: {error}", path=path, error=str(e))
    return None

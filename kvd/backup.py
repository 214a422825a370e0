"""
Backups: a consistent copy of a running node's store, and a data dir made from one.

A backup is a snapshot file (``kvd/wal/snapshot.py``'s format, checksummed)
of the store at one applied index: every key with its revisions, users and
roles, TTLs and the idempotency window. Restoring writes it as the only
snapshot of an empty data dir, with no voter set, so that
nodes started on such dirs under a new ``--cluster`` name form a new
cluster that holds it all and continues the revision counter.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from kvd.store import Store
from kvd.wal import snapshot
from kvd.wal.layout import DataDir


@dataclass(frozen=True)
class BackupInfo:
    """What a backup holds, as ``kvctl snapshot status`` shows it."""

    revision: int
    index: int
    keys: int
    bytes: int
    checksum: str

    def as_json(self) -> dict[str, Any]:
        return {"revision": self.revision, "index": self.index, "keys": self.keys,
                "bytes": self.bytes, "checksum": self.checksum}


def encode(epoch: int, state: dict[str, Any]) -> bytes:
    """A backup of ``state`` (``Store.snapshot_state``). Blocking: run it in a thread."""
    return snapshot.encode(snapshot.Snapshot(epoch, state["applied_index"], state, {}))


def checksum(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_with_checksum(epoch: int, state: dict[str, Any]) -> tuple[bytes, str]:
    """``encode`` and ``checksum`` together, for one trip to a thread."""
    data = encode(epoch, state)
    return data, checksum(data)


def read(data: bytes) -> tuple[snapshot.Snapshot, Store]:
    """The snapshot and store a backup holds; ValueError unless it reads back whole."""
    try:
        decoded = snapshot.decode(data)
        store = Store.from_snapshot(decoded.store, check=True)
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"not a readable kvd backup ({e})") from None
    if store.applied_index != decoded.index:
        raise ValueError("not a readable kvd backup (its store is not at its index)")
    return decoded, store


def _info(data: bytes, store: Store) -> BackupInfo:
    return BackupInfo(store.revision, store.applied_index, len(store), len(data),
                      checksum(data))


def describe(data: bytes) -> BackupInfo:
    _, store = read(data)
    return _info(data, store)


def restore(data: bytes, directory: str) -> BackupInfo:
    """Make ``directory`` (absent or empty) a data dir holding the backup. Blocking."""
    if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise ValueError(f"{directory} is not an empty directory; refusing to restore into it")
    decoded, store = read(data)
    # No voter set: the new cluster's voters are the nodes that start on the
    # restored dirs. Its epoch stays: a node promises at least its snapshot's
    # epoch, so the new cluster's first leader takes one above it.
    fresh = snapshot.Snapshot(decoded.epoch, decoded.index, decoded.store, {})
    data_dir = DataDir(directory)
    data_dir.create()
    snapshot.write(data_dir, fresh)
    return _info(data, store)

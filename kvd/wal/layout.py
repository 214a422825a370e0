"""
The on-disk layout of a node's data dir.

``wal/<first-index>.wal`` segments, ``snap/<index>.snap`` snapshots and the
``node-id`` file (node id and incarnation uuid); created if missing.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    """Who this data dir belongs to: a node id and the incarnation of its disk."""

    node_id: str
    incarnation: str
    #: True when the data dir was created just now (no earlier state).
    fresh: bool


class DataDir:
    """Paths and durable file operations inside one data dir."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.wal = os.path.join(self.root, "wal")
        self.snap = os.path.join(self.root, "snap")

    def create(self) -> None:
        for path in (self.root, self.wal, self.snap):
            os.makedirs(path, exist_ok=True)

    def segment_path(self, name: int) -> str:
        return os.path.join(self.wal, f"{name:020d}.wal")

    def snapshot_path(self, index: int) -> str:
        return os.path.join(self.snap, f"{index:020d}.snap")

    def segment_names(self) -> list[int]:
        return sorted(_numbered(self.wal, ".wal"))

    def snapshot_indexes(self) -> list[int]:
        return sorted(_numbered(self.snap, ".snap"))

    @staticmethod
    def fsync_dir(path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def write_atomically(self, path: str, data: bytes) -> None:
        """Write, fsync, rename into place, fsync the directory."""
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self.fsync_dir(os.path.dirname(path))

    @property
    def torn_tail_marker(self) -> str:
        return os.path.join(self.root, "torn-tail")

    def mark_torn_tail(self) -> None:
        """Record, durably, that a torn WAL tail was (or is about to be) dropped."""
        self.write_atomically(
            self.torn_tail_marker,
            b"dropped a torn WAL tail; not counted in a sync quorum until it acknowledges "
            b"entries from a leader\n")

    def torn_tail_marked(self) -> bool:
        return os.path.exists(self.torn_tail_marker)

    def clear_torn_tail(self) -> None:
        if os.path.exists(self.torn_tail_marker):
            os.unlink(self.torn_tail_marker)
            self.fsync_dir(self.root)

    def identity(self, requested_id: str | None) -> Identity:
        """Load or create the node id file.

        A data dir keeps the id it was created with; an explicit id that
        differs from the stored one is taken with a new incarnation, so the
        cluster can tell this is not the disk that voted before.
        """
        path = os.path.join(self.root, "node-id")
        if os.path.exists(path):
            with open(path) as f:
                stored = json.load(f)
            if requested_id is None or requested_id == stored["node_id"]:
                return Identity(stored["node_id"], stored["incarnation"], False)
        fresh = not os.path.exists(path)
        identity = Identity(requested_id or uuid.uuid4().hex[:12], uuid.uuid4().hex, fresh)
        payload = {"node_id": identity.node_id, "incarnation": identity.incarnation}
        self.write_atomically(path, json.dumps(payload).encode() + b"\n")
        return identity


def _numbered(directory: str, suffix: str) -> list[int]:
    names = []
    for name in os.listdir(directory):
        stem = name[: -len(suffix)]
        if name.endswith(suffix) and stem.isdigit():
            names.append(int(stem))
    return names

"""Backup files: what they hold, and the data dir a restore makes."""

from __future__ import annotations

from typing import Any

import pytest

from kvd import backup
from kvd.store import Store
from kvd.wal import snapshot
from kvd.wal.layout import DataDir


def store_with(n: int) -> Store:
    store = Store()
    for i in range(1, n + 1):
        store.apply(i, [{"op": "put", "k": f"k{i}".encode(), "v": b"v", "rid": f"r{i}"}])
    return store


def test_a_backup_says_what_it_holds() -> None:
    store = store_with(3)
    data = backup.encode(2, store.snapshot_state())
    info = backup.describe(data)
    assert (info.revision, info.index, info.keys, info.bytes) == (3, 3, 3, len(data))
    assert info.checksum == backup.checksum(data)


def test_leases_and_their_keys_travel_with_a_backup() -> None:
    store = store_with(2)
    store.apply(3, [{"op": "lease_grant", "id": 5, "ttl": 30, "rid": "g"},
                    {"op": "put", "k": b"held", "v": b"v", "lease": 5, "rid": "p"}])
    _, copy = backup.read(backup.encode(1, store.snapshot_state()))
    assert copy.digest() == store.digest()
    assert (copy.leases, copy.lease_keys, copy.lease_of(b"held")) == ({5: 30}, {5: {b"held"}}, 5)


def test_a_backup_whose_keys_name_an_unknown_lease_is_refused() -> None:
    store = store_with(1)
    store.apply(2, [{"op": "lease_grant", "id": 5, "ttl": 30, "rid": "g"},
                    {"op": "put", "k": b"held", "v": b"v", "lease": 5, "rid": "p"}])
    state = store.snapshot_state()
    state["leases"] = {}
    with pytest.raises(ValueError, match="key_leases"):
        backup.read(backup.encode(1, state))


# Fails if: restore copies the snapshot's meta (a node's own snapshot file names its old
# cluster's voters, for whom the new nodes would wait for ever).
def test_restoring_a_nodes_own_snapshot_drops_its_voter_set(tmp_path: Any) -> None:
    store = store_with(2)
    own = snapshot.encode(snapshot.Snapshot(4, 2, store.snapshot_state(),
                                            {"voters": [["a", "x"]], "promised_epoch": 5}))
    backup.restore(own, str(tmp_path / "new"))
    restored = snapshot.load_newest(DataDir(str(tmp_path / "new")))
    assert restored is not None
    assert (restored.epoch, restored.index, restored.meta) == (4, 2, {})
    assert Store.from_snapshot(restored.store).digest() == store.digest()


def test_restore_refuses_a_directory_with_anything_in_it(tmp_path: Any) -> None:
    data = backup.encode(1, store_with(1).snapshot_state())
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "node-id").write_text("n1\n")
    with pytest.raises(ValueError, match="not an empty directory"):
        backup.restore(data, str(tmp_path / "used"))
    backup.restore(data, str(tmp_path / "empty"))


@pytest.mark.parametrize("data", [b"", b"\x00" * 40, b"kvd"])
def test_a_file_that_is_not_a_backup_is_refused(tmp_path: Any, data: bytes) -> None:
    with pytest.raises(ValueError, match="not a readable kvd backup"):
        backup.describe(data)

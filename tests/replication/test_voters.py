"""The voter set survives compaction: it travels in the snapshot (safety rule 4)."""

from __future__ import annotations

from typing import Any

from kvd.store import Store
from kvd.wal import snapshot
from kvd.wal.layout import DataDir
from tests.support import InlineReactor, open_inline_node


def test_voters_come_from_the_snapshot_once_the_config_entry_is_compacted(
        tmp_path: Any) -> None:
    data_dir = DataDir(str(tmp_path))
    data_dir.create()
    store = Store()
    store.apply(1, [{"op": "config", "voters": [["a", "inc-a"], ["b", "inc-b"]]}])
    meta = {"voters": [["a", "inc-a"], ["b", "inc-b"]]}
    snapshot.write(data_dir, snapshot.Snapshot(1, 1, store.snapshot_state(), meta))
    node = open_inline_node(str(tmp_path), InlineReactor())
    node.bootstrap_voters = {"z": "from-zookeeper"}
    assert node.voters() == {"a": "inc-a", "b": "inc-b"}

"""The voter set survives compaction: it travels in the snapshot (safety rule 4)."""

from __future__ import annotations

from typing import Any

from kvd.store import Store
from kvd.wal import snapshot
from kvd.wal.layout import DataDir
from kvd.wal.record import LogEntry
from tests.replication.support import config_entry, member_of
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


def test_a_joint_change_travels_in_the_snapshot_and_each_index_has_its_own_sets(
        tmp_path: Any) -> None:
    """A snapshot taken while a change is joint keeps both sets (old and new decide
    until the second entry), and the sets recorded are those in effect at its index,
    not those of a config entry above it that may yet be truncated."""
    old = [["a", "inc-a"], ["b", "inc-b"], ["c", "inc-c"]]
    new = [["a", "inc-a"], ["b", "inc-b"], ["d", "inc-d"]]
    data_dir = DataDir(str(tmp_path / "snap"))
    data_dir.create()
    store = Store()
    store.apply(1, [{"op": "config", "voters": new, "joint": old}])
    meta = {"voters": new, "joint": old}
    snapshot.write(data_dir, snapshot.Snapshot(1, 1, store.snapshot_state(), meta))
    node = open_inline_node(str(tmp_path / "snap"), InlineReactor())
    assert node.voter_sets() == [{i: v for i, v in old}, {i: v for i, v in new}]
    assert set(node.voters()) == {"a", "b", "c", "d"}

    logged = member_of(str(tmp_path / "log"), InlineReactor(), "a", ("a", "b", "c"))
    me = logged.identity.incarnation
    first, joint, last = ({"a": me, "b": "ib", "c": "ic"}, {"a": me, "b": "ib", "d": "id"},
                          {"a": me, "b": "ib", "d": "id"})
    logged.rlog.promise(1)
    logged.rlog.append([
        config_entry(1, 1, first),
        LogEntry(1, 2, [{"op": "config", "voters": sorted([i, v] for i, v in joint.items()),
                         "joint": sorted([i, v] for i, v in first.items())}]),
        config_entry(1, 3, last)])
    assert logged.voter_sets_at(1) == [first]
    assert logged.voter_sets_at(2) == [first, joint]
    assert logged.voter_sets_at(3) == logged.voter_sets() == [last]

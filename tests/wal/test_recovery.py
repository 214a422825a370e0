"""WAL records, group commit and recovery on real files, driven synchronously."""

from __future__ import annotations

import os
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvd.node import Node, NodeSettings
from kvd.store import Result, delete_command, put_command
from kvd.wal import record
from kvd.wal.layout import DataDir
from kvd.wal.recovery import WalCorruption, recover
from tests.support import InlineReactor, open_inline_node, snapshot_inline


def write(node: Node, reactor: InlineReactor, command: dict[str, Any]) -> Result:
    d = node.submit([command])
    reactor.advance(0)
    results: list[list[Result]] = []
    d.addCallback(results.append)
    assert results, "a standalone write should commit once it is durable"
    return results[0][0]


def restart(path: str, reactor: InlineReactor, **kw: Any) -> Node:
    return open_inline_node(path, reactor, segment_bytes=SMALL_SEGMENTS, **kw)


#: Small segments, so that compaction has whole segments to delete.
SMALL_SEGMENTS = 512


def last_segment(path: str) -> str:
    data_dir = DataDir(path)
    return data_dir.segment_path(data_dir.segment_names()[-1])


def test_record_round_trip_and_torn_tail_detection() -> None:
    commands = [{"op": "put", "k": b"k", "v": b"v", "rid": "r"}]
    data = record.entry(1, 7, msgpack.packb(commands, use_bin_type=True)) + record.promise(3, "b")
    records, bad = record.read_records(data)
    assert bad is None
    assert [p for _, p in records] == [[record.RecordType.ENTRY, 1, 7, commands],
                                       [record.RecordType.PROMISE, 3, "b"]]
    _, bad = record.read_records(data + b"\x07garbage")
    assert bad is not None and bad.at_tail and bad.offset == len(data)


def test_flipped_byte_before_a_valid_record_is_not_a_tail() -> None:
    first = bytearray(record.entry(1, 1, msgpack.packb([{"op": "noop"}])))
    first[-1] ^= 0xFF
    _, bad = record.read_records(bytes(first) + record.promise(2))
    assert bad is not None and bad.offset == 0 and not bad.at_tail


def test_acknowledged_writes_survive_restart(tmp_path: Any) -> None:
    reactor = InlineReactor()
    node = open_inline_node(str(tmp_path), reactor)
    revisions = [write(node, reactor, put_command(b"k%d" % i, b"v", f"r{i}"))["revision"]
                 for i in range(20)]
    node = restart(str(tmp_path), reactor)
    for i, revision in enumerate(revisions):
        kv = node.store.get(b"k%d" % i)
        assert kv is not None and kv.mod_revision == revision


def test_torn_tail_is_dropped_and_logged(tmp_path: Any, caplog: Any) -> None:
    reactor = InlineReactor()
    node = open_inline_node(str(tmp_path), reactor)
    write(node, reactor, put_command(b"a", b"1", "r1"))
    with open(last_segment(str(tmp_path)), "ab") as f:
        f.write(os.urandom(3) + b"\x00" * 40)
    recovered = recover(DataDir(str(tmp_path)))
    assert recovered.torn_tail
    node = restart(str(tmp_path), reactor)
    kv = node.store.get(b"a")
    assert kv is not None and kv.value == b"1"
    # The torn bytes are gone: a new write and another restart read back cleanly.
    write(node, reactor, put_command(b"b", b"2", "r2"))
    node = restart(str(tmp_path), reactor)
    assert node.store.get(b"b") is not None
    assert not recover(DataDir(str(tmp_path))).torn_tail


def test_corruption_in_an_earlier_record_refuses_to_start(tmp_path: Any) -> None:
    reactor = InlineReactor()
    node = open_inline_node(str(tmp_path), reactor)
    for i in range(5):
        write(node, reactor, put_command(b"k", b"value-%d" % i, f"r{i}"))
    path = last_segment(str(tmp_path))
    with open(path, "rb") as f:
        offsets = [offset for offset, _ in record.read_records(f.read())[0]]
    target = offsets[3]  # an entry with later records behind it
    with open(path, "r+b") as f:
        f.seek(target + record.HEADER.size + 2)
        byte = f.read(1)
        f.seek(target + record.HEADER.size + 2)
        f.write(bytes([byte[0] ^ 0x55]))
    with pytest.raises(WalCorruption) as caught:
        recover(DataDir(str(tmp_path)))
    assert f"{path}: unreadable record at offset {target} (checksum mismatch)" in str(
        caught.value)


def test_snapshot_and_compaction_give_the_same_state_as_replay(tmp_path: Any) -> None:
    plain, compacted = str(tmp_path / "plain"), str(tmp_path / "compacted")
    reactor = InlineReactor()
    small = NodeSettings(url="http://127.0.0.1:1", snapshot_entries=7, log_tail=3)
    nodes = [open_inline_node(plain, reactor, segment_bytes=SMALL_SEGMENTS),
             open_inline_node(compacted, reactor, small, segment_bytes=SMALL_SEGMENTS)]
    snapshots: list[int] = []
    nodes[1].snapshotter = lambda node: snapshots.append(snapshot_inline(node, compacted))
    for i in range(60):
        for node in nodes:
            key = b"k%d" % (i % 9)
            command = (delete_command(key, f"d{i}") if i % 5 == 4
                       else put_command(key, b"v%d" % i, f"p{i}"))
            write(node, reactor, command)
    assert len(snapshots) >= 5
    assert DataDir(compacted).snapshot_indexes(), "snapshots must be on disk"
    assert DataDir(compacted).segment_names()[0] > 1, "compaction deleted no segment"
    recovered = recover(DataDir(compacted))
    # The promise record went with a deleted segment; the snapshot still carries it.
    assert recovered.promised_epoch == nodes[1].rlog.promised_epoch == 1
    reopened = [restart(plain, reactor), restart(compacted, reactor, settings=small)]
    assert reopened[0].store.digest() == reopened[1].store.digest() == nodes[0].store.digest()
    assert reopened[1].store.revision == reopened[0].store.revision
    assert recovered.snapshot is not None


@pytest.mark.parametrize(("log_tail", "log_tail_bytes"), [(50, 1000), (5, 1 << 20)],
                         ids=["bytes-bound", "entries-bound"])
def test_the_log_kept_after_a_snapshot_is_bounded_in_entries_and_bytes(
        tmp_path: Any, log_tail: int, log_tail_bytes: int) -> None:
    """A lagging follower's catch-up log is held in memory: batched entries can
    be large, so it is bounded in bytes as well as in entries."""
    reactor = InlineReactor()
    settings = NodeSettings(url="http://127.0.0.1:1", snapshot_entries=1000,
                            log_tail=log_tail, log_tail_bytes=log_tail_bytes)
    node = open_inline_node(str(tmp_path), reactor, settings)
    for i in range(20):
        write(node, reactor, put_command(b"k%d" % i, b"v" * 300, f"r{i}"))
    index = snapshot_inline(node, str(tmp_path))
    held = node.rlog.entries_between(node.rlog.base_index + 1, index)
    assert 0 < len(held) <= log_tail
    assert sum(len(e.packed) for e in held) <= log_tail_bytes
    # The writes are alike: one more entry would break a bound.
    largest = max(len(e.packed) for e in held)
    assert len(held) == log_tail or (len(held) + 1) * largest > log_tail_bytes
    reopened = restart(str(tmp_path), reactor, settings=settings)
    assert reopened.store.digest() == node.store.digest()


def test_a_snapshot_is_taken_once_the_log_since_the_last_holds_snapshot_bytes(
        tmp_path: Any) -> None:
    """Large values: the entry and command counts are far off, the bytes are not."""
    reactor = InlineReactor()
    settings = NodeSettings(url="http://127.0.0.1:1", snapshot_entries=1000,
                            snapshot_bytes=3000)
    node = open_inline_node(str(tmp_path), reactor, settings)
    taken: list[int] = []
    node.snapshotter = lambda node: taken.append(snapshot_inline(node, str(tmp_path)))
    for i in range(20):
        write(node, reactor, put_command(b"k%d" % i, b"v" * 1000, f"r{i}"))
    # Each entry packs to a little over 1,000 bytes: a snapshot every third.
    assert taken[:3] == [4, 7, 10], taken


operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.sampled_from("abcd"), st.text(max_size=5)),
        st.tuples(st.just("delete"), st.sampled_from("abcd"), st.none()),
        st.tuples(st.just("cas"), st.sampled_from("abcd"), st.integers(0, 12)),
        st.tuples(st.just("restart"), st.none(), st.none()),
    ),
    max_size=40,
)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_random_operations_match_a_dict_model_through_restarts(tmp_path_factory: Any,
                                                                ops: list[Any]) -> None:
    path = str(tmp_path_factory.mktemp("wal"))
    reactor = InlineReactor()
    node = open_inline_node(path, reactor)
    model: dict[bytes, tuple[bytes, int]] = {}
    revision = 0
    for n, (op, key, arg) in enumerate(ops):
        k = key.encode() if key else b""
        if op == "restart":
            node = restart(path, reactor)
        elif op == "put":
            result = write(node, reactor, put_command(k, arg.encode(), f"r{n}"))
            revision += 1
            model[k] = (arg.encode(), revision)
            assert result == {"ok": True, "revision": revision}
        elif op == "delete":
            result = write(node, reactor, delete_command(k, f"r{n}"))
            if k in model:
                revision += 1
                del model[k]
                assert result == {"ok": True, "revision": revision}
            else:
                assert result["error"] == "not_found"
        else:
            current = model.get(k, (b"", 0))[1]
            result = write(node, reactor, put_command(k, b"cas", f"r{n}", prev_revision=arg))
            if current == arg:
                revision += 1
                model[k] = (b"cas", revision)
                assert result == {"ok": True, "revision": revision}
            else:
                assert result["error"] == "conflict"
        actual = {kv.key: (kv.value, kv.mod_revision) for kv in node.store.range()}
        assert actual == model
        assert node.store.revision == revision


def test_snapshot_position_is_read_without_the_store(tmp_path: Any) -> None:
    from kvd.store import Store
    from kvd.wal import snapshot

    store = Store()
    store.apply(1, [put_command(b"k", b"v", "r")])
    data = snapshot.encode(snapshot.Snapshot(3, 41, store.snapshot_state(), {"voters": []}))
    assert snapshot.position(data) == (3, 41)
    data_dir = DataDir(str(tmp_path))
    data_dir.create()
    assert snapshot.write_raw(data_dir, data).index == 41
    assert snapshot.read_newest_raw(data_dir) == (3, 41, data)
    with pytest.raises(ValueError):
        snapshot.position(data[:-1])


# Fails if: recover writes the torn-tail flag after cutting the tail (or not at all).
def test_the_torn_tail_flag_is_on_disk_before_the_tail_is_cut(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash during the cut leaves a node that knows it may have lost entries (rule 5)."""
    from kvd.wal import recovery

    path = str(tmp_path)
    reactor = InlineReactor()
    node = restart(path, reactor)
    write(node, reactor, put_command(b"k", b"v", "r1"))
    node.rlog._writer.close()
    with open(last_segment(path), "ab") as f:
        f.write(b"\x30\x00\x00\x00torn")

    def crash_on_cut(file: str, mode: str = "r", *a: Any, **kw: Any) -> Any:
        if mode == "r+b":
            raise OSError("the machine lost power here")
        return open(file, mode, *a, **kw)

    monkeypatch.setattr(recovery, "open", crash_on_cut, raising=False)
    with pytest.raises(OSError):
        recover(DataDir(path))
    assert DataDir(path).torn_tail_marked()
    monkeypatch.undo()
    assert restart(path, reactor).torn_unacked

"""The store as a state machine: revisions, CAS, idempotency, snapshots."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kvd.store import Store, delete_command, noop_command, put_command


def test_put_sets_revisions_and_version() -> None:
    store = Store()
    assert store.apply(1, [put_command(b"a", b"1", "r1")]) == [{"ok": True, "revision": 1}]
    store.apply(2, [put_command(b"b", b"2", "r2"), put_command(b"a", b"3", "r3")])
    kv = store.get(b"a")
    assert kv is not None
    assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"3", 1, 3, 2)
    assert store.revision == 3
    assert store.applied_index == 2


def test_cas_on_prev_revision() -> None:
    store = Store()
    store.apply(1, [put_command(b"k", b"v1", "r1", prev_revision=0)])
    [missed] = store.apply(2, [put_command(b"k", b"v2", "r2", prev_revision=0)])
    assert missed == {"ok": False, "error": "conflict", "revision": 1, "current_revision": 1}
    [hit] = store.apply(3, [put_command(b"k", b"v2", "r3", prev_revision=1)])
    assert hit == {"ok": True, "revision": 2}


def test_delete_and_missing_delete() -> None:
    store = Store()
    store.apply(1, [put_command(b"k", b"v", "r1")])
    assert store.apply(2, [delete_command(b"k", "r2")]) == [{"ok": True, "revision": 2}]
    assert store.get(b"k") is None
    [missing] = store.apply(3, [delete_command(b"k", "r3")])
    assert missing["error"] == "not_found"
    assert store.revision == 2


def test_retried_request_id_returns_first_result_without_applying_twice() -> None:
    store = Store()
    store.apply(1, [put_command(b"k", b"v", "same")])
    assert store.apply(2, [put_command(b"k", b"v", "same")]) == [{"ok": True, "revision": 1}]
    kv = store.get(b"k")
    assert kv is not None and kv.version == 1


def test_request_window_is_bounded() -> None:
    store = Store(request_window=2)
    for i in range(1, 4):
        store.apply(i, [put_command(b"k", b"v", f"r{i}")])
    assert store.result_for("r1") is None
    assert store.result_for("r3") == {"ok": True, "revision": 3}


def test_snapshot_round_trip_keeps_everything() -> None:
    store = Store()
    store.apply(1, [put_command(b"a", b"1", "r1"), put_command(b"b", b"2", "r2")])
    store.apply(2, [delete_command(b"a", "r3"), noop_command()])
    copy = Store.from_snapshot(store.snapshot_state())
    assert copy.digest() == store.digest()
    assert copy.result_for("r2") == store.result_for("r2")
    assert (copy.revision, copy.applied_index, copy.value_bytes) == (3, 2, 1)


def test_range_is_ordered_and_bounded() -> None:
    store = Store()
    store.apply(1, [put_command(k, b"v", k.decode()) for k in (b"b", b"a2", b"a1", b"c")])
    assert [kv.key for kv in store.range(b"a", b"b")] == [b"a1", b"a2"]
    assert [kv.key for kv in store.range(limit=3)] == [b"a1", b"a2", b"b"]


def test_applying_an_index_twice_is_refused() -> None:
    store = Store()
    store.apply(1, [noop_command()])
    try:
        store.apply(1, [noop_command()])
    except ValueError as e:
        assert "applied twice" in str(e)
    else:
        raise AssertionError("re-applying an index must fail")


# Any msgpack-able value in any field: what a forged or corrupted entry could hold.
_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.binary(max_size=4)
    | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["k", "v", "op", "prev", "ttl", "rid", "target",
                                       "value", "cmp", "compare", "success", "failure"]),
                      inner, max_size=4),
    max_leaves=12,
)
_parts = st.lists(st.fixed_dictionaries({}, optional={
    "op": st.sampled_from(["put", "del", "get"]) | _values, "k": _values, "v": _values,
    "ttl": _values, "target": st.sampled_from(["value", "revision", "exists"]) | _values,
    "value": _values, "cmp": st.sampled_from(["==", "<"]) | _values}), max_size=3)
_txns = st.fixed_dictionaries({"op": st.just("txn"), "compare": _parts, "success": _parts,
                               "failure": _parts}, optional={"rid": _values})
_commands = _txns | st.fixed_dictionaries(
    {"op": st.sampled_from(["put", "del", "txn", "noop", "config", "bogus"])},
    optional={"k": _values, "v": _values, "prev": _values, "ttl": _values, "rid": _values,
              "expire": _values, "compare": _values, "success": _values, "failure": _values,
              "voters": _values},
) | _values


# Fails if: Store._apply_one drops its `problem(command)` check (rule 14).
@given(st.lists(st.lists(_commands, max_size=4), max_size=6))
def test_apply_is_total_and_deterministic(entries: list[list[Any]]) -> None:
    """Whatever an entry holds, apply never raises and every replica gets the same."""
    stores = [Store(), Store()]
    for index, commands in enumerate(entries, start=1):
        results = [store.apply(index, commands) for store in stores]
        assert results[0] == results[1]
        assert len(results[0]) == len(commands)
    assert stores[0].digest() == stores[1].digest()
    assert stores[0].applied_index == len(entries)

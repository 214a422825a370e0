"""The store as a state machine: revisions, CAS, idempotency, snapshots."""

from __future__ import annotations

import struct
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvd.store import (
    Store,
    delete_command,
    lease_expire_command,
    lease_grant_command,
    lease_keepalive_command,
    lease_revoke_command,
    noop_command,
    put_command,
)


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


SERVER_ID = "0123456789abcdef0123456789abcdef"


def test_the_window_keeps_server_and_client_ids_and_any_result_through_a_snapshot() -> None:
    """Server-made ids are kept as 16 bytes and plain successes as their revision;
    neither may change what a retry gets, here or on a peer."""
    store = Store(request_window=4)
    store.apply(1, [put_command(b"k", b"v", SERVER_ID),
                    put_command(b"k", b"w", "c:put::key", prev_revision=1),
                    put_command(b"k", b"x", SERVER_ID.upper(), prev_revision=1)])
    expected = {SERVER_ID: {"ok": True, "revision": 1},
                "c:put::key": {"ok": True, "revision": 2},
                SERVER_ID.upper(): {"ok": False, "error": "conflict", "revision": 2,
                                    "current_revision": 2}}
    wire = msgpack.unpackb(msgpack.packb(store.snapshot_state(), use_bin_type=True),
                           raw=False, strict_map_key=False)
    for copy in (store, Store.from_snapshot(wire, request_window=4, check=True)):
        assert {rid: copy.result_for(rid) for rid in expected} == expected
        assert copy.result_for(SERVER_ID[:-1] + "0") is None
    # The same ids again are not applied again, and the window still evicts oldest first.
    copy.apply(2, [put_command(b"k", b"y", SERVER_ID), put_command(b"k", b"z", "new1"),
                   put_command(b"k", b"z", "new2")])
    kv = copy.get(b"k")
    assert kv is not None and kv.version == 4
    assert copy.result_for(SERVER_ID) is None and copy.result_for("c:put::key") is not None


# Fails if: Store.from_snapshot keeps a string id from an older snapshot as it is (a
# server-made id's retry would miss it and apply twice).
def test_a_server_made_id_from_an_older_snapshot_is_still_found() -> None:
    store = Store.from_snapshot({"revision": 1, "applied_index": 1, "kv": {}, "requests": [
        [SERVER_ID, msgpack.packb({"ok": True, "revision": 1})]]}, check=True)
    assert store.result_for(SERVER_ID) == {"ok": True, "revision": 1}
    assert store.apply(2, [put_command(b"k", b"v", SERVER_ID)]) == [{"ok": True, "revision": 1}]
    assert store.get(b"k") is None


@pytest.mark.parametrize("entry", [
    [b"\x00" * 15, b"\x90"],        # a byte id that is not 16 bytes
    [SERVER_ID, True],              # a result that is neither packed nor a revision
    [SERVER_ID, -1],
    [7, b"\x90"],
], ids=["short-id", "bool", "negative", "int-id"])
def test_a_peer_snapshot_with_a_bad_window_entry_is_refused(entry: list[Any]) -> None:
    with pytest.raises(ValueError):
        Store.from_snapshot({"revision": 1, "applied_index": 1, "kv": {},
                             "requests": [entry]}, check=True)


def test_snapshot_round_trip_keeps_everything() -> None:
    store = Store()
    store.apply(1, [put_command(b"a", b"1", "r1"), put_command(b"b", b"2", "r2")])
    store.apply(2, [delete_command(b"a", "r3"), noop_command()])
    copy = Store.from_snapshot(store.snapshot_state())
    assert copy.digest() == store.digest()
    assert copy.result_for("r2") == store.result_for("r2")
    assert (copy.revision, copy.applied_index, copy.value_bytes) == (3, 2, 1)


def _format1(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` as a node before store format 2 wrote it (20-byte untagged headers)
    and read it back from disk (msgpack)."""
    store = Store.from_snapshot(state)
    old = {k: v for k, v in state.items() if k != "kv"}
    old["data"] = {}
    for key in state["kv"]:
        kv = store.get(key)
        assert kv is not None
        old["data"][key] = struct.pack("<QQI", kv.create_revision, kv.mod_revision,
                                       kv.version) + kv.value
    return msgpack.unpackb(msgpack.packb(old, use_bin_type=True), raw=False,
                           strict_map_key=False)


def test_a_format1_snapshot_loads_as_the_store_that_wrote_it() -> None:
    """Snapshots and backups written before the tagged header still load, as the
    same keys, revisions and digest (a node upgraded in place, a peer not yet)."""
    store = Store()
    store.apply(1, [put_command(b"a", b"1", "r1"), put_command(b"b", b"", "r2")])
    store.apply(2, [put_command(b"a", b"22", "r3")])
    old = _format1(store.snapshot_state())
    for check in (False, True):
        copy = Store.from_snapshot(old, check=check)
        assert copy.digest() == store.digest()
        assert copy.value_bytes == store.value_bytes == 2
        assert copy.get(b"a") == store.get(b"a")


def test_a_format1_value_created_after_its_last_change_still_loads() -> None:
    """A peer's format 1 value is not checked for create <= mod; converting it
    must not raise half-way through an install."""
    old = {"revision": 2**33, "applied_index": 1, "requests": [],
           "data": {b"k": struct.pack("<QQI", 2**33, 5, 1) + b"v"}}
    kv = Store.from_snapshot(old, check=True).get(b"k")
    assert kv is not None and (kv.create_revision, kv.mod_revision) == (2**33, 5)


def test_revisions_past_32_bits_and_versions_past_16_keep_their_values() -> None:
    """The short header holds small numbers only; larger ones take the long one."""
    store = Store()
    store.apply(1, [put_command(b"k", b"v0", "r0")])
    store.revision = 2**32 - 2
    store.apply(2, [put_command(b"k", b"v1", "r1"), put_command(b"k", b"v2", "r2")])
    kv = store.get(b"k")
    assert kv is not None
    assert (kv.value, kv.create_revision, kv.mod_revision) == (b"v2", 1, 2**32)
    many = Store()
    for i in range(1, 2**16 + 2):
        many._write(b"k", b"x" * (i % 3), i, None)
    kv = many.get(b"k")
    assert kv is not None and kv.version == 2**16 + 1 and kv.value == b"x" * ((2**16 + 1) % 3)
    assert many.value_bytes == len(kv.value)
    state = msgpack.unpackb(msgpack.packb(store.snapshot_state(), use_bin_type=True),
                            raw=False, strict_map_key=False)
    copy = Store.from_snapshot(state, check=True)
    assert copy.get(b"k") == store.get(b"k") and copy.value_bytes == 2


@pytest.mark.parametrize("store_fields", [
    {"kv": {b"k": b"\x07" + bytes(20)}},              # unknown header tag
    {"kv": {b"k": b"\x00" + bytes(9)}},               # shorter than the short header
    {"kv": {b"k": b"\x01" + bytes(19)}},              # shorter than the long header
    {"kv": {b"k": b""}},
    {"kv": {}, "data": {}},                            # both formats at once
    {},                                                # neither
    {"data": {b"k": bytes(19)}},                       # format 1, short header
], ids=["tag", "short", "long", "empty", "both", "neither", "format1-short"])
def test_a_peer_snapshot_with_a_bad_packed_value_is_refused(
        store_fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        Store.from_snapshot({"revision": 1, "applied_index": 1, "requests": [],
                             **store_fields}, check=True)


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


def test_a_lease_holds_keys_until_revoked_in_one_revision() -> None:
    store = Store()
    assert store.apply(1, [lease_grant_command(7, 30, "g")]) == [
        {"ok": True, "id": 7, "ttl": 30, "revision": 0}]
    [missing] = store.apply(2, [{"op": "put", "k": b"x", "v": b"1", "lease": 8, "rid": "p"}])
    assert missing["error"] == "lease_not_found"
    store.apply(3, [{"op": "put", "k": b"a", "v": b"1", "lease": 7, "rid": "p1"},
                    {"op": "put", "k": b"b", "v": b"2", "lease": 7, "rid": "p2"},
                    put_command(b"c", b"3", "p3")])
    assert (store.lease_of(b"a"), store.lease_keys[7]) == (7, {b"a", b"b"})
    # A put without a lease detaches the key.
    store.apply(4, [put_command(b"b", b"4", "p4")])
    assert store.lease_keys[7] == {b"a"} and store.lease_of(b"b") == 0
    [revoked] = store.apply(5, [lease_revoke_command(7, "r")])
    assert revoked == {"ok": True, "revision": 5, "deleted": 1}
    assert [kv.key for kv in store.range()] == [b"b", b"c"]
    assert 7 not in store.leases and store.lease_of(b"a") == 0


def test_an_expiry_is_void_once_the_lease_was_kept_alive() -> None:
    store = Store()
    store.apply(1, [lease_grant_command(7, 30, "g"),
                    {"op": "put", "k": b"a", "v": b"1", "lease": 7, "rid": "p"}])
    assert store.apply(2, [lease_keepalive_command(7)]) == [
        {"ok": True, "id": 7, "ttl": 30, "revision": 1}]
    [stale] = store.apply(3, [lease_expire_command(7, renewals=0)])
    assert stale["ok"] is False and store.get(b"a") is not None
    [expired] = store.apply(4, [lease_expire_command(7, renewals=1)])
    assert expired["ok"] is True and store.get(b"a") is None


def test_snapshot_round_trip_keeps_leases() -> None:
    store = Store()
    store.apply(1, [lease_grant_command(7, 30, "g"), lease_grant_command(9, 5, "h"),
                    {"op": "put", "k": b"a", "v": b"1", "lease": 7, "rid": "p"}])
    store.apply(2, [lease_keepalive_command(9)])
    copy = Store.from_snapshot(store.snapshot_state())
    assert copy.digest() == store.digest()
    assert (copy.leases, copy.lease_keys, copy.lease_renewals) == (
        {7: 30, 9: 5}, {7: {b"a"}, 9: set()}, {7: 0, 9: 1})
    assert copy.lease_of(b"a") == 7


def test_range_delete_spends_one_revision_or_none() -> None:
    store = Store()
    store.apply(1, [put_command(k, b"v", k.decode()) for k in (b"a1", b"a2", b"b")])
    [deleted] = store.apply(2, [{"op": "del", "k": b"a", "end": b"b", "prev_kv": True,
                                 "rid": "d"}])
    assert (deleted["deleted"], deleted["revision"]) == (2, 4)
    assert [kv["key"] for kv in deleted["prev_kvs"]] == [b"a1", b"a2"]
    [none] = store.apply(3, [{"op": "del", "k": b"x", "end": b"", "rid": "e"}])
    assert (none["deleted"], store.revision) == (0, 4)


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
    {"op": st.sampled_from(["put", "del", "txn", "noop", "config", "bogus", "lease_grant",
                            "lease_revoke", "lease_keepalive"])},
    optional={"k": _values, "v": _values, "prev": _values, "ttl": _values, "rid": _values,
              "id": st.integers(-1, 3) | _values, "lease": st.integers(0, 3) | _values,
              "end": _values, "renewals": _values, "prev_kv": _values,
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


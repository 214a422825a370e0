"""The replicated users, roles and enabled flag, applied as the store applies them."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kvd.auth.state import ROOT, AuthState, command_problem
from kvd.commands import problem
from kvd.store import Store


def auth(action: str, **fields: Any) -> dict[str, Any]:
    return {"op": "auth", "action": action, **fields}


def state_with(*commands: dict[str, Any]) -> AuthState:
    state = AuthState()
    for command in commands:
        assert command_problem(command) is None, command
        state.apply(command)
    return state


# Fails if: a grant's range is open-ended (no prefix end).
def test_a_grant_covers_its_prefix_and_nothing_else() -> None:
    state = state_with(auth("user_add", name="ann", hash=b"h"), auth("role_add", role="app"),
                       auth("role_grant", role="app", prefix=b"app/", perm="read"),
                       auth("user_grant", name="ann", role="app"))
    assert state.permits_key("ann", "read", b"app/x")
    assert not state.permits_key("ann", "write", b"app/x")
    assert not state.permits_key("ann", "read", b"apq")
    assert not state.permits_key("ann", "read", b"app")
    assert state.permits("ann", "read", b"app/", b"app0")
    assert not state.permits("ann", "read", b"app/", b"app1")
    assert not state.permits("ann", "read", b"app/", None)
    assert not state.permits_key("bob", "read", b"app/x")


def test_adjacent_grants_together_cover_a_range() -> None:
    state = state_with(auth("user_add", name="ann", hash=b"h"), auth("role_add", role="r"),
                       auth("role_grant", role="r", prefix=b"a", perm="readwrite"),
                       auth("role_grant", role="r", prefix=b"b", perm="read"),
                       auth("user_grant", name="ann", role="r"))
    assert state.permits("ann", "read", b"a", b"c")
    assert not state.permits("ann", "read", b"a", b"d")
    assert not state.permits("ann", "write", b"a", b"c")


def test_the_empty_prefix_grants_the_whole_key_space() -> None:
    state = state_with(auth("user_add", name="ann", hash=b"h"), auth("role_add", role="all"),
                       auth("role_grant", role="all", prefix=b"", perm="read"),
                       auth("user_grant", name="ann", role="all"))
    assert state.permits("ann", "read", b"", None)


def test_root_may_do_anything_and_always_holds_its_role() -> None:
    state = state_with(auth("user_add", name=ROOT, hash=b"h"))
    assert state.permits(ROOT, "write", b"", None)
    result = state.apply(auth("user_revoke", name=ROOT, role=ROOT))
    assert result["error"] == "invalid"


# Fails if: the root user may be deleted while auth is on (the cluster locks itself out).
def test_auth_cannot_be_enabled_without_root_nor_root_deleted_while_on() -> None:
    state = AuthState()
    assert state.apply(auth("enable"))["error"] == "invalid"
    assert not state.enabled
    state.apply(auth("user_add", name=ROOT, hash=b"h"))
    assert state.apply(auth("enable")) == {"ok": True}
    assert state.apply(auth("user_delete", name=ROOT))["error"] == "invalid"
    assert ROOT in state.users


def test_a_new_password_or_a_new_user_of_the_same_name_gets_a_new_stamp() -> None:
    state = state_with(auth("user_add", name="ann", hash=b"h"))
    first = state.stamp("ann")
    state.apply(auth("user_passwd", name="ann", hash=b"i"))
    second = state.stamp("ann")
    state.apply(auth("user_delete", name="ann"))
    state.apply(auth("user_add", name="ann", hash=b"h"))
    assert len({first, second, state.stamp("ann")}) == 3


def test_deleting_a_role_takes_it_from_every_user() -> None:
    state = state_with(auth("user_add", name="ann", hash=b"h"), auth("role_add", role="r"),
                       auth("user_grant", name="ann", role="r"), auth("role_delete", role="r"))
    assert state.roles_of("ann") == []


def test_errors_name_what_is_missing_or_taken() -> None:
    state = state_with(auth("user_add", name="ann", hash=b"h"))
    assert state.apply(auth("user_add", name="ann", hash=b"h"))["error"] == "exists"
    assert state.apply(auth("user_grant", name="ann", role="nope"))["error"] == "not_found"
    assert state.apply(auth("user_delete", name="bob"))["error"] == "not_found"
    assert state.apply(auth("role_add", role=ROOT))["error"] == "exists"
    assert state.apply(auth("role_grant", role=ROOT, prefix=b"", perm="read"))["error"] == (
        "invalid")


# Fails if: the store's snapshot leaves the auth state out.
def test_users_roles_and_the_flag_travel_in_a_snapshot_hidden_from_the_keys() -> None:
    store = Store()
    store.apply(1, [auth("user_add", name=ROOT, hash=b"h"), auth("role_add", role="r"),
                    auth("role_grant", role="r", prefix=b"p/", perm="write"),
                    auth("enable")])
    assert store.revision == 0 and list(store.range()) == []
    copy = Store.from_snapshot(store.snapshot_state(), check=True)
    assert copy.auth.enabled and copy.auth.roles == {"r": {b"p/": "write"}}
    assert copy.auth.users == store.auth.users
    assert copy.digest() == store.digest()
    old = store.snapshot_state()
    del old["auth"]
    assert not Store.from_snapshot(old).auth.enabled


def test_a_malformed_auth_command_is_an_error_result_not_an_exception() -> None:
    store = Store()
    results = store.apply(1, [auth("user_add", name="", hash=b"h"),
                              auth("role_grant", role="r", prefix="p", perm="read"),
                              auth("role_grant", role="r", prefix=b"p", perm=["read"]),
                              auth("explode")])
    assert [r["error"] for r in results] == ["invalid_command"] * 4
    assert store.auth.revision == 0


@given(st.dictionaries(st.sampled_from(["action", "name", "role", "hash", "prefix", "perm"]),
                       st.one_of(st.text(max_size=3), st.binary(max_size=3), st.integers(),
                                 st.lists(st.integers(), max_size=2), st.none(),
                                 st.sampled_from(["user_add", "role_grant", "enable",
                                                  "read", "root"]))))
def test_any_auth_command_is_refused_or_applied_whole(fields: dict[str, Any]) -> None:
    store = Store()
    command = {"op": "auth", **fields}
    [result] = store.apply(1, [command])
    assert result["ok"] is (problem(command) is None and result.get("error") is None)


# Fails if: the store applies a command without checking its user (a follower that
# had not yet applied a revoke, or the enabling, let it through).
def test_the_store_checks_the_user_again_when_a_command_applies() -> None:
    store = Store()
    store.apply(1, [auth("user_add", name=ROOT, hash=b"h"), auth("user_add", name="ann",
                                                                  hash=b"h"),
                    auth("role_add", role="r"),
                    auth("role_grant", role="r", prefix=b"a/", perm="write"),
                    auth("user_grant", name="ann", role="r"), auth("enable")])
    put = {"op": "put", "k": b"a/1", "v": b"v"}
    results = store.apply(2, [
        {**put, "user": "ann"},                         # allowed
        put,                                            # taken while auth was off
        {**put, "k": b"b/1", "user": "ann"},            # outside her grant
        {"op": "txn", "compare": [{"k": b"b/1", "target": "exists", "value": False}],
         "success": [{"op": "put", "k": b"a/2", "v": b"v"}], "failure": [],
         "user": "ann"},                                # compares read b/1
        auth("role_add", role="s", user="ann"),         # not root
        {"op": "del", "k": b"a/1", "prev": 1, "expire": True},  # the leader's TTL expiry
    ])
    assert [r.get("error") for r in results] == [
        None, "permission_denied", "permission_denied", "permission_denied",
        "permission_denied", None]
    assert [kv.key for kv in store.range()] == []
    assert "s" not in store.auth.roles
    store.apply(3, [auth("role_revoke", role="r", prefix=b"a/", user=ROOT)])
    assert store.apply(4, [{**put, "user": "ann"}])[0]["error"] == "permission_denied"


# Fails if: AuthState.allows ignores the command's stamp (a token voided by a new
# password still writes through a node that had not applied the change).
def test_a_write_stamped_with_an_old_password_generation_is_refused() -> None:
    store = Store()
    store.apply(1, [auth("user_add", name=ROOT, hash=b"h"), auth("enable")])
    old = store.auth.stamp(ROOT)
    store.apply(2, [auth("user_passwd", name=ROOT, hash=b"i", user=ROOT, stamp=old)])
    put = {"op": "put", "k": b"a", "v": b"v", "user": ROOT}
    assert store.apply(3, [{**put, "stamp": old}])[0]["error"] == "permission_denied"
    assert store.apply(4, [{**put, "stamp": store.auth.stamp(ROOT)}])[0]["ok"]


# Fails if: the expiry exemption in AuthState.allows takes any command marked expire.
def test_only_the_leaders_expiry_delete_skips_the_user_check() -> None:
    store = Store()
    store.apply(1, [auth("user_add", name=ROOT, hash=b"h"), auth("user_add", name="ann",
                                                                  hash=b"h"), auth("enable")])
    results = store.apply(2, [
        {"op": "put", "k": b"a", "v": b"v", "expire": True, "user": "ann"},
        {"op": "del", "k": b"a", "expire": True, "user": "ann"},
        {"op": "del", "k": b"a", "expire": True},
        auth("user_grant", name="ann", role=ROOT, expire=True)])
    assert [r.get("error") for r in results] == [
        "invalid_command", "permission_denied", "permission_denied", "permission_denied"]
    assert not store.auth.is_root("ann")


def _store_with_grants(*grants: tuple[str, bytes, str], key: bytes = b"") -> Store:
    """A store with auth on, one user per grant (name, prefix, permission) and
    ``key`` (if any) written before auth was enabled, with value ``kept``."""
    store = Store()
    commands = [auth("user_add", name=ROOT, hash=b"h")]
    if key:
        commands.append({"op": "put", "k": key, "v": b"kept"})
    for name, prefix, permission in grants:
        commands += [auth("user_add", name=name, hash=b"h"), auth("role_add", role=name),
                     auth("role_grant", role=name, prefix=prefix, perm=permission),
                     auth("user_grant", name=name, role=name)]
    store.apply(1, [*commands, auth("enable")])
    return store


# Fails if: AuthState reads an 'end' on a put or a get (a span ending before its key
# passes every check, so a put to any key goes through), or checks a range that ends
# at or before its key as empty.
def test_an_end_never_narrows_what_a_command_is_checked_for() -> None:
    store = _store_with_grants(("ann", b"a/", "readwrite"), key=b"secret")
    put = {"op": "put", "k": b"secret", "v": b"taken", "user": "ann"}
    results = store.apply(3, [
        {**put, "end": b"a"},
        {**put, "k": b"a/1", "end": 5},
        {"op": "del", "k": b"secret", "end": None, "user": "ann"},
        {"op": "txn", "compare": [], "failure": [], "user": "ann",
         "success": [{"op": "get", "k": b"secret", "end": b"a"}]},
    ])
    assert [r.get("error") for r in results] == ["invalid_command"] * 4
    assert "end" in results[0]["message"]
    ranged = store.apply(4, [
        {"op": "txn", "compare": [], "failure": [], "user": "ann",
         "success": [{"op": "range", "k": b"secret", "end": b"a"}]},
        {"op": "del", "k": b"secret", "end": b"a", "user": "ann"},
        {"op": "txn", "compare": [{"k": b"secret", "end": b"a", "target": "exists",
                                   "value": False}],
         "success": [], "failure": [], "user": "ann"},
        # A compare is checked over its range whatever else it carries.
        {"op": "txn", "compare": [{"k": b"a/", "end": b"", "target": "value", "cmp": "==",
                                   "value": b"kept", "op": "get"}],
         "success": [], "failure": [], "user": "ann"},
    ])
    assert [r.get("error") for r in ranged] == ["permission_denied"] * 4
    kept = store.get(b"secret")
    assert kept is not None and kept.value == b"kept"


# Fails if: a put or delete that asks for the previous keys (prev_kv) is checked for
# write access alone: a write-only user would read what it overwrites.
def test_a_write_answering_the_previous_keys_needs_read_access_too() -> None:
    store = _store_with_grants(("wo", b"w/", "write"), ("rw", b"w/", "readwrite"),
                               key=b"w/x")
    results = store.apply(3, [
        {"op": "put", "k": b"w/x", "v": b"1", "prev_kv": True, "user": "wo"},
        {"op": "del", "k": b"w/", "end": b"w0", "prev_kv": True, "user": "wo"},
        {"op": "txn", "compare": [], "failure": [], "user": "wo",
         "success": [{"op": "put", "k": b"w/x", "v": b"2", "prev_kv": True}]},
        {"op": "txn", "compare": [], "failure": [], "user": "wo",
         "success": [{"op": "del", "k": b"w/", "end": b"w0", "prev_kv": True}]},
        {"op": "put", "k": b"w/x", "v": b"3", "user": "wo"},
        {"op": "put", "k": b"w/x", "v": b"4", "prev_kv": True, "user": "rw"},
    ])
    assert [r.get("error") for r in results] == ["permission_denied"] * 4 + [None, None]
    assert results[5]["prev_kv"]["value"] == b"3"


# Fails if: a put may attach a key to a lease whose keys its user may not write (etcd's
# checkLeasePuts): anyone could pin a key to another user's lease, whose owner then
# could not revoke it.
def test_a_put_attaches_a_key_to_a_lease_only_if_its_user_may_write_the_leases_keys(
        ) -> None:
    store = _store_with_grants(("ann", b"a/", "readwrite"), ("bob", b"b/", "readwrite"))
    store.apply(2, [{"op": "lease_grant", "id": 7, "ttl": 60, "user": "ann"},
                    {"op": "put", "k": b"a/1", "v": b"v", "lease": 7, "user": "ann"}])
    results = store.apply(3, [
        {"op": "put", "k": b"b/1", "v": b"v", "lease": 7, "user": "bob"},
        {"op": "txn", "compare": [], "success": [], "user": "bob",
         "failure": [{"op": "put", "k": b"b/2", "v": b"v", "lease": 7}]},
        {"op": "lease_revoke", "id": 7, "user": "bob"},
    ])
    assert [r.get("error") for r in results] == ["permission_denied"] * 3
    assert store.lease_keys[7] == {b"a/1"}
    [revoked] = store.apply(4, [{"op": "lease_revoke", "id": 7, "user": "ann"}])
    assert revoked["ok"] and store.get(b"a/1") is None

"""
The shape of a store command, checked where commands enter and where they apply.

Commands come from the client API, from a follower's forward and from the
log. ``problem`` says what is wrong with one, or None; the store answers a
malformed command with an error result instead of raising half-way through an
entry (safety rule 14), and the entry points refuse one with a 400 before it
is ever proposed.
"""

from __future__ import annotations

from typing import Any

from kvd import errors
from kvd.auth.state import command_problem as auth_problem

#: Operations a client may send (directly or through a forward).
CLIENT_OPS = frozenset({"put", "del", "txn", "auth", "lease_grant", "lease_revoke",
                        "lease_keepalive"})
LEASE_OPS = frozenset({"lease_grant", "lease_revoke", "lease_keepalive"})
#: Operations only a leader itself appends (its marker, the voter set).
LEADER_OPS = frozenset({"noop", "config"})

TARGETS = frozenset({"value", "revision", "create_revision", "version", "exists", "lease"})
COMPARISONS = frozenset({"==", "!=", "<", ">"})
TXN_OPS = frozenset({"put", "del", "get", "range"})
MAX_INT = 2**63 - 1
#: Most commands one forward may carry (a client request holds one).
MAX_FORWARD_COMMANDS = 4096
#: A lease's TTL in seconds, as etcd bounds it.
MAX_LEASE_TTL = 9_000_000_000


def _one_of(value: Any, names: frozenset[str]) -> bool:
    """``value in names`` for any value (a list or a map is unhashable)."""
    return isinstance(value, str) and value in names


def _is_int(value: Any, low: int = 0, high: int = MAX_INT) -> bool:
    return type(value) is int and low <= value <= high


def _optional_int(command: dict[str, Any], name: str, low: int = 0) -> str | None:
    value = command.get(name)
    if value is not None and not _is_int(value, low):
        return f"'{name}' must be an integer of at least {low}"
    return None


def _key_problem(command: dict[str, Any]) -> str | None:
    key = command.get("k")
    if not isinstance(key, bytes) or not key:
        return "'k' must be non-empty bytes"
    return None


def _end_problem(command: dict[str, Any]) -> str | None:
    """A range's optional ``end`` (exclusive; empty: to the end of the key space)."""
    if "end" in command and not isinstance(command["end"], bytes):
        return "'end' must be bytes"
    return None


def _no_end(command: dict[str, Any]) -> str | None:
    """A put or a single-key get names one key: an ``end`` there would widen what
    an auth check looks at without widening what the store touches."""
    return f"a {command.get('op')} takes no 'end'" if "end" in command else None


def _put_problem(command: dict[str, Any]) -> str | None:
    """The fields of a put, on its own or in a txn."""
    if not isinstance(command.get("v"), bytes):
        return "'v' must be bytes"
    for flag in ("prev_kv", "keep_value", "keep_lease"):
        if flag in command and not isinstance(command[flag], bool):
            return f"'{flag}' must be a boolean"
    return _optional_int(command, "ttl", 1) or _optional_int(command, "lease", 1)


def _compare_problem(compare: Any) -> str | None:
    if not isinstance(compare, dict):
        return "a compare must be a map"
    problem = _key_problem(compare) or _end_problem(compare)
    if problem is not None:
        return problem
    target, expected = compare.get("target"), compare.get("value")
    if not _one_of(target, TARGETS):
        return "a compare's 'target' is unknown"
    if not _one_of(compare.get("cmp", "=="), COMPARISONS):
        return "a compare's 'cmp' is unknown"
    if target == "exists":
        ok = isinstance(expected, bool)
    elif target == "value":
        ok = isinstance(expected, bytes)
    else:
        ok = _is_int(expected)
    return None if ok else f"a {target} compare has a value of the wrong type"


def _txn_op_problem(op: Any) -> str | None:
    if not isinstance(op, dict) or not _one_of(op.get("op"), TXN_OPS):
        return "a txn op must be a map with 'op' put, del or get"
    problem = _key_problem(op)
    if problem is None and op["op"] in ("put", "get"):
        problem = _no_end(op)
    if problem is None and op["op"] == "put":
        problem = _put_problem(op)
    elif problem is None and op["op"] in ("del", "range"):
        problem = _end_problem(op) or _optional_int(op, "limit")
    return problem


def problem(command: Any) -> str | None:
    """What makes ``command`` unappliable, or None if the store can apply it."""
    if not isinstance(command, dict):
        return "a command must be a map"
    op = command.get("op")
    request_id = command.get("rid")
    if request_id is not None and not isinstance(request_id, str):
        return "'rid' must be a string"
    if command.get("user") is not None and not isinstance(command["user"], str):
        return "'user' must be a string"
    if "stamp" in command and not (command["stamp"] is None or _is_int(command["stamp"])):
        return "'stamp' must be an integer"
    if op == "noop":
        return None
    if op == "config":
        for name in ("voters", "joint"):
            voters = command.get(name)
            if name == "joint" and voters is None:
                continue
            if not isinstance(voters, list) or not voters or not all(
                    isinstance(v, list) and len(v) == 2 and all(isinstance(p, str) for p in v)
                    for v in voters):
                return f"'{name}' must be a non-empty list of [node id, incarnation]"
        return None
    if not isinstance(op, str):
        return "'op' must be a string"
    if op == "auth":
        return auth_problem(command)
    if op in LEASE_OPS:
        found = None if _is_int(command.get("id"), 1) else "'id' must be a positive integer"
        if found is None and op == "lease_grant" and not _is_int(command.get("ttl"), 1,
                                                                 MAX_LEASE_TTL):
            found = f"'ttl' must be an integer from 1 to {MAX_LEASE_TTL}"
        if found is None and "expire" in command and (
                not isinstance(command["expire"], bool) or op != "lease_revoke"):
            found = "'expire' must be a boolean, on a lease revoke only"
        if found is None and command.get("expire"):
            found = _optional_int(command, "renewals")
        return found
    if op in ("put", "del"):
        found = _key_problem(command) or _optional_int(command, "prev")
        if found is None and op == "put":
            found = _no_end(command) or _put_problem(command)
        if found is None and op == "del":
            found = _end_problem(command)
            if found is None and "prev_kv" in command and not isinstance(command["prev_kv"],
                                                                         bool):
                found = "'prev_kv' must be a boolean"
            if found is None and "end" in command and "prev" in command:
                found = "a range delete takes no 'prev'"
        if found is None and "expire" in command and (
                not isinstance(command["expire"], bool) or op != "del"):
            found = "'expire' must be a boolean, on a delete only"
        return found
    if op == "txn":
        for name in ("compare", "success", "failure"):
            if not isinstance(command.get(name), list):
                return f"'{name}' must be a list"
        for compare in command["compare"]:
            found = _compare_problem(compare)
            if found is not None:
                return found
        for op_ in (*command["success"], *command["failure"]):
            found = _txn_op_problem(op_)
            if found is not None:
                return found
        return None
    return f"unknown op {op!r}"


#: What a command's own fields and a txn op's cost beyond their bytes, packed.
_FIELD_OVERHEAD = 64


def command_bytes(command: dict[str, Any]) -> int:
    """About how many bytes ``command`` packs to (its keys and values count), so a
    batch of commands is bounded by its size, txns included."""
    total = _FIELD_OVERHEAD
    for item in (command, *(op for part in ("compare", "success", "failure")
                            for op in command.get(part) or ())):
        if isinstance(item, dict):
            total += _FIELD_OVERHEAD + sum(len(item[f]) for f in ("k", "v", "value", "hash",
                                                                  "prefix", "end")
                                           if isinstance(item.get(f), bytes))
    return total


def client_commands(value: Any) -> list[dict[str, Any]]:
    """``value`` as a list of client commands (a forward's), or BadRequest."""
    if not isinstance(value, list) or not value:
        raise errors.BadRequest("'commands' must be a non-empty list")
    if len(value) > MAX_FORWARD_COMMANDS:
        raise errors.TooLarge(f"a forward carries at most {MAX_FORWARD_COMMANDS} commands")
    for command in value:
        found = problem(command)
        if found is None and command["op"] not in CLIENT_OPS:
            found = f"op {command['op']!r} is not a client operation"
        if found is not None:
            raise errors.BadRequest(f"bad command: {found}")
    return value

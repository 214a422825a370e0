"""
The deterministic state machine every replica applies the committed log to.

It knows nothing of HTTP, ZooKeeper or files: ``apply`` takes one log entry's
commands and returns one result per command, identically on every node.
Values are kept as one ``bytes`` object per key (a packed header followed by
the value) so a million keys cost a few hundred bytes each, not a dict of
metadata objects each.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import msgpack
from sortedcontainers import SortedList

from kvd.auth.state import WRITE, AuthState
from kvd.commands import problem

# A packed value is a header (create_revision, mod_revision, version) and the
# value. The header's first byte says its layout: 11 bytes while revisions fit
# in 32 bits and versions in 16 (years of writes at etcd's rates), 21 after.
# The short one puts a key with a 100-byte value in pymalloc's 144-byte size
# class instead of the 160-byte one: 16 bytes a key (bench/standalone.py).
_SHORT_TAG, _LONG_TAG = 0, 1
_SHORT = struct.Struct("<BIIH")
_LONG = struct.Struct("<BQQI")
#: The header of store format 1 (snapshots and backups before the tag): 20 bytes.
_FORMAT1 = struct.Struct("<QQI")

Command = dict[str, Any]
Result = dict[str, Any]

#: How many request ids the store remembers for idempotent retries.
DEFAULT_REQUEST_WINDOW = 50_000
#: How many change events the store keeps for watches that resume.
DEFAULT_HISTORY = 10_000

PUT, DELETE = "put", "delete"

#: The request ids servers make (``uuid4().hex``); the window keeps them as 16 bytes.
_SERVER_REQUEST_ID = re.compile(r"[0-9a-f]{32}")

WindowKey = str | bytes
#: A remembered result: packed, or the revision of a plain ``{"ok": True, "revision": N}``.
WindowResult = bytes | int


def _window_key(request_id: str) -> WindowKey:
    """The window's key for a request id: a server-made id as its 16 bytes (a 64-byte
    object, not a 96-byte string), any other id as it is. Only a 32-digit lowercase
    hex id becomes bytes and a ``str`` never equals ``bytes``: no two ids share a key."""
    if len(request_id) == 32 and _SERVER_REQUEST_ID.fullmatch(request_id):
        return bytes.fromhex(request_id)
    return request_id


def _window_result(result: Result) -> WindowResult:
    """A result as the window keeps it: most are a plain success, kept as its revision."""
    if len(result) == 2 and result.get("ok") is True and type(result.get("revision")) is int:
        return result["revision"]
    return msgpack.packb(result, use_bin_type=True)


def _unwindow_result(kept: WindowResult) -> Result:
    if isinstance(kept, int):
        return {"ok": True, "revision": kept}
    return _unpack_result(kept)


def text_fields(name: str, data: bytes) -> dict[str, str]:
    """``{name: text}`` for UTF-8 bytes, else ``{name + "_b64": base64}``: the native
    JSON API shows any bytes without guessing an encoding."""
    try:
        return {name: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_b64": base64.b64encode(data).decode("ascii")}


class Event(NamedTuple):
    """One change to one key, as a watcher sees it."""

    revision: int
    type: str
    key: bytes
    value: bytes
    create_revision: int
    version: int
    #: The lease the key is attached to after a put.
    lease: int = 0
    #: The key before this change, packed as the store holds it (None: it was
    #: absent), and its lease then: what a watch with ``prev_kv`` answers.
    previous: bytes | None = None
    previous_lease: int = 0

    def previous_record(self) -> dict[str, Any] | None:
        """The key before this change as ``Store.record`` gives it, or None."""
        if self.previous is None:
            return None
        kv = _unpack(self.key, self.previous)
        return {"key": kv.key, "value": kv.value, "create_revision": kv.create_revision,
                "mod_revision": kv.mod_revision, "version": kv.version,
                "lease": self.previous_lease}

    def as_json(self) -> dict[str, Any]:
        event: dict[str, Any] = {"type": self.type, **text_fields("key", self.key),
                                 "revision": self.revision}
        if self.type == PUT:
            event.update(text_fields("value", self.value),
                         create_revision=self.create_revision, version=self.version)
        return event


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as a client sees it."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int

    def as_json(self) -> dict[str, Any]:
        return {
            **text_fields("key", self.key),
            **text_fields("value", self.value),
            "revision": self.mod_revision,
            "create_revision": self.create_revision,
            "version": self.version,
        }


def kv_json(record: dict[str, Any]) -> dict[str, Any]:
    """A ``kv_record`` (a txn result's) as the native API shows a key."""
    return KeyValue(record["key"], record["value"], record["create_revision"],
                    record["mod_revision"], record["version"]).as_json()


def _pack(create: int, mod: int, version: int, value: bytes) -> bytes:
    # Both revisions checked: a format 1 value from a peer may break create <= mod.
    if create <= 0xFFFF_FFFF and mod <= 0xFFFF_FFFF and version <= 0xFFFF:
        return _SHORT.pack(_SHORT_TAG, create, mod, version) + value
    return _LONG.pack(_LONG_TAG, create, mod, version) + value


def _header(packed: bytes) -> tuple[int, int, int, int]:
    """``(create_revision, mod_revision, version, header size)`` of a packed value."""
    if packed[0] == _SHORT_TAG:
        _, create, mod, version = _SHORT.unpack_from(packed)
        return create, mod, version, _SHORT.size
    _, create, mod, version = _LONG.unpack_from(packed)
    return create, mod, version, _LONG.size


def _well_packed(packed: Any) -> bool:
    """Whether ``packed`` is bytes that ``_header`` reads (a peer's snapshot)."""
    if not isinstance(packed, bytes) or not packed:
        return False
    size = {_SHORT_TAG: _SHORT.size, _LONG_TAG: _LONG.size}.get(packed[0])
    return size is not None and len(packed) >= size


def _from_format1(packed: bytes) -> bytes:
    """A value packed by store format 1, packed as this one packs it."""
    create, mod, version = _FORMAT1.unpack_from(packed)
    return _pack(create, mod, version, packed[_FORMAT1.size :])


def _unpack(key: bytes, packed: bytes) -> KeyValue:
    create, mod, version, size = _header(packed)
    return KeyValue(key, packed[size:], create, mod, version)


def _unpack_result(packed: bytes) -> Result:
    return msgpack.unpackb(packed, raw=False, strict_map_key=False)


def put_command(
    key: bytes, value: bytes, request_id: str, prev_revision: int | None = None,
    ttl: int | None = None,
) -> Command:
    """A put, or a compare-and-set when ``prev_revision`` is given (0: must not exist)."""
    command: Command = {"op": "put", "k": key, "v": value, "rid": request_id}
    if prev_revision is not None:
        command["prev"] = prev_revision
    if ttl is not None:
        command["ttl"] = ttl
    return command


def lease_grant_command(lease_id: int, ttl: int, request_id: str) -> Command:
    """A new lease of ``ttl`` seconds; the id is chosen before it is proposed."""
    return {"op": "lease_grant", "id": lease_id, "ttl": ttl, "rid": request_id}


def lease_revoke_command(lease_id: int, request_id: str) -> Command:
    """Revoke a lease: every key attached to it is deleted at one revision."""
    return {"op": "lease_revoke", "id": lease_id, "rid": request_id}


def lease_expire_command(lease_id: int, renewals: int) -> Command:
    """The leader's lease expiry (rule 12): revoke only if not renewed since."""
    return {"op": "lease_revoke", "id": lease_id, "expire": True, "renewals": renewals}


def lease_keepalive_command(lease_id: int) -> Command:
    """Renew a lease: its timer restarts for its full TTL when this applies."""
    return {"op": "lease_keepalive", "id": lease_id}


def expire_command(key: bytes, mod_revision: int) -> Command:
    """The leader's replicated TTL expiry: delete only if unchanged since (rule 12)."""
    return {"op": "del", "k": key, "prev": mod_revision, "expire": True}


def txn_command(compare: list[dict[str, Any]], success: list[dict[str, Any]],
                failure: list[dict[str, Any]], request_id: str) -> Command:
    """Compare, then ``success`` or ``failure`` ops, applied atomically at one revision."""
    return {"op": "txn", "compare": compare, "success": success, "failure": failure,
            "rid": request_id}


def delete_command(key: bytes, request_id: str, prev_revision: int | None = None) -> Command:
    command: Command = {"op": "del", "k": key, "rid": request_id}
    if prev_revision is not None:
        command["prev"] = prev_revision
    return command


def noop_command() -> Command:
    """The marker a new leader commits at the start of its epoch."""
    return {"op": "noop"}


class Store:
    """Keys, revisions and the idempotency window, changed only by ``apply``."""

    def __init__(self, request_window: int = DEFAULT_REQUEST_WINDOW,
                 history: int = DEFAULT_HISTORY) -> None:
        # A plain dict (cheap to copy for a snapshot) and the keys in order.
        self._data: dict[bytes, bytes] = {}
        self._keys: SortedList = SortedList()
        # Results are kept packed (a dict per remembered request costs 5x more), in
        # a plain dict with a deque for their order: 111 bytes a request less than
        # an OrderedDict of string ids and packed results.
        self._requests: dict[WindowKey, WindowResult] = {}
        self._request_order: deque[WindowKey] = deque()
        self._request_window = request_window
        #: TTL in seconds of the keys that have one.
        self.ttls: dict[bytes, int] = {}
        #: Granted TTL in seconds of each lease, and the keys attached to each.
        self.leases: dict[int, int] = {}
        self.lease_keys: dict[int, set[bytes]] = {}
        #: Keep-alives applied per lease: an expiry decided before one is void.
        self.lease_renewals: dict[int, int] = {}
        self._key_lease: dict[bytes, int] = {}
        self.events: deque[Event] = deque()
        self.history_limit = history
        #: Watches can resume from any revision above this one.
        self.history_start = 0
        self.listeners: list[Callable[[Event], None]] = []
        #: The store revision: bumped by every change to a key.
        self.revision = 0
        #: The last log index applied.
        self.applied_index = 0
        self.value_bytes = 0
        #: Users, roles and the enabled flag, outside the key space.
        self.auth = AuthState()

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: bytes) -> KeyValue | None:
        packed = self._data.get(key)
        return None if packed is None else _unpack(key, packed)

    def count(self, start: bytes = b"", end: bytes | None = None) -> int:
        """How many keys lie in ``[start, end)``."""
        low = self._keys.bisect_left(start)
        high = len(self._keys) if end is None else self._keys.bisect_left(end)
        return max(0, high - low)

    def lease_of(self, key: bytes) -> int:
        """The lease ``key`` is attached to (0: none)."""
        return self._key_lease.get(key, 0)

    def record(self, kv: KeyValue) -> dict[str, Any]:
        """``kv`` with its lease as plain fields, as results carry it (bytes kept)."""
        return {"key": kv.key, "value": kv.value, "create_revision": kv.create_revision,
                "mod_revision": kv.mod_revision, "version": kv.version,
                "lease": self._key_lease.get(kv.key, 0)}

    def events_since(self, revision: int) -> list[Event]:
        """Retained events at or after ``revision``; see ``history_start``."""
        return [e for e in self.events if e.revision >= revision]

    def range(
        self, start: bytes = b"", end: bytes | None = None, limit: int | None = None
    ) -> Iterator[KeyValue]:
        """Keys in ``[start, end)`` in key order."""
        keys = self._keys.irange(start, end, inclusive=(True, False))
        for n, key in enumerate(keys):
            if limit is not None and n >= limit:
                return
            yield _unpack(key, self._data[key])

    def result_for(self, request_id: str) -> Result | None:
        """The result a request id already got, for idempotent retries."""
        kept = self._requests.get(_window_key(request_id))
        return None if kept is None else _unwindow_result(kept)

    def apply(self, index: int, commands: Sequence[Command]) -> list[Result]:
        """Apply the commands of log entry ``index``; return one result each.

        Total (safety rule 14): a command that cannot be applied yields an
        ``invalid_command`` result, identically on every replica, and the
        entry still counts as applied; nothing raises half-way through it.
        """
        if index <= self.applied_index:
            raise ValueError(f"entry {index} applied twice (applied {self.applied_index})")
        if not isinstance(commands, list):
            commands = []
        results = [self._apply_one(command) for command in commands]
        self.applied_index = index
        return results

    def _apply_one(self, command: Command) -> Result:
        malformed = problem(command)
        if malformed is not None:
            return {"ok": False, "error": "invalid_command", "message": malformed}
        # From here on nothing can raise: ``problem`` checked every field used.
        request_id = command.get("rid")
        window_key = None if request_id is None else _window_key(request_id)
        if window_key is not None:
            earlier = self._requests.get(window_key)
            if earlier is not None:
                return _unwindow_result(earlier)
        op = command["op"]
        if not self.auth.allows(command) or not self._lease_permitted(command):
            result: Result = {"ok": False, "error": "permission_denied",
                              "revision": self.revision}
        elif op == "put":
            result = self._put(command)
        elif op == "del":
            result = self._delete(command)
        elif op == "txn":
            result = self._txn(command)
        elif op == "auth":
            result = self.auth.apply(command)
        elif op == "lease_grant":
            result = self._lease_grant(command)
        elif op == "lease_revoke":
            result = self._lease_revoke(command)
        elif op == "lease_keepalive":
            result = self._lease_keepalive(command)
        else:
            result = {"ok": True}  # noop, config: nothing to change in the keys
        if window_key is not None:
            self._remember(window_key, result)
        return result

    def _check_prev(self, key: bytes, command: Command) -> Result | None:
        expected = command.get("prev")
        if expected is None:
            return None
        packed = self._data.get(key)
        current = 0 if packed is None else _header(packed)[1]
        if current != expected:
            return {"ok": False, "error": "conflict", "revision": self.revision,
                    "current_revision": current}
        return None

    def _write(self, key: bytes, value: bytes, revision: int, ttl: int | None,
               lease: int = 0) -> None:
        packed = self._data.get(key)
        if packed is None:
            create, version = revision, 1
            self._keys.add(key)
        else:
            create, _, version, size = _header(packed)
            version += 1
            self.value_bytes -= len(packed) - size
        self._data[key] = _pack(create, revision, version, value)
        self.value_bytes += len(value)
        if ttl:
            self.ttls[key] = ttl
        else:
            self.ttls.pop(key, None)
        previous_lease = self._key_lease.get(key, 0)
        self._attach(key, lease)
        self._record(Event(revision, PUT, key, value, create, version, lease, packed,
                           previous_lease))

    def _attach(self, key: bytes, lease: int) -> None:
        old = self._key_lease.get(key, 0)
        if old == lease:
            return
        if old:
            self.lease_keys[old].discard(key)
            del self._key_lease[key]
        if lease:
            self.lease_keys[lease].add(key)
            self._key_lease[key] = lease

    def _remove(self, key: bytes, revision: int) -> bool:
        packed = self._data.pop(key, None)
        if packed is None:
            return False
        self._keys.remove(key)
        self.value_bytes -= len(packed) - _header(packed)[3]
        self.ttls.pop(key, None)
        previous_lease = self._key_lease.get(key, 0)
        self._attach(key, 0)
        self._record(Event(revision, DELETE, key, b"", 0, 0, 0, packed, previous_lease))
        return True

    def _record(self, event: Event) -> None:
        self.events.append(event)
        while len(self.events) > self.history_limit:
            self.history_start = self.events.popleft().revision
        for listener in list(self.listeners):
            listener(event)

    def _put_problem(self, op: Command) -> Result | None:
        """Why the put ``op`` cannot apply (an unknown lease, nothing to keep), or None."""
        lease = op.get("lease")
        if lease and not op.get("keep_lease") and lease not in self.leases:
            return {"ok": False, "error": "lease_not_found", "revision": self.revision}
        if (op.get("keep_value") or op.get("keep_lease")) and op["k"] not in self._data:
            return {"ok": False, "error": "not_found", "revision": self.revision}
        return None

    def _put_one(self, op: Command, revision: int) -> Result:
        """Write one checked put at ``revision``: its result, with the previous key."""
        key: bytes = op["k"]
        packed = self._data.get(key)
        previous = None if packed is None else self.record(_unpack(key, packed))
        value = previous["value"] if op.get("keep_value") and previous else op["v"]
        lease = self._key_lease.get(key, 0) if op.get("keep_lease") else op.get("lease", 0)
        self._write(key, value, revision, op.get("ttl"), lease)
        result: Result = {"ok": True, "revision": revision}
        if op.get("prev_kv") and previous is not None:
            result["prev_kv"] = previous
        return result

    def _put(self, command: Command) -> Result:
        key: bytes = command["k"]
        failed = self._check_prev(key, command) or self._put_problem(command)
        if failed is not None:
            return failed
        self.revision += 1
        return self._put_one(command, self.revision)

    def _delete_range(self, start: bytes, end: bytes, revision: int,
                      prev_kv: bool) -> tuple[int, list[dict[str, Any]]]:
        """Delete ``[start, end)`` (``end`` empty: to the end) at ``revision``."""
        keys = list(self._keys.irange(start, end or None, inclusive=(True, False)))
        previous = [self.record(_unpack(k, self._data[k])) for k in keys] if prev_kv else []
        for key in keys:
            self._remove(key, revision)
        return len(keys), previous

    def _delete(self, command: Command) -> Result:
        key: bytes = command["k"]
        if "end" in command:
            end: bytes = command["end"]
            if self.count(key, end or None) == 0:
                return {"ok": True, "revision": self.revision, "deleted": 0}
            self.revision += 1
            deleted, previous = self._delete_range(key, end, self.revision,
                                                   bool(command.get("prev_kv")))
            result: Result = {"ok": True, "revision": self.revision, "deleted": deleted}
            if previous:
                result["prev_kvs"] = previous
            return result
        failed = self._check_prev(key, command)
        if failed is not None:
            return failed
        if key not in self._data:
            return {"ok": False, "error": "not_found", "revision": self.revision}
        self.revision += 1
        self._remove(key, self.revision)
        return {"ok": True, "revision": self.revision}

    def _txn(self, command: Command) -> Result:
        succeeded = all(self._compare(c) for c in command["compare"])
        ops = command["success"] if succeeded else command["failure"]
        for op in ops:
            if op["op"] == "put":
                failed = self._put_problem(op)
                if failed is not None:
                    return failed  # checked before anything changed: all or nothing
        writes = any(op["op"] in ("put", "del") for op in ops)
        revision = self.revision + 1 if writes else self.revision
        results: list[dict[str, Any]] = []
        changed = False
        for op in ops:
            key = op["k"]
            if op["op"] == "put":
                put = self._put_one(op, revision)
                item: dict[str, Any] = {"op": "put", "revision": revision}
                if "prev_kv" in put:
                    item["prev_kv"] = put["prev_kv"]
                results.append(item)
                changed = True
            elif op["op"] == "del" and "end" in op:
                deleted, previous = self._delete_range(key, op["end"], revision,
                                                       bool(op.get("prev_kv")))
                changed = changed or deleted > 0
                item = {"op": "del", "deleted": deleted}
                if previous:
                    item["prev_kvs"] = previous
                results.append(item)
            elif op["op"] == "del":
                deleted_one = self._remove(key, revision)
                changed = changed or deleted_one
                results.append({"op": "del", "deleted": int(deleted_one)})
            elif op["op"] == "range":
                end = op.get("end")
                limit = op.get("limit") or None
                kvs = [self.record(kv) for kv in self.range(key, end or None, limit)] \
                    if end is not None else ([] if (kv := self.get(key)) is None
                                             else [self.record(kv)])
                count = len(kvs) if end is None else self.count(key, end or None)
                results.append({"op": "range", "kvs": kvs, "count": count,
                                "more": count > len(kvs)})
            else:
                kv = self.get(key)
                results.append({"op": "get", "kv": None if kv is None else self.record(kv)})
        if changed:
            self.revision = revision
        return {"ok": True, "succeeded": succeeded, "revision": self.revision,
                "results": results}

    def _compare(self, compare: dict[str, Any]) -> bool:
        end = compare.get("end")
        if end is None:
            return self._compare_one(compare, self.get(compare["k"]))
        kvs = list(self.range(compare["k"], end or None))
        if not kvs:
            # etcd: an empty range matches as a missing key would, a value never.
            return compare["target"] != "value" and self._compare_one(compare, None)
        return all(self._compare_one(compare, kv) for kv in kvs)

    def _compare_one(self, compare: dict[str, Any], kv: KeyValue | None) -> bool:
        target = compare["target"]
        if target == "exists":
            actual: Any = kv is not None
        elif target == "value":
            actual = None if kv is None else kv.value
        elif target == "revision":
            actual = 0 if kv is None else kv.mod_revision
        elif target == "create_revision":
            actual = 0 if kv is None else kv.create_revision
        elif target == "lease":
            actual = 0 if kv is None else self._key_lease.get(kv.key, 0)
        else:
            actual = 0 if kv is None else kv.version
        expected = compare["value"]
        op = compare.get("cmp", "==")
        if op == "==":
            return bool(actual == expected)
        if op == "!=":
            return bool(actual != expected)
        if actual is None or isinstance(actual, bool) != isinstance(expected, bool):
            return False
        if op == "<":
            return bool(actual < expected)
        return bool(actual > expected)

    # Leases

    def _lease_grant(self, command: Command) -> Result:
        lease_id, ttl = command["id"], command["ttl"]
        if lease_id in self.leases:
            return {"ok": False, "error": "lease_exists", "revision": self.revision}
        self.leases[lease_id] = ttl
        self.lease_keys[lease_id] = set()
        self.lease_renewals[lease_id] = 0
        return {"ok": True, "id": lease_id, "ttl": ttl, "revision": self.revision}

    def _lease_permitted(self, command: Command) -> bool:
        """What ``auth.allows`` cannot see, as it has no leases: a revoke deletes
        the lease's keys, so its user must be allowed to write each; a put that
        attaches a key to a lease must be allowed to write the keys the lease
        holds already (etcd's checkLeasePuts), or anyone could pin keys to
        another user's lease that its owner then could not revoke. The
        leader's expiry, which has no user, passed ``allows``."""
        user = command.get("user")
        if not self.auth.enabled or user is None:
            return True
        op = command["op"]
        if op == "lease_revoke":
            leases = [command["id"]]
        elif op == "put":
            leases = [command.get("lease")]
        elif op == "txn":
            leases = [item.get("lease") for item in (*command["success"],
                                                      *command["failure"])
                      if item["op"] == "put"]
        else:
            return True
        return all(self.auth.permits_key(user, WRITE, key)
                   for lease in leases if lease
                   for key in self.lease_keys.get(lease, ()))

    def _lease_revoke(self, command: Command) -> Result:
        lease_id = command["id"]
        if lease_id not in self.leases:
            return {"ok": False, "error": "lease_not_found", "revision": self.revision}
        if command.get("expire") and command.get("renewals") != self.lease_renewals[lease_id]:
            return {"ok": False, "error": "renewed", "revision": self.revision}
        keys = sorted(self.lease_keys[lease_id])
        if keys:
            self.revision += 1
            for key in keys:  # each delete detaches its key (a watcher sees the lease it had)
                self._remove(key, self.revision)
        del self.leases[lease_id], self.lease_renewals[lease_id], self.lease_keys[lease_id]
        return {"ok": True, "revision": self.revision, "deleted": len(keys)}

    def _lease_keepalive(self, command: Command) -> Result:
        lease_id = command["id"]
        if lease_id not in self.leases:
            return {"ok": False, "error": "lease_not_found", "revision": self.revision}
        self.lease_renewals[lease_id] += 1
        return {"ok": True, "id": lease_id, "ttl": self.leases[lease_id],
                "revision": self.revision}

    def _remember(self, key: WindowKey, result: Result) -> None:
        self._requests[key] = _window_result(result)
        self._request_order.append(key)
        while len(self._requests) > self._request_window:
            self._requests.pop(self._request_order.popleft(), None)

    def snapshot_state(self) -> dict[str, Any]:
        """A consistent copy to serialise off the reactor thread.

        Values are immutable ``bytes``, so shallow copies are enough. The keys
        are under ``kv`` (store format 2, tagged headers), not format 1's
        ``data``: a node that knows only format 1 refuses such a snapshot from a
        peer as malformed instead of misreading every header.
        """
        return {
            "revision": self.revision,
            "applied_index": self.applied_index,
            "kv": self._data.copy(),
            "requests": list(self._requests.items()),
            "ttls": dict(self.ttls),
            "auth": self.auth.snapshot(),
            "leases": {lease: [ttl, self.lease_renewals[lease]]
                       for lease, ttl in self.leases.items()},
            "key_leases": dict(self._key_lease),
        }

    @classmethod
    def from_snapshot(
        cls, state: dict[str, Any], request_window: int = DEFAULT_REQUEST_WINDOW,
        history: int = DEFAULT_HISTORY, check: bool = False,
    ) -> Store:
        """The store a snapshot holds; ``check`` first verifies every field's type
        (a snapshot from a peer), raising ValueError."""
        if check:
            _check_snapshot_state(state)
        store = cls(request_window, history)
        store.revision = state["revision"]
        store.history_start = state["revision"]
        store.ttls = dict(state.get("ttls", {}))
        store.applied_index = state["applied_index"]
        if "kv" in state:
            store._data = dict(state["kv"])
        else:  # format 1: a snapshot or backup written before format 2
            store._data = {k: _from_format1(v) for k, v in state["data"].items()}
        store._keys = SortedList(store._data)
        # Snapshots before the compact window hold every id as a string.
        store._requests = {_window_key(rid) if isinstance(rid, str) else rid: res
                           for rid, res in state["requests"]}
        store._request_order = deque(store._requests)
        store.value_bytes = sum(len(v) - _header(v)[3] for v in store._data.values())
        store.auth = AuthState.from_snapshot(state.get("auth"))
        leases = state.get("leases", {})
        store.leases = {lease: ttl for lease, (ttl, _) in leases.items()}
        store.lease_renewals = {lease: renewals for lease, (_, renewals) in leases.items()}
        store.lease_keys = {lease: set() for lease in store.leases}
        for key, lease in state.get("key_leases", {}).items():
            store._key_lease[key] = lease
            store.lease_keys[lease].add(key)
        return store

    def digest(self) -> str:
        """A digest of the keys and their metadata, to compare replicas."""
        h = hashlib.sha256(str(self.revision).encode())
        for key in self._keys:
            packed = self._data[key]
            h.update(struct.pack("<I", len(key)) + key + struct.pack("<I", len(packed)) + packed)
        if self.auth.revision:
            h.update(msgpack.packb(self.auth.snapshot(), use_bin_type=True))
        if self.leases:
            h.update(msgpack.packb([sorted(self.leases.items()),
                                    sorted(self.lease_renewals.items()),
                                    sorted(self._key_lease.items())], use_bin_type=True))
        return h.hexdigest()


def _well_windowed(key: Any, result: Any) -> bool:
    """Is this a request window entry as ``snapshot_state`` gives it?"""
    return ((isinstance(key, str) or (isinstance(key, bytes) and len(key) == 16))
            and (isinstance(result, bytes) or (type(result) is int and result >= 0)))


def _check_snapshot_state(state: Any) -> None:
    """Raise ValueError unless ``state`` has the shape ``snapshot_state`` gives."""
    if not isinstance(state, dict):
        raise ValueError("the store is not a map")
    for name in ("revision", "applied_index"):
        if type(state.get(name)) is not int or state[name] < 0:
            raise ValueError(f"'{name}' is not a non-negative integer")
    if ("kv" in state) == ("data" in state):
        raise ValueError("the store needs one of 'kv' and 'data' (format 1)")
    if "kv" in state:
        data = state["kv"]
        if not isinstance(data, dict) or not all(
                isinstance(k, bytes) and _well_packed(v) for k, v in data.items()):
            raise ValueError("'kv' is not a map of keys to packed values")
    else:
        data = state["data"]
        if not isinstance(data, dict) or not all(
                isinstance(k, bytes) and isinstance(v, bytes) and len(v) >= _FORMAT1.size
                for k, v in data.items()):
            raise ValueError("'data' is not a map of keys to packed values")
    requests = state.get("requests")
    if not isinstance(requests, list) or not all(
            isinstance(r, list) and len(r) == 2 and _well_windowed(r[0], r[1])
            for r in requests):
        raise ValueError("'requests' is not a list of [request id, packed result]")
    ttls = state.get("ttls", {})
    if not isinstance(ttls, dict) or not all(
            isinstance(k, bytes) and type(v) is int and v > 0 for k, v in ttls.items()):
        raise ValueError("'ttls' is not a map of keys to seconds")
    leases = state.get("leases", {})
    if not isinstance(leases, dict) or not all(
            type(k) is int and k > 0 and isinstance(v, list) and len(v) == 2
            and type(v[0]) is int and v[0] > 0 and type(v[1]) is int and v[1] >= 0
            for k, v in leases.items()):
        raise ValueError("'leases' is not a map of lease ids to [seconds, renewals]")
    key_leases = state.get("key_leases", {})
    if not isinstance(key_leases, dict) or not all(
            isinstance(k, bytes) and k in data and v in leases for k, v in key_leases.items()):
        raise ValueError("'key_leases' is not a map of keys to granted leases")

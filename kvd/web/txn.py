"""
Parsing of ``POST /api/v1/txn`` bodies into a store ``txn`` command, and back.

A transaction is etcd's: compares on keys' value, revision, create revision,
version or existence; then the ``success`` ops if all hold, else ``failure``
ops (put, delete, get), applied atomically at one revision.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kvd import errors
from kvd.store import kv_json
from kvd.web.values import integer

TARGETS = ("value", "revision", "create_revision", "version", "exists")
COMPARISONS = ("==", "!=", "<", ">")
MAX_OPS = 128


def parse_txn(body: Any, key: Callable[[Any], bytes], value: Callable[[Any], bytes],
              ttl: Callable[[Any], int | None]) -> tuple[list[dict[str, Any]], ...]:
    """Validate a txn body; returns (compare, success, failure) in store form."""
    if not isinstance(body, dict):
        raise errors.BadRequest('body must be an object {"compare", "success", "failure"}')
    unknown = set(body) - {"compare", "success", "failure"}
    if unknown:
        raise errors.BadRequest(f"unknown fields: {', '.join(sorted(unknown))}")
    compare = [_compare(c, key, value) for c in _list(body, "compare")]
    success = [_op(o, key, value, ttl) for o in _list(body, "success")]
    failure = [_op(o, key, value, ttl) for o in _list(body, "failure")]
    if len(compare) + len(success) + len(failure) > MAX_OPS:
        raise errors.TooLarge(f"a transaction holds at most {MAX_OPS} compares and ops")
    return compare, success, failure


def _list(body: dict[str, Any], name: str) -> list[Any]:
    items = body.get(name, [])
    if not isinstance(items, list):
        raise errors.BadRequest(f"'{name}' must be a list")
    return items


def _compare(item: Any, key: Callable[[Any], bytes],
             value: Callable[[Any], bytes]) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise errors.BadRequest("each compare must be an object")
    target = item.get("target")
    if target not in TARGETS:
        raise errors.BadRequest(f"compare 'target' must be one of {', '.join(TARGETS)}")
    cmp = item.get("cmp", "==")
    if cmp not in COMPARISONS:
        raise errors.BadRequest(f"compare 'cmp' must be one of {' '.join(COMPARISONS)}")
    expected = item.get("value")
    if target == "exists":
        if not isinstance(expected, bool) or cmp not in ("==", "!="):
            raise errors.BadRequest("an 'exists' compare takes == or != and true or false")
    elif target == "value":
        expected = value(expected)
    else:
        expected = integer(expected, f"{target} compare value")
    return {"k": key(item.get("key")), "target": target, "cmp": cmp, "value": expected}


def _op(item: Any, key: Callable[[Any], bytes], value: Callable[[Any], bytes],
        ttl: Callable[[Any], int | None]) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise errors.BadRequest("each op must be an object")
    kind = item.get("op")
    if kind == "put":
        op: dict[str, Any] = {"op": "put", "k": key(item.get("key")),
                              "v": value(item.get("value"))}
        seconds = ttl(item.get("ttl"))
        if seconds is not None:
            op["ttl"] = seconds
        return op
    if kind == "delete":
        return {"op": "del", "k": key(item.get("key"))}
    if kind == "get":
        return {"op": "get", "k": key(item.get("key"))}
    raise errors.BadRequest("op 'op' must be put, delete or get")


def render_result(result: dict[str, Any]) -> dict[str, Any]:
    """The store's txn result as the API answers it."""
    results = []
    for item in result["results"]:
        if item["op"] == "put":
            results.append({"op": "put", "revision": item["revision"]})
        elif item["op"] == "del":
            results.append({"op": "delete", "deleted": item["deleted"]})
        else:
            kv = item["kv"]
            # A result remembered before results carried bytes is JSON already.
            if kv is not None and isinstance(kv.get("key"), bytes):
                kv = kv_json(kv)
            results.append({"op": "get", "kv": kv})
    return {"succeeded": result["succeeded"], "revision": result["revision"],
            "results": results}

"""
etcd's v3 JSON gateway (``/v3/*``, ``/v3beta/*``, ``GET /version``) over a node.

Programs written for etcd's grpc-gateway (etcd3gw, OpenStack's tooz) talk to
kvd unchanged: the same paths, base64 keys and values, int64 fields as
strings, zero values left out, ``{"error","message","code"}`` errors with
etcd's status codes. Every request becomes the store commands and reads the
native API uses (``kvd/web/public.py``), with its checks and its auth.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import re
import secrets
import uuid
from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed as RouteMethodNotAllowed
from werkzeug.exceptions import NotFound as RouteNotFound

from kvd import errors
from kvd.auth.state import READ, WRITE
from kvd.commands import MAX_LEASE_TTL, problem
from kvd.node import Node
from kvd.store import (
    DELETE,
    PUT,
    Command,
    Event,
    KeyValue,
    Result,
    Store,
    lease_grant_command,
    lease_keepalive_command,
    lease_revoke_command,
    txn_command,
)
from kvd.web.hotroutes import HotRouteResource
from kvd.web.public import ClientAPI

log = Logger()

#: The gateway's API level, as ``GET /version`` tells clients that pick paths by it.
ETCD_VERSION = "3.4.0"
#: etcd raises a shorter lease TTL to its minimum (1.5 election timeouts, rounded up).
MIN_LEASE_TTL = 2
MAX_TXN_OPS = 128

# gRPC status codes, as etcd's errors carry them.
INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, FAILED_PRECONDITION = 3, 5, 7, 9
OUT_OF_RANGE, UNIMPLEMENTED, UNAVAILABLE, UNAUTHENTICATED = 11, 12, 14, 16
RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED = 8, 4

#: A kvd error's HTTP status -> the gRPC code etcd's gateway would send with it.
_CODES = {400: INVALID_ARGUMENT, 401: UNAUTHENTICATED, 403: PERMISSION_DENIED,
          404: NOT_FOUND, 409: FAILED_PRECONDITION, 413: RESOURCE_EXHAUSTED,
          429: RESOURCE_EXHAUSTED, 503: UNAVAILABLE, 504: DEADLINE_EXCEEDED}

SORT_ORDERS = ("NONE", "ASCEND", "DESCEND")
SORT_TARGETS = ("KEY", "VERSION", "CREATE", "MOD", "VALUE")
COMPARE_TARGETS = ("VERSION", "CREATE", "MOD", "VALUE", "LEASE")
COMPARE_RESULTS = ("EQUAL", "GREATER", "LESS", "NOT_EQUAL")
#: etcd's compare target -> (the store's target, the request field holding the value).
_TARGETS = {"VERSION": ("version", "version"), "CREATE": ("create_revision", "create_revision"),
            "MOD": ("revision", "mod_revision"), "VALUE": ("value", "value"),
            "LEASE": ("lease", "lease")}
_RESULTS = {"EQUAL": "==", "GREATER": ">", "LESS": "<", "NOT_EQUAL": "!="}


class EtcdError(Exception):
    """An error as etcd's gateway answers it."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


#: An int64 in a string as etcd's gateway reads it: ASCII digits, no leading zero,
#: JSON whitespace around.
_INT64_TEXT = re.compile(r"[ \t\r\n]*-?(0|[1-9][0-9]{0,18})[ \t\r\n]*")


def _bad(message: str) -> EtcdError:
    return EtcdError(400, INVALID_ARGUMENT, message)


LEASE_NOT_FOUND = "etcdserver: requested lease not found"
REQUEST_TOO_LARGE = "etcdserver: request is too large"


@functools.lru_cache(maxsize=64)
def uint64_id(name: str) -> int:
    """A stable 64-bit id for a name (etcd's member and cluster ids are numbers)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")


def _pruned(obj: Any) -> Any:
    """``obj`` without the zero values protobuf's JSON leaves out (0, "0", "",
    false, [], {}, None), recursively; lists keep their items. An int64 is a
    string here already, so "0" is a zero too (no base64 text is "0")."""
    if isinstance(obj, dict):
        out = {}
        for name, value in obj.items():
            value = _pruned(value)
            if value not in (None, 0, "0", "", False, [], {}) or value is True:
                out[name] = value
        return out
    if isinstance(obj, list):
        return [_pruned(item) for item in obj]
    return obj


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _kv(record: dict[str, Any], keys_only: bool = False) -> dict[str, Any]:
    """One key as etcd's ``mvccpb.KeyValue`` in JSON, from a store record
    (``Store.record``, or a result's ``prev_kv``)."""
    kv = {"key": _b64(record["key"]), "create_revision": str(record["create_revision"]),
          "mod_revision": str(record["mod_revision"]), "version": str(record["version"]),
          "lease": str(record.get("lease") or 0)}
    if not keys_only:
        kv["value"] = _b64(record["value"])
    return kv


class Body:
    """A request's JSON object, read field by field the way protobuf's JSON does:
    int64 as a number or a string, enums as a name or a number, bytes as base64."""

    def __init__(self, fields: Any, where: str = "") -> None:
        if not isinstance(fields, dict):
            raise _bad(f"{where or 'the body'} must be a JSON object")
        self.fields = fields

    def bytes(self, name: str) -> bytes:
        value = self.fields.get(name)
        if value is None:
            return b""
        if not isinstance(value, str):
            raise _bad(f"'{name}' must be a base64 string")
        try:
            return base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            try:  # grpc-gateway takes URL-safe base64 too
                return base64.urlsafe_b64decode(value)
            except (binascii.Error, ValueError):
                raise _bad(f"'{name}' is not valid base64") from None

    def int(self, name: str, low: int = 0, high: int = 2**63 - 1) -> int:
        value = self.fields.get(name)
        if value is None:
            return 0
        if isinstance(value, str) and _INT64_TEXT.fullmatch(value):
            value = int(value)
        if type(value) is not int or not low <= value <= high:
            raise _bad(f"'{name}' must be an integer from {low} to {high}")
        return value

    def bool(self, name: str) -> bool:
        value = self.fields.get(name, False)
        if not isinstance(value, bool):
            raise _bad(f"'{name}' must be true or false")
        return value

    def enum(self, name: str, names: tuple[str, ...]) -> str:
        value = self.fields.get(name)
        if value is None:
            return names[0]
        if isinstance(value, str) and value.upper() in names:
            return value.upper()
        if type(value) is int and 0 <= value < len(names):
            return names[value]
        raise _bad(f"'{name}' must be one of {', '.join(names)}")

    def object(self, name: str) -> Body | None:
        value = self.fields.get(name)
        return None if value is None else Body(value, f"'{name}'")

    def list(self, name: str) -> list[Any]:
        value = self.fields.get(name)
        if value is None:
            return []
        if not isinstance(value, list):
            raise _bad(f"'{name}' must be a list")
        return value


def _range_end(body: Body, key: bytes) -> bytes | None:
    """A request's end of range in the store's terms: None for the key alone, b""
    for "to the end" (etcd's "\\0")."""
    end = body.bytes("range_end")
    if not end:
        return None
    return b"" if end == b"\x00" else end


_app = Klein()

#: Found without werkzeug's matcher (``HotRouteResource``): the key-value calls.
HOT_ROUTES = tuple(f"{prefix}kv/{call}" for prefix in ("/v3/", "/v3beta/")
                   for call in ("range", "put", "deleterange", "txn"))


def route(path: str, methods: tuple[str, ...] = ("POST",)) -> Callable[[Any], Any]:
    """One handler under ``/v3/`` and the older ``/v3beta/``."""
    def decorate(f: Any) -> Any:
        for prefix in ("/v3/", "/v3beta/"):
            _app.route(prefix + path, methods=list(methods), endpoint=prefix + path)(f)
        return f
    return decorate


class EtcdGateway:
    """The routes of etcd's v3 gateway; ``api`` lends its checks, auth and writes."""

    app = _app

    def __init__(self, api: ClientAPI, cluster_name: str) -> None:
        self.api = api
        self.cluster_id = uint64_id(cluster_name)

    def resource(self) -> Any:
        return HotRouteResource(self.app, HOT_ROUTES)

    # Plumbing

    def _answer(self, request: IRequest, status: int, body: dict[str, Any]) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(body, separators=(",", ":")).encode()

    def _header(self, node: Node, revision: int | None = None) -> dict[str, Any]:
        return {"cluster_id": str(self.cluster_id), "member_id": str(uint64_id(node.node_id)),
                "revision": str(node.store.revision if revision is None else revision),
                "raft_term": str(node.epoch)}

    def _ok(self, request: IRequest, node: Node, body: dict[str, Any],
            revision: int | None = None) -> bytes:
        return self._answer(request, 200, _pruned({"header": self._header(node, revision),
                                                   **body}))

    @_app.handle_errors(EtcdError)
    def _etcd_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, EtcdError)
        return self._answer(request, error.status, {"error": error.message,
                                                    "message": error.message,
                                                    "code": error.code})

    @_app.handle_errors(errors.ApiError)
    def _kvd_error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, errors.ApiError)
        if error.status == 503:
            request.setHeader(b"Retry-After", b"1")
        message = f"etcdserver: {error.message}"
        return self._answer(request, error.status, {
            "error": message, "message": message, "code": _CODES.get(error.status, 2)})

    @_app.handle_errors(RouteNotFound)
    def _no_route(self, request: IRequest, failure: Failure) -> bytes:
        return self._answer(request, 404, {"error": "Not Found", "message": "Not Found",
                                           "code": NOT_FOUND})

    @_app.handle_errors(RouteMethodNotAllowed)
    def _bad_method(self, request: IRequest, failure: Failure) -> bytes:
        return self._answer(request, 405, {"error": "Method Not Allowed",
                                           "message": "Method Not Allowed",
                                           "code": UNIMPLEMENTED})

    @_app.handle_errors(Exception)
    def _bug(self, request: IRequest, failure: Failure) -> bytes:
        log.failure("Unexpected error serving {path}", failure, path=request.path)
        return self._answer(request, 500, {"error": "internal error",
                                           "message": "internal error", "code": 13})

    def _body(self, request: IRequest) -> Body:
        """The JSON body, whatever its Content-Type (etcd3gw sends txns without one)."""
        try:
            fields = self.api._body(request, required=False)
        except errors.BadRequest as e:
            raise _bad(e.message) from None
        return Body({} if fields is None else fields)

    def _key(self, body: Body, name: str = "key") -> bytes:
        key = body.bytes(name)
        if not key:
            raise _bad("etcdserver: key is not provided")
        if len(key) > self.api.limits.max_key_bytes:
            raise _bad(REQUEST_TOO_LARGE)  # etcd bounds the request, so a key, the same way
        return key

    def _value(self, body: Body) -> bytes:
        value = body.bytes("value")
        if len(value) > self.api.limits.max_value_bytes:
            raise _bad(REQUEST_TOO_LARGE)
        return value

    async def _propose(self, request: IRequest, command: Command,
                       user: str | None) -> Result:
        found = problem(command)
        if found is not None:
            raise _bad(f"etcdserver: {found}")
        result = await self.api.propose(request, command, user)
        if result.get("ok"):
            return result
        error = result.get("error")
        if error == "lease_not_found":
            raise EtcdError(404, NOT_FOUND, LEASE_NOT_FOUND)
        if error == "lease_exists":
            raise EtcdError(412, FAILED_PRECONDITION, "etcdserver: lease already exists")
        if error == "not_found":
            raise _bad("etcdserver: key not found")
        raise EtcdError(500, 13, f"etcdserver: {result.get('message', error)}")

    def _permit(self, node: Node, user: str | None, access: str, key: bytes,
                end: bytes | None) -> None:
        if end is None:
            self.api.access.permit_keys(node.store.auth, user, access, [key])
        else:
            self.api.access.permit_range(node.store.auth, user, access, key, end or None)

    def _permit_write(self, node: Node, user: str | None, op: Command) -> None:
        """A put or delete: write access, and read access too if it answers the
        previous keys (``prev_kv``), as etcd asks of it."""
        self._permit(node, user, WRITE, op["k"], op.get("end"))
        if op.get("prev_kv"):
            self._permit(node, user, READ, op["k"], op.get("end"))

    # Version, status, members

    @_app.route("/version", methods=["GET"])
    def version(self, request: IRequest) -> bytes:
        return self._answer(request, 200, {"etcdserver": ETCD_VERSION,
                                           "etcdcluster": ETCD_VERSION})

    @route("maintenance/status")
    def status(self, request: IRequest) -> bytes:
        self._body(request)
        node = self.api.node()
        self.api.caller(request)
        leader = (node.leader_info or {}).get("node_id")
        return self._ok(request, node, {
            "version": ETCD_VERSION, "dbSize": str(node.store.value_bytes),
            "leader": str(uint64_id(leader)) if leader else "0",
            "raftIndex": str(node.rlog.commit_index), "raftTerm": str(node.epoch),
            "raftAppliedIndex": str(node.store.applied_index),
            "dbSizeInUse": str(node.store.value_bytes)})

    @route("cluster/member/list")
    def member_list(self, request: IRequest) -> bytes:
        self._body(request)
        node = self.api.node()
        self.api.caller(request)
        cluster = self.api._cluster()
        rows = [node.own_member()] if cluster is None else cluster.describe_members()
        members = [{"ID": str(uint64_id(row["node_id"])), "name": row["node_id"],
                    "peerURLs": [row["peer_url"]] if row.get("peer_url") else [],
                    "clientURLs": [row["url"]] if row.get("url") else [],
                    "isLearner": row.get("role") == "learner"} for row in rows]
        header = self._header(node)
        del header["revision"]  # etcd's member list carries no revision
        return self._answer(request, 200, _pruned({"header": header, "members": members}))

    @route("auth/authenticate")
    async def authenticate(self, request: IRequest) -> bytes:
        body = self._body(request)
        name, password = body.fields.get("name"), body.fields.get("password")
        if not isinstance(name, str) or not isinstance(password, str) or not password:
            raise _bad("etcdserver: authentication failed, invalid user ID or password")
        token = await self.api.login(request, name, password)
        return self._ok(request, self.api.node(), {"token": token})

    # Keys

    @route("kv/range")
    async def range(self, request: IRequest) -> bytes:
        body = self._body(request)
        user = self.api.caller(request)
        key = self._key(body)
        end = _range_end(body, key)
        linearizable = not body.bool("serializable")
        node = await self.api.barrier(linearizable)
        self._permit(node, user, READ, key, end)
        store = node.store
        wanted = body.int("revision")
        if wanted > store.revision:
            raise EtcdError(400, OUT_OF_RANGE,
                            "etcdserver: mvcc: required revision is a future revision")
        if wanted and wanted < store.revision:
            # kvd keeps the latest value of each key, not past versions.
            raise EtcdError(400, OUT_OF_RANGE,
                            "etcdserver: mvcc: required revision has been compacted")
        return self._ok(request, node, self._range_response(store, body, key, end))

    def _range_response(self, store: Store, body: Body, key: bytes,
                        end: bytes | None) -> dict[str, Any]:
        if end is None:
            one = store.get(key)
            found = [] if one is None else [one]
        else:
            found = list(store.range(key, end or None))
        for name, attribute, above in (("min_mod_revision", "mod_revision", True),
                                       ("max_mod_revision", "mod_revision", False),
                                       ("min_create_revision", "create_revision", True),
                                       ("max_create_revision", "create_revision", False)):
            bound = body.int(name)
            if bound:
                found = [kv for kv in found if (getattr(kv, attribute) >= bound if above
                                                else getattr(kv, attribute) <= bound)]
        order = body.enum("sort_order", SORT_ORDERS)
        target = body.enum("sort_target", SORT_TARGETS)
        if order == "NONE" and target != "KEY":
            order = "ASCEND"  # as etcd: a sort target without an order ascends
        if order != "NONE" and not (target == "KEY" and order == "ASCEND"):
            sort_key: Callable[[KeyValue], Any] = {
                "KEY": lambda kv: kv.key, "VERSION": lambda kv: kv.version,
                "CREATE": lambda kv: kv.create_revision, "MOD": lambda kv: kv.mod_revision,
                "VALUE": lambda kv: kv.value}[target]
            found.sort(key=sort_key, reverse=order == "DESCEND")
        count = len(found)
        if body.bool("count_only"):
            return {"count": str(count)}
        limit = body.int("limit")
        page = found[:limit] if limit else found
        keys_only = body.bool("keys_only")
        return {"kvs": [_kv(store.record(kv), keys_only) for kv in page],
                "more": len(page) < count, "count": str(count)}

    def _put_op(self, body: Body) -> Command:
        op: Command = {"op": "put", "k": self._key(body), "v": self._value(body)}
        lease = body.int("lease", 0)
        if lease:
            op["lease"] = lease
        for flag, field in (("prev_kv", "prev_kv"), ("keep_value", "ignore_value"),
                            ("keep_lease", "ignore_lease")):
            if body.bool(field):
                op[flag] = True
        if op.get("keep_value") and body.fields.get("value"):
            raise _bad("etcdserver: value is provided")
        if op.get("keep_lease") and lease:
            raise _bad("etcdserver: lease is provided")
        return op

    @route("kv/put")
    async def put(self, request: IRequest) -> bytes:
        body = self._body(request)
        user = self.api.caller(request)
        command = self._put_op(body)
        self._permit_write(self.api.node(), user, command)
        command["rid"] = uuid.uuid4().hex
        result = await self._propose(request, command, user)
        prev = result.get("prev_kv")
        return self._ok(request, self.api.node(), {"prev_kv": None if prev is None
                                                   else _kv(prev)}, result["revision"])

    def _delete_op(self, body: Body) -> Command:
        key = self._key(body)
        end = _range_end(body, key)
        op: Command = {"op": "del", "k": key, "end": key + b"\x00" if end is None else end}
        if body.bool("prev_kv"):
            op["prev_kv"] = True
        return op

    @route("kv/deleterange")
    async def deleterange(self, request: IRequest) -> bytes:
        body = self._body(request)
        user = self.api.caller(request)
        command = self._delete_op(body)
        self._permit_write(self.api.node(), user, command)
        command["rid"] = uuid.uuid4().hex
        result = await self._propose(request, command, user)
        return self._ok(request, self.api.node(), {
            "deleted": str(result["deleted"]),
            "prev_kvs": [_kv(kv) for kv in result.get("prev_kvs", [])]}, result["revision"])

    @route("kv/compaction")
    async def compaction(self, request: IRequest) -> bytes:
        """Accepted and ignored: kvd keeps no past versions to compact (its watch
        history is bounded by count instead)."""
        body = self._body(request)
        self.api.caller(request)
        node = self.api.node()
        if body.int("revision") > node.store.revision:
            raise EtcdError(400, OUT_OF_RANGE,
                            "etcdserver: mvcc: required revision is a future revision")
        return self._ok(request, node, {})

    # Transactions

    def _compare(self, item: Any) -> list[dict[str, Any]]:
        """One etcd compare as the store's compares (all must hold)."""
        body = Body(item, "a compare")
        target = body.enum("target", COMPARE_TARGETS)
        store_target, field = _TARGETS[target]
        key = self._key(body)
        compare: dict[str, Any] = {"k": key, "target": store_target,
                                   "cmp": _RESULTS[body.enum("result", COMPARE_RESULTS)],
                                   "value": body.bytes(field) if target == "VALUE"
                                   else body.int(field)}
        end = _range_end(body, key)
        if end is not None:
            compare["end"] = end
        elif target == "VALUE":
            # etcd: a value compare on a missing key fails, whatever the result asked
            # for; the store's own ``value`` compare says a missing key != anything.
            return [{"k": key, "target": "exists", "cmp": "==", "value": True}, compare]
        return [compare]

    def _txn_op(self, item: Any) -> Command:
        body = Body(item, "a txn op")
        inner = body.object("request_put")
        if inner is not None:
            return self._put_op(inner)
        inner = body.object("request_delete_range")
        if inner is not None:
            return self._delete_op(inner)
        inner = body.object("request_range")
        if inner is not None:
            key = self._key(inner)
            op: Command = {"op": "range", "k": key}
            end = _range_end(inner, key)
            if end is not None:
                op["end"] = end
            if inner.int("limit"):
                op["limit"] = inner.int("limit")
            if inner.bool("keys_only"):
                op["keys_only"] = True
            return op
        if body.object("request_txn") is not None:
            raise EtcdError(501, UNIMPLEMENTED, "kvd does not nest transactions")
        raise _bad("a txn op must hold request_range, request_put or request_delete_range")

    @route("kv/txn")
    async def txn(self, request: IRequest) -> bytes:
        body = self._body(request)
        user = self.api.caller(request)
        parts = [body.list(name) for name in ("compare", "success", "failure")]
        if any(len(part) > MAX_TXN_OPS for part in parts):  # etcd bounds each list
            raise _bad("etcdserver: too many operations in txn request")
        compare = [c for item in parts[0] for c in self._compare(item)]
        success = [self._txn_op(o) for o in parts[1]]
        failure = [self._txn_op(o) for o in parts[2]]
        for ops in (success, failure):
            _check_no_duplicate_writes(ops)
        node = self.api.node()
        for item in compare:
            self._permit(node, user, READ, item["k"], item.get("end"))
        for op in (*success, *failure):
            if op["op"] == "range":
                self._permit(node, user, READ, op["k"], op.get("end"))
            else:
                self._permit_write(node, user, op)
        keys_only = {id(op) for op in (*success, *failure) if op.pop("keys_only", False)}
        ops_run = success, failure
        result = await self._propose(
            request, txn_command(compare, success, failure, uuid.uuid4().hex), user)
        ran = ops_run[0] if result["succeeded"] else ops_run[1]
        revision = result["revision"]
        responses: list[dict[str, Any]] = []
        for op, item in zip(ran, result["results"], strict=True):
            header: dict[str, Any] = {"revision": str(revision)}
            if item["op"] == "put":
                prev = item.get("prev_kv")
                responses.append({"response_put": {
                    "header": header, "prev_kv": None if prev is None else _kv(prev)}})
            elif item["op"] == "del":
                responses.append({"response_delete_range": {
                    "header": header, "deleted": str(item["deleted"]),
                    "prev_kvs": [_kv(kv) for kv in item.get("prev_kvs", [])]}})
            else:
                responses.append({"response_range": {
                    "header": header, "count": str(item["count"]), "more": item["more"],
                    "kvs": [_kv(kv, keys_only=id(op) in keys_only) for kv in item["kvs"]]}})
        return self._ok(request, self.api.node(), {"succeeded": result["succeeded"],
                                                   "responses": responses}, revision)

    # Leases

    def _lease_id(self, body: Body) -> int:
        lease = body.int("ID", 0)
        if not lease:
            raise EtcdError(404, NOT_FOUND, LEASE_NOT_FOUND)
        return lease

    @route("lease/grant")
    async def lease_grant(self, request: IRequest) -> bytes:
        body = self._body(request)
        user = self.api.caller(request)
        ttl = body.int("TTL", -(2**63), 2**63 - 1)
        if ttl > MAX_LEASE_TTL:
            raise EtcdError(400, OUT_OF_RANGE, "etcdserver: too large lease TTL")
        ttl = max(ttl, MIN_LEASE_TTL)
        lease = body.int("ID") or (secrets.randbits(63) or 1)
        result = await self._propose(request, lease_grant_command(lease, ttl, uuid.uuid4().hex),
                                     user)
        return self._ok(request, self.api.node(), {"ID": str(lease), "TTL": str(result["ttl"])})

    @route("lease/revoke")
    @route("kv/lease/revoke")
    async def lease_revoke(self, request: IRequest) -> bytes:
        body = self._body(request)
        user = self.api.caller(request)
        result = await self._propose(
            request, lease_revoke_command(self._lease_id(body), uuid.uuid4().hex), user)
        return self._ok(request, self.api.node(), {}, result["revision"])

    @route("lease/keepalive")
    @route("kv/lease/keepalive")
    async def lease_keepalive(self, request: IRequest) -> bytes:
        """One keep-alive answered as etcd's stream answers it, then the response ends;
        an unknown lease's answer has no TTL."""
        body = self._body(request)
        user = self.api.caller(request)
        lease = self._lease_id(body)
        try:
            result = await self._propose(request, lease_keepalive_command(lease), user)
            ttl = result["ttl"]
        except EtcdError as e:
            if e.status != 404:
                raise
            ttl = 0
        node = self.api.node()
        return self._answer(request, 200, {"result": _pruned({
            "header": self._header(node), "ID": str(lease), "TTL": str(ttl)})})

    @route("lease/timetolive")
    @route("kv/lease/timetolive")
    async def lease_timetolive(self, request: IRequest) -> bytes:
        body = self._body(request)
        user = self.api.caller(request)
        lease = self._lease_id(body)
        node = await self.api.barrier(True)
        if user is not None:
            self.api.access.permit_keys(node.store.auth, user, READ,
                                        sorted(node.store.lease_keys.get(lease, ())))
        granted = node.store.leases.get(lease)
        if granted is None:
            return self._ok(request, node, {"ID": str(lease), "TTL": "-1"})
        clock = self.api.lease_clock()
        answer: dict[str, Any] = {
            "ID": str(lease), "TTL": str(granted if clock is None else clock.remaining(lease)),
            "grantedTTL": str(granted)}
        if body.bool("keys"):
            answer["keys"] = [_b64(k) for k in sorted(node.store.lease_keys[lease])]
        return self._ok(request, node, answer)

    @route("lease/leases")
    @route("kv/lease/leases")
    async def lease_leases(self, request: IRequest) -> bytes:
        self._body(request)
        self.api.caller(request)
        node = await self.api.barrier(True)
        return self._ok(request, node, {"leases": [{"ID": str(lease)}
                                                   for lease in sorted(node.store.leases)]})

    # Watches

    @route("watch")
    def watch(self, request: IRequest) -> Deferred[None]:
        body = self._body(request)
        user = self.api.caller(request)
        create = body.object("create_request")
        if create is None:
            raise _bad("a watch over the gateway takes one create_request")
        key = self._key(create)
        end = _range_end(create, key)
        node = self.api.node()
        self._permit(node, user, READ, key, end)
        filters = {f if isinstance(f, str) else ("NOPUT", "NODELETE")[f] if f in (0, 1) else ""
                   for f in create.list("filters")}
        if not filters <= {"NOPUT", "NODELETE"}:
            raise _bad("'filters' must hold NOPUT or NODELETE")
        limit = self.api.limits.max_watches
        if len(self.api.watches) >= limit:
            raise EtcdError(429, RESOURCE_EXHAUSTED, f"this node serves at most {limit} watches")
        if end is None:
            def matches(k: bytes) -> bool:
                return k == key
        elif end == b"":
            def matches(k: bytes) -> bool:
                return k >= key
        else:
            def matches(k: bytes) -> bool:
                return key <= k < end
        return GatewayWatch(self, request, node, matches, create.int("start_revision"),
                            filters, create.int("watch_id"), create.bool("prev_kv")).start()


def _check_no_duplicate_writes(ops: list[Command]) -> None:
    """etcd refuses a txn branch that writes one key twice: two puts of a key, or
    a put inside a range the branch also deletes."""
    puts = [op["k"] for op in ops if op["op"] == "put"]
    if len(set(puts)) < len(puts):
        raise _bad("etcdserver: duplicate key given in txn request")
    for op in ops:
        if op["op"] != "del":
            continue
        start, end = op["k"], op["end"]
        # A delete to the end ("\0", b"" here) is an interval etcd builds backwards,
        # so it overlaps nothing there, and nothing here.
        if any(start <= key and end and key < end for key in puts):
            raise _bad("etcdserver: duplicate key given in txn request")


class GatewayWatch:
    """One watch stream: a ``created`` message, then one message per revision with
    its events, each a chunk of its own, until the client goes or the store is
    replaced by a snapshot (the client then watches again from its revision)."""

    def __init__(self, gateway: EtcdGateway, request: IRequest, node: Node,
                 matches: Callable[[bytes], bool], start_revision: int,
                 filters: set[str], watch_id: int, prev_kv: bool = False) -> None:
        self.gateway, self.request, self.node = gateway, request, node
        self.store = node.store
        self.matches, self.start_revision = matches, start_revision
        self.skip = {PUT if f == "NOPUT" else DELETE for f in filters}
        self.watch_id, self.prev_kv = watch_id, prev_kv
        self.pending: list[Event] = []
        self.done: Deferred[None] = Deferred(lambda _: self._close())

    def _message(self, body: dict[str, Any], revision: int | None = None) -> None:
        header = self.gateway._header(self.node, revision)
        self.request.write(json.dumps({"result": _pruned(
            {"header": header, "watch_id": str(self.watch_id), **body})},
            separators=(",", ":")).encode() + b"\n")

    def start(self) -> Deferred[None]:
        store = self.store
        self.gateway.api.watches.add(self)
        self.request.setResponseCode(200)
        self.request.setHeader(b"Content-Type", b"application/json")
        self._message({"created": True})
        if self.start_revision and self.start_revision <= store.history_start < store.revision:
            self._message({"canceled": True, "compact_revision": str(store.history_start + 1)})
            self._close()
            self.done.callback(None)
            return self.done
        store.listeners.append(self._event)
        self.node.on_applied.append(self._flush)
        self.node.on_store_replaced.append(self._store_replaced)
        if self.start_revision:
            self.pending = [e for e in store.events_since(self.start_revision)
                            if self.matches(e.key)]
            self._flush()
        return self.done

    def _event(self, event: Event) -> None:
        # A start revision still to come: the changes before it are not asked for.
        if event.revision >= self.start_revision and self.matches(event.key):
            self.pending.append(event)

    def _flush(self, *applied: object) -> None:
        """After each applied entry: its events, one message per revision."""
        events, self.pending = self.pending, []
        by_revision: dict[int, list[dict[str, Any]]] = {}
        for event in events:
            if event.type in self.skip:
                continue
            item: dict[str, Any]
            if event.type == DELETE:
                item = {"type": "DELETE", "kv": {"key": _b64(event.key),
                                                 "mod_revision": str(event.revision)}}
            else:  # PUT is etcd's zero event type, so its JSON leaves the type out
                item = {"kv": _kv({"key": event.key, "value": event.value,
                                   "create_revision": event.create_revision,
                                   "mod_revision": event.revision,
                                   "version": event.version, "lease": event.lease})}
            previous = event.previous_record() if self.prev_kv else None
            if previous is not None:
                item["prev_kv"] = _kv(previous)
            by_revision.setdefault(event.revision, []).append(item)
        for revision, items in by_revision.items():
            self._message({"events": items}, revision)

    def _store_replaced(self, old: Any) -> None:
        self._close()
        if not self.done.called:
            self.done.callback(None)

    def _close(self) -> None:
        self.gateway.api.watches.discard(self)
        if self._event in self.store.listeners:
            self.store.listeners.remove(self._event)
        if self._flush in self.node.on_applied:
            self.node.on_applied.remove(self._flush)
        if self._store_replaced in self.node.on_store_replaced:
            self.node.on_store_replaced.remove(self._store_replaced)

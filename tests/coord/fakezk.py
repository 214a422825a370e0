"""
An in-memory stand-in for ``ZooKeeperService``, for unit tests of ``kvd.coord.cluster``.

It answers at once (fired Deferreds) and keeps znodes in a dict. Faults are
injected per call: ``fail_next(method, error, applied=True)`` makes the next
call of ``method`` raise ``error`` after (or instead of) doing its work, as a
ConnectionLoss after the server applied a request does. The integration tests
run the coordinator against a real ZooKeeper; this one lets a test place a
fault at an exact step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError, NotEmptyError
from twisted.internet.defer import Deferred, fail, succeed

from kvd.coord.bridge import CONNECTED, TransactionFailed


@dataclass
class Stat:
    version: int = 0
    ephemeralOwner: int = 0


@dataclass
class Znode:
    data: bytes
    stat: Stat = field(default_factory=Stat)
    ephemeral: bool = False


class FakeTransaction:
    def __init__(self, zk: FakeZooKeeper) -> None:
        self._zk = zk
        self._ops: list[tuple[str, tuple[Any, ...]]] = []

    def check(self, path: str, version: int) -> FakeTransaction:
        self._ops.append(("check", (path, version)))
        return self

    def set_data(self, path: str, value: bytes, version: int = -1) -> FakeTransaction:
        self._ops.append(("set_data", (path, value, version)))
        return self

    def commit(self) -> Deferred[list[object]]:
        fault = self._zk.take_fault("commit")
        if fault is not None and not fault[1]:
            return fail(fault[0])
        for _name, args in self._ops:
            node = self._zk.nodes.get(args[0])
            if node is None:
                return fail(TransactionFailed([NoNodeError()]))
            if args[-1] != -1 and node.stat.version != args[-1]:
                return fail(TransactionFailed([BadVersionError()]))
        for name, args in self._ops:
            if name == "set_data":
                self._zk.write(args[0], args[1])
        if fault is not None:
            return fail(fault[0])
        return succeed([True] * len(self._ops))


class FakeZooKeeper:
    """The subset of ``ZooKeeperService`` the coordinator uses, in memory."""

    servers = "fake:2181"
    private_acl = None

    def __init__(self) -> None:
        self.nodes: dict[str, Znode] = {"/": Znode(b"")}
        self.connected = True
        self.client_id: tuple[int, bytes] | None = (1, b"session")
        self._sequence = 0
        self._faults: dict[str, list[tuple[Exception, bool]]] = {}
        self._listeners: list[Callable[[str], None]] = []
        self._data_watches: dict[str, list[Callable[[Any], Any]]] = {}
        self._children_watches: dict[str, list[Callable[[Any], Any]]] = {}

    # Faults

    def fail_next(self, method: str, error: Exception, applied: bool = False,
                  path: str = "") -> None:
        """The next ``method`` call (on a path starting with ``path``) raises ``error``,
        after doing its work if ``applied``."""
        self._faults.setdefault(method, []).append((error, applied, path))

    def take_fault(self, method: str, path: str = "") -> tuple[Exception, bool] | None:
        for fault in self._faults.get(method, []):
            if path.startswith(fault[2]):
                self._faults[method].remove(fault)
                return fault[0], fault[1]
        return None

    def _call(self, method: str, path: str, work: Callable[[], Any]) -> Deferred[Any]:
        fault = self.take_fault(method, path)
        if fault is not None and not fault[1]:
            return fail(fault[0])
        try:
            result = work()
        except Exception as e:
            return fail(e)
        if fault is not None:
            return fail(fault[0])
        return succeed(result)

    # Session

    def add_state_listener(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    def remove_state_listener(self, listener: Callable[[str], None]) -> None:
        self._listeners.remove(listener)

    def announce(self, state: str = CONNECTED) -> None:
        self.connected = state == CONNECTED
        for listener in list(self._listeners):
            listener(state)

    # Znodes

    def put(self, path: str, data: bytes) -> None:
        """Create ``path`` (and its parents) with ``data``, as another client would."""
        self._ensure(self._parent(path))
        self.nodes[path] = Znode(data)

    @staticmethod
    def _parent(path: str) -> str:
        return path.rsplit("/", 1)[0] or "/"

    def children(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return sorted(p[len(prefix):] for p in self.nodes
                      if p.startswith(prefix) and "/" not in p[len(prefix):])

    def write(self, path: str, data: bytes) -> None:
        node = self.nodes[path]
        node.data = data
        node.stat.version += 1
        self._fire_data(path)

    def _fire_data(self, path: str) -> None:
        node = self.nodes.get(path)
        value = None if node is None else (node.data, node.stat)
        for callback in list(self._data_watches.get(path, [])):
            if callback(value) is False:
                self._data_watches[path].remove(callback)

    def _fire_children(self, path: str) -> None:
        for callback in list(self._children_watches.get(path, [])):
            callback(self.children(path))

    def _create(self, path: str, value: bytes, ephemeral: bool, sequence: bool,
                makepath: bool) -> str:
        if sequence:
            path = f"{path}{self._sequence:010d}"
            self._sequence += 1
        if path in self.nodes:
            raise NodeExistsError()
        parent = self._parent(path)
        if parent not in self.nodes:
            if not makepath:
                raise NoNodeError()
            self._ensure(parent)
        owner = self.client_id[0] if ephemeral and self.client_id else 0
        self.nodes[path] = Znode(value, Stat(0, owner), ephemeral)
        self._fire_data(path)
        self._fire_children(parent)
        return path

    def _ensure(self, path: str) -> None:
        parts = path.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            sub = "/" + "/".join(parts[:i])
            if sub not in self.nodes:
                self.nodes[sub] = Znode(b"")

    def _delete(self, path: str) -> None:
        if path not in self.nodes:
            raise NoNodeError()
        if self.children(path):
            raise NotEmptyError()
        del self.nodes[path]
        self._fire_data(path)
        self._fire_children(self._parent(path))

    def _get(self, path: str) -> tuple[bytes, Stat]:
        if path not in self.nodes:
            raise NoNodeError()
        return self.nodes[path].data, self.nodes[path].stat

    def _set(self, path: str, value: bytes, version: int) -> Stat:
        node = self.nodes.get(path)
        if node is None:
            raise NoNodeError()
        if version != -1 and node.stat.version != version:
            raise BadVersionError()
        self.write(path, value)
        return node.stat

    def create(self, path: str, value: bytes = b"", *, ephemeral: bool = False,
               sequence: bool = False, makepath: bool = False,
               acl: Any = None) -> Deferred[str]:
        return self._call("create", path,
                          lambda: self._create(path, value, ephemeral, sequence, makepath))

    def get(self, path: str) -> Deferred[tuple[bytes, Stat]]:
        return self._call("get", path, lambda: self._get(path))

    def set(self, path: str, value: bytes, version: int = -1) -> Deferred[Stat]:
        return self._call("set", path, lambda: self._set(path, value, version))

    def delete(self, path: str, version: int = -1) -> Deferred[None]:
        return self._call("delete", path, lambda: self._delete(path))

    def exists(self, path: str) -> Deferred[Stat | None]:
        return self._call("exists", path, lambda: self.nodes[path].stat if path in self.nodes
                          else None)

    def get_children(self, path: str) -> Deferred[list[str]]:
        def children() -> list[str]:
            if path not in self.nodes:
                raise NoNodeError()
            return self.children(path)
        return self._call("get_children", path, children)

    def ensure_path(self, path: str) -> Deferred[None]:
        return self._call("ensure_path", path, lambda: self._ensure(path))

    def transaction(self) -> FakeTransaction:
        return FakeTransaction(self)

    def watch_data(self, path: str, callback: Callable[[Any], Any]) -> Deferred[Any]:
        self._data_watches.setdefault(path, []).append(callback)
        node = self.nodes.get(path)
        return succeed(None if node is None else (node.data, node.stat))

    def watch_children(self, path: str, callback: Callable[[Any], Any]) -> Deferred[Any]:
        self._children_watches.setdefault(path, []).append(callback)
        return succeed(self.children(path) if path in self.nodes else None)

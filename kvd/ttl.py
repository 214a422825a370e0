"""
TTL expiry, decided by the leader and carried out through the log (rule 12).

Only the leader keeps timers, on its own monotonic clock. When one fires it
proposes "delete if mod_revision == r": if the key changed since, the delete
is a no-op on every replica alike. A new leader re-arms every TTL key for its
full duration, since another host's clock cannot be trusted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from kvd.store import Command, Result, Store, expire_command

RETRY_SECONDS = 1.0


class ExpiryScheduler:
    """Timers for keys with a TTL, armed only while this node leads."""

    log = Logger()

    def __init__(self, store: Callable[[], Store],
                 submit: Callable[[list[Command]], Deferred[list[Result]]],
                 clock: IReactorTime) -> None:
        """``store`` gives the current store (a snapshot install replaces it);
        ``submit`` proposes commands; timers run on ``clock`` (monotonic).
        Feed it every applied entry through ``applied``."""
        self._store = store
        self._submit = submit
        self._clock = clock
        self._timers: dict[bytes, IDelayedCall] = {}
        self.armed = False

    def leading(self, leading: bool) -> None:
        """The node's role-changed hook: timers run only while it leads."""
        if leading:
            self.start()
        else:
            self.stop()

    def start(self) -> None:
        """This node now leads: arm every TTL key for its full duration."""
        self.armed = True
        store = self._store()
        for key, ttl in store.ttls.items():
            kv = store.get(key)
            if kv is not None:
                self._arm(key, ttl, kv.mod_revision)

    def stop(self) -> None:
        self.armed = False
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        self._timers.clear()

    def applied(self, index: int, commands: list[Command], results: list[Result]) -> None:
        """An entry was applied: arm the TTLs its writes set (while armed)."""
        if not self.armed:
            return
        for command, result in zip(commands, results, strict=True):
            if not result.get("ok"):
                continue
            if command["op"] == "put" and command.get("ttl"):
                self._arm(command["k"], command["ttl"], result["revision"])
            elif command["op"] == "txn" and result.get("succeeded"):
                for op in command["success"]:
                    if op["op"] == "put" and op.get("ttl"):
                        self._arm(op["k"], op["ttl"], result["revision"])

    def _arm(self, key: bytes, ttl: float, mod_revision: int) -> None:
        old = self._timers.pop(key, None)
        if old is not None and old.active():
            old.cancel()
        self._timers[key] = self._clock.callLater(ttl, self._expire, key, mod_revision)

    def _expire(self, key: bytes, mod_revision: int) -> None:
        self._timers.pop(key, None)
        if not self.armed:
            return
        kv = self._store().get(key)
        if kv is None or kv.mod_revision != mod_revision:
            return
        try:
            d = self._submit([expire_command(key, mod_revision)])
        except Exception as e:
            self._retry(key, mod_revision, str(e))
            return

        def failed(failure: Failure) -> None:
            self._retry(key, mod_revision, failure.getErrorMessage())

        d.addErrback(failed)

    def _retry(self, key: bytes, mod_revision: int, why: Any) -> None:
        if not self.armed:
            return
        self.log.info("Expiry of {key} not committed ({why}); retrying", key=key, why=why)
        self._timers[key] = self._clock.callLater(RETRY_SECONDS, self._expire, key,
                                                  mod_revision)

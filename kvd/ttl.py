"""
TTL and lease expiry, decided by the leader and carried out through the log
(rule 12).

Only the leader keeps timers, on its own monotonic clock. When a key's fires
it proposes "delete if mod_revision == r", when a lease's "revoke if renewed
n times": if the key changed or the lease was kept alive since, the command
is a no-op on every replica alike. A new leader re-arms every TTL key and
every lease for its full duration, since another host's clock cannot be
trusted. Every node notes when it applied a lease's grant or last keep-alive,
to tell a client about how long the lease has left.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from kvd.store import Command, Result, Store, expire_command, lease_expire_command

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
        self._lease_timers: dict[int, IDelayedCall] = {}
        #: When each lease runs out, on this node's clock (granted or renewed here).
        self._lease_deadlines: dict[int, float] = {}
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
        for lease, ttl in store.leases.items():
            self._lease_deadlines[lease] = self._clock.seconds() + ttl
            self._arm_lease(lease, ttl, store.lease_renewals[lease])

    def stop(self) -> None:
        self.armed = False
        for timer in (*self._timers.values(), *self._lease_timers.values()):
            if timer.active():
                timer.cancel()
        self._timers.clear()
        self._lease_timers.clear()

    def remaining(self, lease: int) -> int:
        """About how many seconds ``lease`` has left (its granted TTL if this node
        has not seen it granted or renewed, e.g. after a snapshot)."""
        ttl = self._store().leases.get(lease)
        if ttl is None:
            return -1
        deadline = self._lease_deadlines.get(lease)
        if deadline is None:
            return ttl
        # Whole seconds left, rounded down as etcd's TimeToLive rounds them.
        return max(0, min(ttl, math.floor(deadline - self._clock.seconds())))

    def applied(self, index: int, commands: list[Command], results: list[Result]) -> None:
        """An entry was applied: note its leases' deadlines, and arm the timers of
        the TTLs and leases it set (while armed)."""
        for command, result in zip(commands, results, strict=True):
            if not result.get("ok"):
                continue
            op = command["op"]
            if op in ("lease_grant", "lease_keepalive"):
                # The result's id: a retried grant answers the first grant's lease,
                # which may since have been revoked.
                # A request id reused by a different command answers that command's
                # result, which may carry no lease at all.
                lease, ttl = result.get("id"), result.get("ttl")
                if type(lease) is not int or type(ttl) is not int:
                    continue
                renewals = self._store().lease_renewals.get(lease)
                if renewals is None:
                    continue
                self._lease_deadlines[lease] = self._clock.seconds() + ttl
                if self.armed:
                    self._arm_lease(lease, ttl, renewals)
            elif op == "lease_revoke" and command["id"] not in self._store().leases:
                self._lease_deadlines.pop(command["id"], None)
                timer = self._lease_timers.pop(command["id"], None)
                if timer is not None and timer.active():
                    timer.cancel()
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

    def _arm_lease(self, lease: int, ttl: float, renewals: int) -> None:
        old = self._lease_timers.pop(lease, None)
        if old is not None and old.active():
            old.cancel()
        self._lease_timers[lease] = self._clock.callLater(ttl, self._expire_lease, lease,
                                                          renewals)

    def _expire_lease(self, lease: int, renewals: int) -> None:
        self._lease_timers.pop(lease, None)
        store = self._store()
        if not self.armed or store.lease_renewals.get(lease) != renewals:
            return

        def failed(failure: Failure) -> None:
            if self.armed:
                self.log.info("Expiry of lease {lease} not committed ({why}); retrying",
                              lease=lease, why=failure.getErrorMessage())
                self._lease_timers[lease] = self._clock.callLater(
                    RETRY_SECONDS, self._expire_lease, lease, renewals)

        try:
            d = self._submit([lease_expire_command(lease, renewals)])
        except Exception:
            failed(Failure())
            return
        d.addErrback(failed)

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

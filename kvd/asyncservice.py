"""
A service tree whose parts start in order and stop in reverse, each with a Deferred.

Twisted's ``MultiService`` starts its children all at once and ignores what
``startService`` returns; a node's parts depend on each other (the node needs
the recovered WAL, the coordinator needs the node), so each must finish
starting before the next begins. The shape is buildbot's ``AsyncMultiService``.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService, MultiService
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.python.failure import Failure


def _start(_: object, child: IService) -> Deferred[Any]:
    return maybeDeferred(child.startService)


class AsyncMultiService(MultiService):
    """Children start one after the other, in the order they were added, and stop
    in reverse; ``startService`` and ``stopService`` return Deferreds.

    A child that fails to start stops the chain: the children after it are not
    started, and the failure is what ``startService`` returns.
    """

    def startService(self) -> Deferred[None]:
        # Service.startService only sets the flag; MultiService's would start all at once.
        self.running = 1
        d: Deferred[Any] = succeed(None)
        for child in list(self):
            d.addCallback(_start, child)
        return d.addCallback(lambda _: None)

    def stopService(self) -> Deferred[None]:
        """Stop every running child, the last started first; a failure to stop
        one is passed on after the others were stopped."""
        self.running = 0
        d: Deferred[Any] = succeed(None)
        failures: list[Failure] = []

        def stop(_: object, child: Any) -> Deferred[Any]:
            if not child.running:
                return succeed(None)
            return maybeDeferred(child.stopService).addErrback(failures.append)

        for child in reversed(list(self)):
            d.addCallback(stop, child)

        def done(_: object) -> Failure | None:
            return failures[0] if failures else None

        return d.addCallback(done)

"""
Monotonic time for the reactor and for durations: TTLs, deadlines, liveness.

Twisted's reactor reads the wall clock (``reactor.seconds`` is ``time.time``),
so an NTP step forward fires every timer due within the step at once (keys
expire early, writes time out, a leader resigns) and a step backwards makes
every pending timer late by the step (heartbeats stop, so does the node).
``use_monotonic_time`` makes a reactor measure with ``time.monotonic``
instead; the node also measures its own durations on a ``MonotonicClock``,
which re-arms a timer that its reactor fires early, so that it holds on any
reactor. Tests pass ``task.Clock`` instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from twisted.internet.error import AlreadyCancelled
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from zope.interface import implementer


def use_monotonic_time(reactor: Any, monotonic: Callable[[], float] = time.monotonic) -> None:
    """Make ``reactor`` measure time monotonically, timers already scheduled included.

    ``seconds`` is a method that every ``callLater`` and the main loop read;
    Twisted offers no other way to choose its clock. The timers scheduled so far
    are moved onto the new time base by one shift, which keeps their order.
    """
    if getattr(reactor, "seconds", None) is monotonic:
        return
    shift = monotonic() - reactor.seconds()
    # getDelayedCalls leaves out cancelled timers that still sit in the heap;
    # ReactorBase keeps them in these two lists, which is where all must move.
    queued = [*getattr(reactor, "_pendingTimedCalls", ()), *getattr(reactor, "_newTimedCalls", ())]
    for call in queued or reactor.getDelayedCalls():
        call.time += shift
        call.seconds = monotonic
    reactor.seconds = monotonic


@implementer(IDelayedCall)
class _MonotonicCall:
    """One timer of a ``MonotonicClock``."""

    def __init__(self, clock: MonotonicClock, when: float, f: Callable[..., Any],
                 args: tuple[Any, ...], kw: dict[str, Any]) -> None:
        self._clock = clock
        self._when = when
        self._call: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]] | None = (
            f, args, kw)
        self._wakeup: IDelayedCall | None = None
        self._arm()

    def _arm(self) -> None:
        delay = max(0.0, self._when - self._clock.seconds())
        self._wakeup = self._clock.reactor.callLater(delay, self._fire)

    def _fire(self) -> None:
        self._wakeup = None
        if self._clock.seconds() < self._when:
            self._arm()  # the wall clock jumped forward; not yet due
            return
        call, self._call = self._call, None
        self._clock.forget(self)
        if call is not None:
            f, args, kw = call
            f(*args, **kw)

    def getTime(self) -> float:
        return self._when

    def cancel(self) -> None:
        if self._call is None:
            raise AlreadyCancelled()
        self._call = None
        self._clock.forget(self)
        if self._wakeup is not None and self._wakeup.active():
            self._wakeup.cancel()
        self._wakeup = None

    def delay(self, secondsLater: float) -> None:
        self._when += secondsLater
        self._rearm()

    def reset(self, secondsFromNow: float) -> None:
        self._when = self._clock.seconds() + secondsFromNow
        self._rearm()

    def _rearm(self) -> None:
        if self._wakeup is not None and self._wakeup.active():
            self._wakeup.cancel()
        self._arm()

    def active(self) -> bool:
        return self._call is not None


@implementer(IReactorTime)
class MonotonicClock:
    """``callLater`` and ``seconds`` on ``time.monotonic``, woken by ``reactor``."""

    def __init__(self, reactor: IReactorTime,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.reactor = reactor
        self._monotonic = monotonic
        self._calls: set[_MonotonicCall] = set()

    def seconds(self) -> float:
        return self._monotonic()

    def callLater(self, delay: float, callable: Callable[..., Any], *args: Any,
                  **kw: Any) -> IDelayedCall:
        call = _MonotonicCall(self, self.seconds() + delay, callable, args, kw)
        self._calls.add(call)
        return call

    def forget(self, call: _MonotonicCall) -> None:
        self._calls.discard(call)

    def getDelayedCalls(self) -> list[IDelayedCall]:
        return list(self._calls)

"""The monotonic clock that TTLs, write deadlines and liveness are measured on."""

from __future__ import annotations

import pytest
from twisted.internet.error import AlreadyCancelled
from twisted.internet.task import Clock

from kvd.clock import MonotonicClock, use_monotonic_time


class Monotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def clocks() -> tuple[Clock, Monotonic, MonotonicClock]:
    wall, monotonic = Clock(), Monotonic()
    return wall, monotonic, MonotonicClock(wall, monotonic)


# Fails if: _MonotonicCall._fire runs the call without checking the monotonic deadline.
def test_a_wall_clock_step_forward_does_not_fire_timers_early() -> None:
    wall, monotonic, clock = clocks()
    fired: list[str] = []
    clock.callLater(10, fired.append, "expired")
    wall.advance(3600)  # NTP steps the wall clock an hour ahead
    assert fired == [] and len(clock.getDelayedCalls()) == 1
    monotonic.now += 9  # from here both clocks run at the same pace again
    wall.advance(9)
    assert fired == []
    monotonic.now += 1
    wall.advance(1)
    assert fired == ["expired"] and clock.getDelayedCalls() == []


def test_timers_fire_in_time_cancel_and_reset() -> None:
    wall, monotonic, clock = clocks()
    fired: list[int] = []
    call = clock.callLater(5, fired.append, 1)
    assert call.getTime() == 105.0 and clock.seconds() == 100.0
    call.reset(10)
    monotonic.now += 5
    wall.advance(5)
    assert fired == [] and call.active()
    monotonic.now += 5
    wall.advance(5)
    assert fired == [1] and not call.active()
    other = clock.callLater(1, fired.append, 2)
    other.cancel()
    with pytest.raises(AlreadyCancelled):
        other.cancel()
    monotonic.now += 2
    wall.advance(2)
    assert fired == [1] and clock.getDelayedCalls() == []


# Fails if: use_monotonic_time leaves the reactor's seconds on the wall clock.
def test_a_reactor_on_monotonic_time_keeps_its_timers_and_their_order() -> None:
    from twisted.internet.base import ReactorBase

    class Reactor(ReactorBase):  # a reactor's timers without an event loop
        def installWaker(self) -> None:
            pass

    reactor = Reactor()
    fired: list[str] = []
    reactor.callLater(2, fired.append, "second")
    reactor.callLater(1, fired.append, "first")
    monotonic = Monotonic()
    use_monotonic_time(reactor, monotonic)
    assert reactor.seconds() == 100.0
    reactor.callLater(3, fired.append, "third")
    times = sorted(c.getTime() for c in reactor.getDelayedCalls())
    assert times == pytest.approx([101.0, 102.0, 103.0], abs=0.1)
    monotonic.now = 102.5
    reactor.runUntilCurrent()
    assert fired == ["first", "second"]

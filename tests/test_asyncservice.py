"""The service tree's order: start one after the other, stop in reverse."""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, succeed

from kvd.asyncservice import AsyncMultiService


class Part(Service):
    """A child that records its start and stop, optionally waiting on a Deferred."""

    def __init__(self, name: str, events: list[str],
                 starting: Deferred[None] | None = None,
                 stopping: Deferred[None] | None = None) -> None:
        self.name = name
        self.events = events
        self.starting = starting
        self.stopping = stopping

    def startService(self) -> Deferred[None]:
        super().startService()
        self.events.append(f"start {self.name}")
        return self.starting if self.starting is not None else succeed(None)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        self.events.append(f"stop {self.name}")
        return self.stopping if self.stopping is not None else succeed(None)


def tree(*parts: Part) -> AsyncMultiService:
    top = AsyncMultiService()
    for part in parts:
        part.setServiceParent(top)
    return top


def test_a_child_starts_only_once_the_one_before_it_has_started() -> None:
    events: list[str] = []
    slow: Deferred[None] = Deferred()
    top = tree(Part("storage", events, starting=slow), Part("node", events))
    done: list[object] = []
    top.startService().addCallback(done.append)
    assert events == ["start storage"]
    assert done == []
    slow.callback(None)
    assert events == ["start storage", "start node"]
    assert done == [None]


def test_children_stop_in_reverse_each_after_the_one_after_it_has_stopped() -> None:
    events: list[str] = []
    slow: Deferred[None] = Deferred()
    top = tree(Part("listener", events), Part("storage", events),
               Part("node", events, stopping=slow))
    top.startService()
    done: list[object] = []
    top.stopService().addCallback(done.append)
    assert events[3:] == ["stop node"]
    assert done == []
    slow.callback(None)
    assert events[3:] == ["stop node", "stop storage", "stop listener"]
    assert done == [None]


def test_a_child_that_fails_to_start_stops_the_chain_and_is_not_stopped() -> None:
    events: list[str] = []
    top = tree(Part("listener", events),
               Part("storage", events, starting=fail(OSError("disk gone"))),
               Part("node", events))
    started = top.startService()
    failures: list[object] = []
    started.addErrback(failures.append)
    assert events == ["start listener", "start storage"]
    assert len(failures) == 1
    top.stopService()
    # Only what started is stopped; storage's start failed but it did run.
    assert events[2:] == ["stop storage", "stop listener"]


def test_a_failure_to_stop_one_child_still_stops_the_others() -> None:
    events: list[str] = []
    top = tree(Part("listener", events), Part("node", events, stopping=fail(OSError("x"))))
    top.startService()
    failures: list[object] = []
    top.stopService().addErrback(failures.append)
    assert events[2:] == ["stop node", "stop listener"]
    assert len(failures) == 1

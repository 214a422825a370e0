"""A reactor clock and a thread pool that run everything at once, on the calling
thread: for unit tests and ``kvd.client.testing``, where no reactor runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure


class InlinePool:
    """A thread pool that runs each job at once on the calling thread."""

    def callInThreadWithCallback(
        self, onResult: Callable[[bool, Any], None], f: Callable[..., Any], *a: Any, **kw: Any
    ) -> None:
        try:
            result = f(*a, **kw)
        except BaseException:
            onResult(False, Failure())
        else:
            onResult(True, result)


class InlineReactor(Clock):
    """A ``Clock`` whose ``callFromThread`` runs at once: threads are inline here."""

    def callFromThread(self, f: Callable[..., Any], *a: Any, **kw: Any) -> None:
        f(*a, **kw)


def inline_defer_to_thread(f: Callable[..., Any], *a: Any, **kw: Any) -> Deferred[Any]:
    """``deferToThread`` without threads: run ``f`` at once on the calling thread."""
    return maybeDeferred(f, *a, **kw)

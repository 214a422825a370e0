"""
Failed logins, limited per user and source, on the node's monotonic clock.

After ``attempts`` failures within ``window`` seconds a (user, source) pair
is refused until the oldest failure ages out; a success clears it. The
table is bounded, so a flood of made-up names cannot grow it without end.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

MAX_TRACKED = 10_000


class LoginLimiter:
    def __init__(self, now: Callable[[], float], attempts: int = 5,
                 window: float = 60.0) -> None:
        self._now = now
        self.attempts = attempts
        self.window = window
        self._failures: dict[tuple[str, str], deque[float]] = {}

    def _recent(self, who: tuple[str, str]) -> deque[float]:
        failures = self._failures.get(who)
        if failures is None:
            return deque()
        cutoff = self._now() - self.window
        while failures and failures[0] <= cutoff:
            failures.popleft()
        if not failures:
            del self._failures[who]
        return failures

    def retry_after(self, name: str, source: str) -> float | None:
        """Seconds until ``name`` may try again from ``source``; None if it may now."""
        failures = self._recent((name, source))
        if len(failures) < self.attempts:
            return None
        return max(0.0, failures[0] + self.window - self._now())

    def failed(self, name: str, source: str) -> None:
        if len(self._failures) >= MAX_TRACKED:
            for who in list(self._failures):
                self._recent(who)
            if len(self._failures) >= MAX_TRACKED:
                self._failures.pop(next(iter(self._failures)))
        self._failures.setdefault((name, source), deque()).append(self._now())

    def succeeded(self, name: str, source: str) -> None:
        self._failures.pop((name, source), None)

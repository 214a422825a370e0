"""
A test-only hook that steps the wall clock of a twistd kvd process.

An NTP step moves the wall clock (``time.time``) at once, forward or back.
kvd measures every duration on monotonic time (its reactor included:
``kvd.clock.use_monotonic_time``), so a step must change nothing but the
timestamps. The torture nemesis ``clock-step`` checks that, on one node,
without touching the machine's clock:

* with ``KVD_TESTING_WALL_CLOCK_FILE`` in its environment, a kvd process
  (``kvd.tap.makeService``) replaces ``time.time`` with the real wall clock
  plus an offset (float seconds, may be negative) read from that file when
  installed and again on every ``SIGUSR2``; whatever reads the wall clock
  (Twisted's default reactor time, logs, kazoo) sees the step;
* the nemesis writes the file (:func:`write_offset`, atomically) and sends
  ``SIGUSR2``; it heals by writing 0 and signalling again.

Without the environment variable nothing is installed. Never set it in
production.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

#: Environment variable naming the offset file; the hook is off without it.
ENV = "KVD_TESTING_WALL_CLOCK_FILE"
#: The signal that makes the process re-read the offset file.
SIGNAL = signal.SIGUSR2


def read_offset(path: str) -> float:
    """The offset in ``path`` (seconds); 0 if the file is missing, empty or unreadable."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
        return float(text) if text else 0.0
    except (OSError, ValueError):
        return 0.0


def write_offset(path: str, offset: float) -> None:
    """Write ``offset`` to ``path`` atomically (a reader sees the old or the new value)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="ascii") as f:
        f.write(f"{offset!r}\n")
    os.replace(tmp, path)


class WallClock:
    """``seconds()`` is ``time.time() + offset``; ``reload()`` re-reads the offset file."""

    def __init__(self, path: str, now: Callable[[], float] = time.time) -> None:
        self.path = path
        self._now = now
        self.offset = read_offset(path)

    def seconds(self) -> float:
        return self._now() + self.offset

    def reload(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        """Re-read the offset (also the signal handler: it only reads a tiny file)."""
        self.offset = read_offset(self.path)


def install(target: Any = time, environ: Mapping[str, str] | None = None,
            handle_signal: bool = True) -> WallClock | None:
    """Make ``target.time`` (the ``time`` module's) read the stepped clock, if
    ``$KVD_TESTING_WALL_CLOCK_FILE``.

    Returns the clock installed, or None (variable unset: nothing changes).
    The ``SIGUSR2`` handler is installed only from the main thread.
    """
    path = (os.environ if environ is None else environ).get(ENV)
    if not path:
        return None
    clock = WallClock(path, now=target.time)
    target.time = clock.seconds
    if handle_signal:
        # Handler first, then read again: a step written in between is not missed (the
        # nemesis signals only a process that catches the signal, see catches_signal).
        signal.signal(SIGNAL, clock.reload)
        clock.reload()
    return clock


def catches_signal(pid: int, signum: int = SIGNAL) -> bool:
    """Whether process ``pid`` has a handler for ``signum`` (Linux ``/proc``; False if unknown).

    Sending ``SIGUSR2`` to a process that does not catch it yet would kill it.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    except (OSError, ValueError):
        return False
    return False


def install_if_configured() -> WallClock | None:
    """:func:`install` on the ``time`` module, when the hook is on."""
    if not os.environ.get(ENV):
        return None
    return install()


__all__ = ["ENV", "SIGNAL", "WallClock", "catches_signal", "install", "install_if_configured",
           "read_offset", "write_offset"]

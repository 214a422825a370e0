"""Tests for kvd.testing.wallclock: the test-only hook that steps a process's wall clock."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import SimpleNamespace

from kvd.testing import wallclock


def test_read_offset_is_zero_unless_the_file_holds_a_number(tmp_path: Path) -> None:
    path = tmp_path / "offset"
    assert wallclock.read_offset(str(path)) == 0.0
    path.write_text("")
    assert wallclock.read_offset(str(path)) == 0.0
    path.write_text("soon\n")
    assert wallclock.read_offset(str(path)) == 0.0
    path.write_text(" -42.5\n")
    assert wallclock.read_offset(str(path)) == -42.5


def test_write_offset_round_trips_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = str(tmp_path / "offset")
    wallclock.write_offset(path, 73.25)
    assert wallclock.read_offset(path) == 73.25
    wallclock.write_offset(path, 0.0)
    assert wallclock.read_offset(path) == 0.0
    assert os.listdir(tmp_path) == ["offset"]


def test_the_clock_adds_the_offset_read_at_start_and_on_reload(tmp_path: Path) -> None:
    path = str(tmp_path / "offset")
    wallclock.write_offset(path, 60.0)
    clock = wallclock.WallClock(path, now=lambda: 1000.0)
    assert clock.seconds() == 1060.0
    wallclock.write_offset(path, -120.0)
    assert clock.seconds() == 1060.0  # not re-read until told
    clock.reload()
    assert clock.seconds() == 880.0


def test_install_does_nothing_without_the_environment_variable() -> None:
    original = object()
    target = SimpleNamespace(time=original)
    assert wallclock.install(target, environ={}) is None
    assert target.time is original


def test_install_steps_the_wall_clock(tmp_path: Path) -> None:
    path = str(tmp_path / "offset")
    wallclock.write_offset(path, 3600.0)
    target = SimpleNamespace(time=lambda: 1000.0)
    clock = wallclock.install(target, environ={wallclock.ENV: path}, handle_signal=False)
    assert clock is not None and target.time == clock.seconds
    assert clock.offset == 3600.0 and target.time() == 4600.0


def test_sigusr2_makes_the_process_reread_the_offset(tmp_path: Path) -> None:
    path = str(tmp_path / "offset")
    previous = signal.getsignal(wallclock.SIGNAL)
    try:
        target = SimpleNamespace(time=lambda: 1000.0)
        clock = wallclock.install(target, environ={wallclock.ENV: path})
        assert clock is not None and clock.offset == 0.0
        assert wallclock.catches_signal(os.getpid())
        wallclock.write_offset(path, -90.0)
        signal.raise_signal(wallclock.SIGNAL)  # the handler runs before this returns
        assert clock.offset == -90.0
    finally:
        signal.signal(wallclock.SIGNAL, previous)
    assert wallclock.catches_signal(os.getpid()) == callable(previous)


def test_catches_signal_is_false_for_a_process_that_does_not_exist() -> None:
    assert not wallclock.catches_signal(2**22 + 12345)

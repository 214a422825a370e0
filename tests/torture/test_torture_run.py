"""A short torture run of a real cluster under every fault, through the Python API.

About 70 s: ZooKeeper and three ``twistd kvd`` nodes behind peer proxies, six
clients, each fault of ``kvd.torture.nemesis.FAULTS`` at least once (fixed
seed), then every check of ``kvd.torture.run``. A failure prints the report;
the run directory under ``tmp_path`` keeps the history and the node logs.
"""

from __future__ import annotations

from pathlib import Path

import pytest_twisted
from twisted.internet import reactor

from kvd.torture.nemesis import FAULTS
from kvd.torture.run import Report, TortureConfig, run_torture


async def _run_and_check(config: TortureConfig) -> Report:
    """Run, print the report, and assert the run and every check passed."""
    report = await run_torture(reactor, config)
    text = report.format()
    print(text)
    assert report.error is None, text
    failed = [check.name for check in report.checks if not check.passed]
    assert not failed, text
    assert report.passed, text
    return report


@pytest_twisted.ensureDeferred
async def test_a_mixed_fault_run_passes_every_check(tmp_path: Path) -> None:
    report = await _run_and_check(TortureConfig(
        duration=60.0, clients=6, faults=FAULTS, seed=7, workdir=str(tmp_path),
        quiet_before=3.0, quiet_after=8.0, check_budget=30.0))
    injected = {fault.name for fault in report.faults if fault.injected}
    assert injected == set(FAULTS), report.format()


@pytest_twisted.ensureDeferred
async def test_grow_and_shrink_under_load_pass_every_check(tmp_path: Path) -> None:
    """Five nodes, three voters: grow-shrink promotes both learners (3 -> 5 voters)
    and removes as many of the old voters (5 -> 3), one change at a time, while
    the clients write; then the linearizability checker and every other check."""
    report = await _run_and_check(TortureConfig(
        duration=40.0, clients=6, nodes=5, replicas=3,
        faults=("grow-shrink", "kill-follower", "leader-transfer"), seed=11,
        workdir=str(tmp_path), quiet_before=3.0, quiet_after=8.0, check_budget=30.0))
    assert [f for f in report.faults if f.name == "grow-shrink" and f.injected], (
        report.format())

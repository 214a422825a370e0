"""
``python -m kvd.torture``: one torture run of a real kvd cluster, then its checks.

Prints operations by outcome, the faults injected, throughput before, during
and after the faults and each check's verdict; exits 1 on any violation (the
run directory keeps the history and the node logs), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from kvd.torture.nemesis import EXTRA_FAULTS, FAULTS
from kvd.torture.run import TortureConfig, run_blocking


def _faults(text: str) -> tuple[str, ...]:
    """Parse ``--faults``: a comma-separated list, ``all`` or ``none``."""
    if text.strip() in ("", "none"):
        return ()
    if text.strip() == "all":
        return FAULTS
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in FAULTS and n not in EXTRA_FAULTS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown fault(s) {', '.join(unknown)}; known: "
            f"{', '.join((*FAULTS, *EXTRA_FAULTS))}")
    return names


def parse_args(argv: Sequence[str] | None) -> TortureConfig:
    """The command line as a :class:`TortureConfig`."""
    d = TortureConfig()
    p = argparse.ArgumentParser(
        prog="python -m kvd.torture",
        description="Torture a real kvd cluster with concurrent clients and faults, then "
                    "check linearizability, durability, convergence and availability.")
    p.add_argument("--duration", type=float, default=d.duration,
                   help="planned seconds of client load (default %(default)s)")
    p.add_argument("--clients", type=int, default=d.clients,
                   help="concurrent clients (default %(default)s)")
    p.add_argument("--faults", type=_faults, default=",".join(d.faults),
                   help=f"comma-separated faults, 'all' or 'none' (default all: "
                        f"{','.join(FAULTS)})")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed (default %(default)s)")
    p.add_argument("--workdir", default=None,
                   help="directory for the run directory (default: a new temporary one)")
    p.add_argument("--nodes", type=int, default=d.nodes, help="cluster size (default 3)")
    p.add_argument("--replicas", type=int, default=None,
                   help="voters to start with (default: every node); the others join "
                        "as learners, for the grow-shrink fault")
    p.add_argument("--keys", type=int, default=d.keys, help="keys worked on (default 5)")
    p.add_argument("--session-timeout", type=float, default=d.session_timeout,
                   help="kvd ZooKeeper session timeout, seconds (default %(default)s)")
    p.add_argument("--write-timeout", type=float, default=d.write_timeout,
                   help="kvd --write-timeout, seconds (default %(default)s)")
    p.add_argument("--request-timeout", type=float, default=d.request_timeout,
                   help="client timeout per request, seconds (default %(default)s)")
    p.add_argument("--snapshot-entries", type=int, default=d.snapshot_entries,
                   help="kvd --snapshot-entries (default %(default)s)")
    p.add_argument("--quiet-before", type=float, default=d.quiet_before,
                   help="seconds without faults at the start (default %(default)s)")
    p.add_argument("--quiet-after", type=float, default=d.quiet_after,
                   help="seconds without faults after the last heal (default %(default)s)")
    p.add_argument("--recovery-bound", type=float, default=d.recovery_bound,
                   help="writes must resume within this after a heal (default %(default)s)")
    p.add_argument("--check-budget", type=float, default=d.check_budget,
                   help="linearizability search seconds per key (default %(default)s)")
    p.add_argument("--think", type=float, default=d.think,
                   help="max random pause between a client's calls, seconds (default 0)")
    p.add_argument("--retries", type=int, default=d.retries,
                   help="retries of a write of unknown outcome, same Idempotency-Key "
                        "(default %(default)s)")
    p.add_argument("--keep-data", action="store_true",
                   help="keep node data dirs after a passing run too")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    a = p.parse_args(argv)
    faults = a.faults if isinstance(a.faults, tuple) else _faults(a.faults)
    if a.clients < 1 or a.nodes < 1 or a.keys < 1 or a.duration <= 0:
        p.error("--clients, --nodes, --keys and --duration must be positive")
    if a.replicas is not None and not 1 <= a.replicas <= a.nodes:
        p.error("--replicas must be from 1 to --nodes")
    if not a.verbose:
        # The torture process's own kazoo client (forced session expiry) logs through
        # the standard library; its reconnection chatter is not part of the report.
        kazoo = logging.getLogger("kazoo")
        kazoo.addHandler(logging.NullHandler())
        kazoo.propagate = False
    if a.verbose:
        globalLogBeginner.beginLoggingTo([FilteringLogObserver(
            textFileLogObserver(sys.stderr),
            [LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)])], redirectStandardIO=False)
    return TortureConfig(
        duration=a.duration, clients=a.clients, faults=faults, seed=a.seed,
        workdir=a.workdir, nodes=a.nodes, replicas=a.replicas, keys=a.keys,
        session_timeout=a.session_timeout,
        write_timeout=a.write_timeout, request_timeout=a.request_timeout,
        snapshot_entries=a.snapshot_entries, quiet_before=a.quiet_before,
        quiet_after=a.quiet_after, recovery_bound=a.recovery_bound,
        check_budget=a.check_budget, think=a.think, retries=a.retries, keep_data=a.keep_data,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run, print the report; 0 if every check passed, 1 otherwise."""
    config = parse_args(argv)
    report = run_blocking(config)
    print(report.format(), flush=True)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())

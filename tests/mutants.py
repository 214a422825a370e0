"""
Mutation check of the safety tests: ``python -m tests.mutants [--only ID ...] [--jobs N]``.

What: ``tests/mutants.toml`` lists documented mutations, one per "Fails if:" comment
above a safety test (``tests/replication/safety/``): a one-line change to
``kvd`` and the tests that must fail with it. For each entry this script copies
the working tree (tracked plus untracked-but-not-ignored files, uncommitted edits
included) into a fresh temporary directory, applies the replacement there, and
runs those tests against the mutated copy. A mutant is KILLED when pytest reports
failing tests (exit code 1), SURVIVED when they pass (0), and ERROR for any other
outcome (collection error, no tests, a timeout). An entry whose ``find`` text no
longer occurs exactly once in its file is STALE: the code moved on and the entry
must be re-read against it.

Why: a "Fails if" comment is a claim that the test catches a specific bug. Code
changes can silently turn the test into one that passes whatever the code does;
running the mutants keeps the claims true, and STALE entries flag comments that
no longer describe the source.

Every run first checks the unmutated snapshot: the union of the listed tests must
pass there, or no verdict would mean anything. The working tree is snapshotted
once, so the baseline and every mutant test the same code even while someone
edits it. Each copy is imported from the copy itself (cwd and PYTHONPATH), not
through the editable install of the repository; a small pytest plugin written
into the copy checks this after collection, and that the mutated module was
imported with the mutated text. The exit status is non-zero when the baseline
fails or any mutant SURVIVED, was STALE or ended in ERROR.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TABLE = REPO / "tests" / "mutants.toml"
DEFAULT_JOBS = 2
DEFAULT_TIMEOUT = 300.0
PYTEST_ARGS = ("-m", "pytest", "-x", "-q", "-p", "no:cacheprovider")

KILLED, SURVIVED, STALE, ERROR, TIMEOUT = "KILLED", "SURVIVED", "STALE", "ERROR", "TIMEOUT"

GUARD_MODULE = "_kvd_mutant_guard"
GUARD_EXIT = 3
GUARD_SOURCE = '''\
"""Written by tests/mutants.py: fail the run if kvd is not imported from this copy."""

import hashlib
import importlib
import os
import sys

import pytest

GUARD_EXIT = @GUARD_EXIT@


def pytest_collection_finish(session):
    root = os.path.realpath(os.environ["KVD_MUTANT_ROOT"]) + os.sep
    wrong = sorted(
        f"{name} from {module.__file__}" for name, module in list(sys.modules.items())
        if (name == "kvd" or name.startswith("kvd."))
        and getattr(module, "__file__", None)
        and not os.path.realpath(module.__file__).startswith(root))
    if wrong:
        pytest.exit("MUTANT-GUARD: kvd imported from outside the copy: " + ", ".join(wrong),
                    returncode=GUARD_EXIT)
    name = os.environ.get("KVD_MUTANT_MODULE")
    if name:
        module = importlib.import_module(name)
        with open(module.__file__, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        if digest != os.environ["KVD_MUTANT_SHA256"]:
            pytest.exit(f"MUTANT-GUARD: {module.__file__} is not the mutated file",
                        returncode=GUARD_EXIT)
'''.replace("@GUARD_EXIT@", str(GUARD_EXIT))


@dataclass(frozen=True)
class Mutant:
    """One documented mutation and the tests that must catch it."""

    id: str
    rule: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    """What running one mutant (or the baseline) gave."""

    verdict: str
    seconds: float
    detail: str = ""


def load_table(path: Path) -> list[Mutant]:
    """Parse and validate the ``[[mutant]]`` entries of ``path``."""
    with open(path, "rb") as f:
        data = tomllib.load(f)
    mutants: list[Mutant] = []
    seen: set[str] = set()
    for n, raw in enumerate(data.get("mutant", []), 1):
        missing = [k for k in ("id", "rule", "file", "find", "replace", "tests") if k not in raw]
        if missing:
            raise SystemExit(f"{path}: mutant #{n} lacks {', '.join(missing)}")
        tests = raw["tests"]
        if not isinstance(tests, list) or not tests or not all(isinstance(t, str) for t in tests):
            raise SystemExit(f"{path}: mutant {raw['id']!r}: tests must be a non-empty list")
        if raw["id"] in seen:
            raise SystemExit(f"{path}: duplicate mutant id {raw['id']!r}")
        if raw["find"] == raw["replace"]:
            raise SystemExit(f"{path}: mutant {raw['id']!r}: replace equals find")
        seen.add(raw["id"])
        mutants.append(Mutant(str(raw["id"]), str(raw["rule"]), str(raw["file"]),
                              str(raw["find"]), str(raw["replace"]), tuple(tests)))
    if not mutants:
        raise SystemExit(f"{path}: no [[mutant]] entries")
    return mutants


def snapshot_tree(destination: Path) -> int:
    """Copy the working tree's tracked and untracked-but-not-ignored files; returns a count."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, check=True, capture_output=True).stdout
    count = 0
    for name in sorted(set(listed.decode().split("\0")) - {""}):
        source = REPO / name
        if not source.is_file():  # deleted in the working tree but still in the index
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
        count += 1
    return count


def module_name(file: str) -> str | None:
    """The importable name of a ``.py`` file of the copy, e.g. ``kvd.replication.log``."""
    if not file.endswith(".py"):
        return None
    parts = list(Path(file).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def run_pytest(copy: Path, tests: Sequence[str], timeout: float,
               mutated: tuple[str, bytes] | None = None) -> Outcome:
    """Run ``tests`` in ``copy`` with the copy first on the path; classify the exit code."""
    (copy / f"{GUARD_MODULE}.py").write_text(GUARD_SOURCE, encoding="utf-8")
    env = dict(os.environ)
    env.update(PYTHONPATH=str(copy), KVD_MUTANT_ROOT=str(copy), PYTHONDONTWRITEBYTECODE="1")
    env.pop("KVD_MUTANT_MODULE", None)
    if mutated is not None:
        name = module_name(mutated[0])
        if name is not None:
            env.update(KVD_MUTANT_MODULE=name,
                       KVD_MUTANT_SHA256=hashlib.sha256(mutated[1]).hexdigest())
    command = [sys.executable, *PYTEST_ARGS, "-p", GUARD_MODULE, *tests]
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=copy, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return Outcome(TIMEOUT, time.monotonic() - started,
                       f"no result within {timeout:g}s\n{tail(output)}")
    seconds = time.monotonic() - started
    if process.returncode == 1:
        return Outcome(KILLED, seconds, tail(output, 3))
    if process.returncode == 0:
        return Outcome(SURVIVED, seconds, tail(output, 3))
    return Outcome(ERROR, seconds, f"pytest exit code {process.returncode}\n{tail(output)}")


def tail(output: str, lines: int = 15) -> str:
    return "\n".join(output.rstrip().splitlines()[-lines:])


def run_mutant(mutant: Mutant, source: Path, work: Path, timeout: float) -> Outcome:
    """Copy the snapshot, apply ``mutant`` and run its tests."""
    started = time.monotonic()
    target = source / mutant.file
    if not target.is_file():
        return Outcome(STALE, 0.0, f"{mutant.file} does not exist")
    text = target.read_text(encoding="utf-8")
    found = text.count(mutant.find)
    if found != 1:
        return Outcome(STALE, 0.0, f"find text occurs {found} times in {mutant.file}")
    copy = Path(tempfile.mkdtemp(prefix=f"{mutant.id}-", dir=work))
    shutil.copytree(source, copy, dirs_exist_ok=True)
    mutated = text.replace(mutant.find, mutant.replace).encode("utf-8")
    (copy / mutant.file).write_bytes(mutated)
    outcome = run_pytest(copy, mutant.tests, timeout, (mutant.file, mutated))
    shutil.rmtree(copy, ignore_errors=True)
    return Outcome(outcome.verdict, time.monotonic() - started, outcome.detail)


def union(mutants: Sequence[Mutant]) -> list[str]:
    """Every listed test once, in table order."""
    return list(dict.fromkeys(t for m in mutants for t in m.tests))


def print_table(mutants: Sequence[Mutant], outcomes: Sequence[Outcome]) -> None:
    rows = [("id", "rule", "file", "verdict", "seconds")]
    rows += [(m.id, m.rule, m.file, o.verdict, f"{o.seconds:.1f}")
             for m, o in zip(mutants, outcomes, strict=True)]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for n, row in enumerate(rows):
        print(" | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("-+-".join("-" * w for w in widths))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.mutants", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="ID", help="run only these mutants")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS,
                        help=f"mutants run in parallel (default {DEFAULT_JOBS})")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds per pytest run (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--table", type=Path, default=TABLE, help="the mutant table (TOML)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    mutants = load_table(args.table)
    if args.only:
        unknown = sorted(set(args.only) - {m.id for m in mutants})
        if unknown:
            raise SystemExit(f"unknown mutant ids: {', '.join(unknown)}")
        mutants = [m for m in mutants if m.id in args.only]
    with tempfile.TemporaryDirectory(prefix="kvd-mutants-") as tmp:
        work = Path(tmp)
        source = work / "snapshot"
        files = snapshot_tree(source)
        tests = union(mutants)
        print(f"Snapshot of {files} files of {REPO}; baseline: {len(tests)} tests unmutated",
              flush=True)
        baseline_copy = work / "baseline"
        shutil.copytree(source, baseline_copy)
        baseline = run_pytest(baseline_copy, tests, args.timeout)
        if baseline.verdict != SURVIVED:  # i.e. the unmutated tests did not all pass
            print(f"BASELINE FAILED ({baseline.verdict}, {baseline.seconds:.1f}s): the listed "
                  "tests do not pass on the unmutated tree; no mutant was run.")
            print(baseline.detail)
            return 2
        print(f"Baseline passed in {baseline.seconds:.1f}s; running {len(mutants)} mutants "
              f"with {args.jobs} jobs", flush=True)
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            outcomes = list(pool.map(
                lambda m: run_mutant(m, source, work, args.timeout), mutants))
    print_table(mutants, outcomes)
    counts = {v: sum(o.verdict == v for o in outcomes)
              for v in (KILLED, SURVIVED, STALE, ERROR, TIMEOUT)}
    print(f"{len(mutants)} mutants: " + ", ".join(f"{n} {v}" for v, n in counts.items()))
    for mutant, outcome in zip(mutants, outcomes, strict=True):
        if outcome.verdict != KILLED:
            print(f"\n{mutant.id} {outcome.verdict}: {mutant.file}\n{outcome.detail}")
    return 0 if counts[KILLED] == len(mutants) else 1


if __name__ == "__main__":
    sys.exit(main())

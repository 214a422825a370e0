"""Tests for kvd.torture.checker: hand-made histories plus simulated ones via Hypothesis."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvd.torture.checker import (
    CAS,
    DELETE,
    FAIL,
    GET,
    ILLEGAL,
    MISMATCH,
    NOTFOUND,
    OK,
    PUT,
    UNKNOWN,
    CheckResult,
    Operation,
    check_history,
    load_history,
    main,
    save_history,
)

REPO = Path(__file__).resolve().parents[2]

# --------------------------------------------------------------------------------------------
# helpers to write histories by hand


def put(
    client: int,
    value: Any,
    t0: float,
    t1: float | None,
    rev: int | None,
    *,
    key: str = "k",
    outcome: str = OK,
) -> Operation:
    """A put record; ``outcome=UNKNOWN`` ignores ``t1``/``rev`` as a timeout would."""
    if outcome == UNKNOWN:
        t1, rev = None, None
    return Operation(client, key, PUT, (value,), t0, t1, outcome, rev)


def get(client: int, t0: float, t1: float, value: Any, rev: int, *, key: str = "k") -> Operation:
    """A get record that returned ``(value, rev)``."""
    return Operation(client, key, GET, (), t0, t1, OK, (value, rev))


def cas(
    client: int,
    expected: int,
    value: Any,
    t0: float,
    t1: float | None,
    output: Any,
    *,
    key: str = "k",
    outcome: str = OK,
) -> Operation:
    """A cas record; ``output`` is the new revision or MISMATCH."""
    if outcome == UNKNOWN:
        t1, output = None, None
    return Operation(client, key, CAS, (expected, value), t0, t1, outcome, output)


def delete(
    client: int,
    t0: float,
    t1: float | None,
    output: Any,
    *,
    key: str = "k",
    outcome: str = OK,
) -> Operation:
    """A delete record; ``output`` is the delete's revision or NOTFOUND."""
    if outcome == UNKNOWN:
        t1, output = None, None
    return Operation(client, key, DELETE, (), t0, t1, outcome, output)


def verdict(ops: list[Operation], **kwargs: Any) -> str:
    """The overall verdict for ``ops``."""
    return check_history(ops, **kwargs).verdict


# --------------------------------------------------------------------------------------------
# hand-made histories


def test_empty_history_is_ok() -> None:
    assert verdict([]) == OK


def test_sequential_history_is_ok() -> None:
    ops = [
        get(1, 0, 1, None, 0),
        put(1, "a", 2, 3, 4),
        get(2, 4, 5, "a", 4),
        put(2, "b", 6, 7, 9),
        get(1, 8, 9, "b", 9),
        delete(1, 10, 11, 12),
        get(2, 12, 13, None, 0),
        delete(2, 14, 15, NOTFOUND),
        put(1, "c", 16, 17, 20),
        get(1, 18, 19, "c", 20),
    ]
    assert verdict(ops) == OK


@pytest.mark.parametrize("first", ["a", "b"])
def test_concurrent_puts_reads_may_see_either_order(first: str) -> None:
    second = "b" if first == "a" else "a"
    ops = [
        put(1, "a", 0, 10, 1 if first == "a" else 2),
        put(2, "b", 1, 11, 1 if first == "b" else 2),
        get(3, 2, 3, first, 1),
        get(3, 4, 5, second, 2),
        get(4, 12, 13, second, 2),
    ]
    assert verdict(ops) == OK


def test_concurrent_puts_reads_cannot_flip_back() -> None:
    ops = [
        put(1, "a", 0, 10, 1),
        put(2, "b", 1, 11, 2),
        get(3, 2, 3, "b", 2),
        get(3, 4, 5, "a", 1),
    ]
    assert verdict(ops) == ILLEGAL


def test_read_concurrent_with_write_may_see_old_or_new() -> None:
    ops = [
        put(1, "a", 0, 1, 1),
        put(1, "b", 2, 10, 2),
        get(2, 3, 4, "a", 1),
        get(3, 3, 4, "b", 2),
    ]
    # both reads overlap the write but also each other: a before write, b after it
    assert verdict(ops) == OK


def test_stale_read_after_completed_write_is_illegal() -> None:
    ops = [
        put(1, "a", 0, 1, 1),
        put(1, "b", 2, 3, 2),
        get(2, 4, 5, "a", 1),
    ]
    result = check_history(ops)
    assert result.verdict == ILLEGAL
    key = result.keys["k"]
    assert key.failing_op == ops[2]
    assert key.minimal_history == ops
    assert "get()" in key.explanation and "'b'" in key.explanation


def test_stale_read_window_is_shrunk_to_the_relevant_ops() -> None:
    noise = [put(9, f"n{i}", 10 * i, 10 * i + 1, i + 1) for i in range(20)]
    noise += [get(8, 10 * i + 2, 10 * i + 3, f"n{i}", i + 1) for i in range(20)]
    base = 300.0
    bad = [
        put(1, "a", base, base + 1, 100),
        put(2, "b", base + 2, base + 3, 101),
        get(3, base + 4, base + 5, "a", 100),
    ]
    trailing = [put(9, "z", base + 10, base + 11, 200), get(9, base + 12, base + 13, "z", 200)]
    result = check_history(noise + bad + trailing)
    key = result.keys["k"]
    assert key.verdict == ILLEGAL
    assert sorted(key.minimal_history, key=lambda o: o.invoke) == bad
    assert key.failing_op == bad[2]
    assert "minimal illegal sub-history: 3 of" in result.format()


def test_read_of_value_never_written_is_illegal() -> None:
    ops = [put(1, "a", 0, 1, 1), get(2, 0.5, 2, "ghost", 1)]
    result = check_history(ops)
    assert result.verdict == ILLEGAL
    assert result.keys["k"].failing_op == ops[1]


def test_read_with_wrong_revision_is_illegal() -> None:
    assert verdict([put(1, "a", 0, 1, 5), get(2, 2, 3, "a", 6)]) == ILLEGAL


def test_revisions_must_increase_per_key() -> None:
    assert verdict([put(1, "a", 0, 1, 5), put(1, "b", 2, 3, 3)]) == ILLEGAL
    # overlapping puts may complete in any order, as long as the revisions fit an order
    assert verdict([put(1, "a", 0, 3, 5), put(2, "b", 1, 2, 3), get(3, 4, 5, "a", 5)]) == OK


def test_read_absent_after_completed_write_is_illegal() -> None:
    assert verdict([put(1, "a", 0, 1, 1), get(2, 2, 3, None, 0)]) == ILLEGAL


def test_unknown_write_later_observed_is_ok() -> None:
    ops = [
        put(1, "a", 0, 1, 1),
        put(2, "b", 2, None, None, outcome=UNKNOWN),
        get(3, 3, 4, "a", 1),
        get(3, 10, 11, "b", 7),  # the revision the lost write got is learned here
        get(4, 12, 13, "b", 7),
    ]
    assert verdict(ops) == OK


def test_unknown_write_learned_revision_must_stay_consistent() -> None:
    ops = [
        put(2, "b", 2, None, None, outcome=UNKNOWN),
        get(3, 10, 11, "b", 7),
        get(4, 12, 13, "b", 8),
    ]
    assert verdict(ops) == ILLEGAL


def test_unknown_write_never_observed_is_ok() -> None:
    ops = [
        put(1, "a", 0, 1, 1),
        put(2, "b", 2, None, None, outcome=UNKNOWN),
        get(3, 3, 4, "a", 1),
        get(3, 50, 51, "a", 1),
    ]
    result = check_history(ops)
    assert result.verdict == OK
    assert result.keys["k"].dropped == 1  # the unobservable unknown put is pruned


def test_unknown_write_observed_then_unobserved_is_illegal() -> None:
    ops = [
        put(1, "a", 0, 1, 1),
        put(2, "b", 2, None, None, outcome=UNKNOWN),
        get(3, 3, 4, "b", 2),
        get(3, 5, 6, "a", 1),
    ]
    assert verdict(ops) == ILLEGAL


def test_unknown_write_cannot_take_effect_before_invocation() -> None:
    ops = [
        put(1, "a", 0, 1, 1),
        get(3, 2, 3, "b", 2),
        put(2, "b", 4, None, None, outcome=UNKNOWN),
    ]
    assert verdict(ops) == ILLEGAL


def test_failed_write_is_ignored_and_must_not_be_observed() -> None:
    failed = put(2, "b", 2, 3, None, outcome=FAIL)
    assert verdict([put(1, "a", 0, 1, 1), failed, get(3, 4, 5, "a", 1)]) == OK
    assert verdict([put(1, "a", 0, 1, 1), failed, get(3, 4, 5, "b", 2)]) == ILLEGAL


def test_cas_success_and_failure_consistent() -> None:
    ops = [
        cas(1, 0, "a", 0, 1, 3),  # create-if-absent
        cas(2, 3, "b", 2, 3, 5),
        cas(1, 3, "c", 4, 5, MISMATCH),
        get(2, 6, 7, "b", 5),
        cas(1, 99, "d", 8, 9, MISMATCH),
        get(1, 10, 11, "b", 5),
    ]
    assert verdict(ops) == OK


def test_cas_concurrent_racers_one_wins() -> None:
    ops = [
        put(1, "a", 0, 1, 1),
        cas(2, 1, "b", 2, 6, MISMATCH),
        cas(3, 1, "c", 3, 5, 2),
        get(4, 7, 8, "c", 2),
    ]
    assert verdict(ops) == OK


def test_cas_success_with_wrong_expected_revision_is_illegal() -> None:
    ops = [put(1, "a", 0, 1, 1), cas(2, 5, "b", 2, 3, 6)]
    assert verdict(ops) == ILLEGAL


def test_cas_mismatch_when_revision_matched_is_illegal() -> None:
    ops = [put(1, "a", 0, 1, 1), cas(2, 1, "b", 2, 3, MISMATCH)]
    result = check_history(ops)
    assert result.verdict == ILLEGAL
    assert "mismatch" in result.keys["k"].explanation


def test_cas_mismatch_recorded_as_fail_is_still_an_observation() -> None:
    ops = [put(1, "a", 0, 1, 1), cas(2, 1, "b", 2, 3, MISMATCH, outcome=FAIL)]
    assert verdict(ops) == ILLEGAL


def test_cas_on_revision_learned_from_unknown_write_is_ok() -> None:
    ops = [
        put(1, "a", 0, 1, 1),
        put(2, "b", 2, None, None, outcome=UNKNOWN),
        cas(3, 4, "c", 5, 6, 9),  # expects the lost write's revision
        get(3, 7, 8, "c", 9),
    ]
    assert verdict(ops) == OK


def test_unknown_cas_is_optional() -> None:
    ops = [
        put(1, "a", 0, 1, 1),
        cas(2, 1, "b", 2, None, None, outcome=UNKNOWN),
        get(3, 3, 4, "a", 1),
        get(3, 5, 6, "b", 4),
    ]
    assert verdict(ops) == OK
    stale = [*ops, get(3, 7, 8, "a", 1)]
    assert verdict(stale) == ILLEGAL


def test_unknown_write_explains_a_cas_mismatch() -> None:
    ops = [
        put(1, "a", 0, 1, 1),
        put(2, "b", 2, None, None, outcome=UNKNOWN),
        cas(3, 1, "c", 3, 4, MISMATCH),  # revision 1 was current unless the lost put landed
    ]
    assert verdict(ops) == OK
    assert verdict([ops[0], ops[2]]) == ILLEGAL


def test_unknown_delete_explains_an_absent_read_only_once() -> None:
    ops = [
        put(1, "a", 0, 1, 1),
        delete(2, 2, None, None, outcome=UNKNOWN),
        get(3, 3, 4, None, 0),
        put(1, "b", 5, 6, 3),
        get(3, 7, 8, "b", 3),
    ]
    assert verdict(ops) == OK
    # two unknown deletes behave alike; each can make the key absent once
    twice = [*ops, get(3, 9, 10, None, 0)]
    assert verdict(twice) == ILLEGAL
    assert verdict([*twice, delete(4, 2.5, None, None, outcome=UNKNOWN)]) == OK


def test_unobservable_unknown_ops_are_dropped() -> None:
    ops = [
        put(1, "a", 0, 1, 1),
        put(2, "never-read", 2, None, None, outcome=UNKNOWN),
        put(4, "never-read-either", 3, None, None, outcome=UNKNOWN),
        cas(3, 1, "c", 4, 5, 6),  # expects a known revision: cannot observe the unknown puts
        get(1, 5.5, 7, "c", 6),
        get(1, 8, 9, "c", 6),
    ]
    result = check_history(ops)
    assert result.verdict == OK
    assert result.keys["k"].dropped == 2
    # an unknown delete could observe them (it needs the key present), so they stay; nothing
    # could observe the delete itself (no absent read), so it goes
    lost_delete = delete(5, 3, None, None, outcome=UNKNOWN)
    result = check_history([*ops, lost_delete])
    assert result.verdict == OK
    assert result.keys["k"].dropped == 1


def test_revisions_are_unique_across_keys() -> None:
    ops = [
        put(1, "x", 0, 1, 5, key="other"),
        put(2, "b", 0, None, None, key="k", outcome=UNKNOWN),
        get(3, 2, 3, "b", 5, key="k"),  # revision 5 belongs to the write on "other"
    ]
    result = check_history(ops)
    assert result.keys["k"].verdict == ILLEGAL
    assert verdict([ops[1], get(3, 2, 3, "b", 6, key="k")]) == OK


def test_explanation_marks_the_culprit() -> None:
    ops = [
        put(1, "a", 0, 1, 1),
        get(2, 0.5, 1.5, "a", 1),
        put(1, "b", 2, 3, 2),
        get(2, 2.5, 3.5, "b", 2),
        get(3, 4, 5, "a", 1),  # stale
        put(1, "c", 6, 7, 3),
    ]
    result = check_history(ops)
    key = result.keys["k"]
    assert key.failing_op == ops[4]
    assert ops[4] in key.minimal_history and ops[5] not in key.minimal_history
    marked = [line for line in key.explanation.splitlines() if line.startswith("  * ")]
    assert len(marked) == 1 and "get()" in marked[0] and "'a' rev=1" in marked[0]
    assert "observed 'a' rev=1 but the register holds value='b' rev=2" in key.explanation


def test_delete_semantics() -> None:
    assert verdict([delete(1, 0, 1, 2)]) == ILLEGAL  # deleted a key that never existed
    ops = [put(1, "a", 0, 1, 1), delete(2, 2, 3, 2), get(1, 4, 5, "a", 1)]
    assert verdict(ops) == ILLEGAL
    ops = [put(1, "a", 0, 1, 1), delete(2, 2, 3, NOTFOUND)]
    assert verdict(ops) == ILLEGAL
    ops = [
        put(1, "a", 0, 1, 1),
        delete(2, 2, None, None, outcome=UNKNOWN),
        get(1, 4, 5, "a", 1),
        get(1, 6, 7, None, 0),
        put(1, "b", 8, 9, 3),
    ]
    assert verdict(ops) == OK


def test_initial_state() -> None:
    ops = [get(1, 0, 1, "seed", 3), put(1, "a", 2, 3, 4)]
    assert verdict(ops) == ILLEGAL
    assert verdict(ops, initial={"k": ("seed", 3)}) == OK


def test_keys_are_checked_independently() -> None:
    good = [put(1, "a", 0, 1, 1, key="x"), get(2, 2, 3, "a", 1, key="x")]
    bad = [
        put(1, "a", 0, 1, 2, key="y"),
        put(1, "b", 2, 3, 3, key="y"),
        get(2, 4, 5, "a", 2, key="y"),
    ]
    assert verdict(good) == OK
    # revision 1 on x and 2 on y interleave fine: revisions are global, not per key
    result = check_history(good + bad)
    assert result.verdict == ILLEGAL
    assert result.keys["x"].verdict == OK
    assert result.keys["y"].verdict == ILLEGAL
    assert result.illegal_keys == ["y"]
    assert "key 'y': illegal" in result.format()
    assert "key 'x'" not in result.format()


def pathological(n: int = 24) -> list[Operation]:
    """n fully concurrent puts (revisions not recorded, so any order fits) and a read of a
    value never written: refuting it means trying every subset of the puts."""
    ops = [put(i, f"v{i}", 0, 100, None) for i in range(n)]
    ops.append(get(n, 0, 100, "ghost", 99))
    return ops


def test_time_budget_gives_unknown() -> None:
    started = time.monotonic()
    result = check_history(pathological(), time_budget_per_key=0.05)
    assert time.monotonic() - started < 5
    assert result.verdict == UNKNOWN
    assert result.unknown_keys == ["k"]
    assert "time budget" in result.keys["k"].reason


def test_state_limit_gives_unknown() -> None:
    result = check_history(pathological(), max_states_per_key=5000)
    assert result.verdict == UNKNOWN
    assert "states" in result.keys["k"].reason


# --------------------------------------------------------------------------------------------
# operation records, JSON lines and the CLI


def test_operation_validation() -> None:
    with pytest.raises(ValueError):
        Operation(1, "k", "incr", (), 0, 1, OK, 1)
    with pytest.raises(ValueError):
        Operation(1, "k", PUT, (), 0, 1, OK, 1)
    with pytest.raises(ValueError):
        Operation(1, "k", PUT, ("a",), 0, None, OK, 1)
    with pytest.raises(ValueError):
        Operation(1, "k", GET, (), 0, 1, OK, "a")
    with pytest.raises(ValueError):
        Operation(1, "k", CAS, (1, "a"), 0, 1, OK, "nope")
    with pytest.raises(ValueError):
        Operation(1, "k", PUT, ("a",), 2, 1, OK, 1)
    assert Operation(1, "k", GET, [], 0, 1, OK, ["a", 1]).output == ("a", 1)


def test_json_lines_round_trip(tmp_path: Path) -> None:
    ops = [
        put(1, {"nested": [1, 2]}, 0, 1, 1),
        put(2, "b", 2, None, None, outcome=UNKNOWN),
        get("c3", 3, 4, {"nested": [1, 2]}, 1),
        cas(1, 1, "x", 5, 6, MISMATCH, outcome=FAIL),
        delete(2, 7, 8, NOTFOUND, key="other"),
    ]
    path = tmp_path / "history.jsonl"
    save_history(ops, path)
    assert load_history(path) == ops
    assert check_history(load_history(path)).verdict == OK


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.jsonl"
    bad = tmp_path / "bad.jsonl"
    hard = tmp_path / "hard.jsonl"
    save_history([put(1, "a", 0, 1, 1), get(2, 2, 3, "a", 1)], good)
    save_history([put(1, "a", 0, 1, 1), put(1, "b", 2, 3, 2), get(2, 4, 5, "a", 1)], bad)
    save_history(pathological(), hard)
    assert main([str(good)]) == 0
    assert "verdict: ok" in capsys.readouterr().out
    assert main([str(bad)]) == 1
    out = capsys.readouterr().out
    assert "verdict: illegal" in out and "get()" in out
    assert main([str(hard), "--budget", "0.05"]) == 2


def test_module_entry_point(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    save_history([put(1, "a", 0, 1, 1), put(1, "b", 2, 3, 2), get(2, 4, 5, "a", 1)], bad)
    proc = subprocess.run(
        [sys.executable, "-m", "kvd.torture.checker", str(bad)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "illegal" in proc.stdout


# --------------------------------------------------------------------------------------------
# simulated linearizable executions


@dataclass(frozen=True)
class Spec:
    """One simulated call: who, what, and how its interval sits around its effect."""

    client: int
    kind: str
    key: str
    fate: str  # 'ok' | 'applied' (unknown, took effect) | 'lost' (unknown, no effect) | 'fail'
    gap: float  # client think time before invoking
    pre: float  # invoke -> linearization point
    post: float  # linearization point -> completion
    cas_hits: bool  # cas expects the current revision (else cas_guess)
    cas_guess: int


def simulate(specs: list[Spec], initial_revision: int = 0) -> list[Operation]:
    """Run ``specs`` against a real (atomic) versioned store and record the history.

    Each client issues its calls one after another; every call takes effect atomically at a
    point inside its interval, so the resulting history is linearizable by construction.
    """
    clock: dict[int, float] = {}
    staged = []
    for index, spec in enumerate(specs):
        invoke = clock.get(spec.client, 0.0) + spec.gap
        point = invoke + spec.pre
        complete = point + spec.post
        clock[spec.client] = complete
        staged.append((point, index, invoke, complete, spec))
    staged.sort(key=lambda s: (s[0], s[1]))
    store: dict[str, tuple[str, int]] = {}
    revision = initial_revision
    ops: list[tuple[int, Operation]] = []
    for _point, index, invoke, complete, spec in staged:
        applies = spec.fate in ("ok", "applied")
        current = store.get(spec.key)
        current_rev = current[1] if current else 0
        value = f"v{index}"
        args: tuple[Any, ...] = ()
        output: Any = None
        if spec.kind == PUT:
            args = (value,)
            if applies:
                revision += 1
                store[spec.key] = (value, revision)
                output = revision
        elif spec.kind == GET:
            output = current if current else (None, 0)
        elif spec.kind == CAS:
            expected = current_rev if spec.cas_hits else spec.cas_guess
            args = (expected, value)
            if applies:
                if expected == current_rev:
                    revision += 1
                    store[spec.key] = (value, revision)
                    output = revision
                else:
                    output = MISMATCH
        elif applies:
            if current is not None:
                revision += 1
                del store[spec.key]
                output = revision
            else:
                output = NOTFOUND
        if spec.fate == "ok":
            op = Operation(spec.client, spec.key, spec.kind, args, invoke, complete, OK, output)
        elif spec.fate == "fail":
            op = Operation(spec.client, spec.key, spec.kind, args, invoke, complete, FAIL)
        else:
            op = Operation(spec.client, spec.key, spec.kind, args, invoke, None, UNKNOWN)
        ops.append((index, op))
    return [op for _, op in sorted(ops, key=lambda pair: pair[0])]


tenths = st.integers(0, 30).map(lambda n: n / 10)
specs_strategy = st.lists(
    st.builds(
        Spec,
        client=st.integers(0, 4),
        kind=st.sampled_from([PUT, PUT, GET, GET, GET, CAS, DELETE]),
        key=st.sampled_from(["a", "b"]),
        fate=st.sampled_from(["ok"] * 8 + ["applied", "lost", "fail"]),
        gap=tenths,
        pre=tenths,
        post=tenths,
        cas_hits=st.booleans(),
        cas_guess=st.integers(0, 12),
    ),
    max_size=40,
)
hypothesis_settings = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def assert_verdict(result: CheckResult, expected: str, ops: list[Operation]) -> None:
    """Assert with the history and report in the failure message."""
    history = "\n".join(op.describe() + f"  key={op.key}" for op in ops)
    assert result.verdict == expected, f"{result.format(all_keys=True)}\n{history}"


@hypothesis_settings
@given(specs_strategy)
def test_simulated_linearizable_histories_are_ok(specs: list[Spec]) -> None:
    ops = simulate(specs)
    assert_verdict(check_history(ops, time_budget_per_key=20), OK, ops)


@hypothesis_settings
@given(specs_strategy, st.data())
def test_read_of_never_current_value_is_illegal(specs: list[Spec], data: st.DataObject) -> None:
    ops = simulate(specs)
    reads = [i for i, op in enumerate(ops) if op.kind == GET and op.outcome == OK]
    if not reads:
        ops.append(Operation(9, "a", GET, (), 1000.0, 1001.0, OK, (None, 0)))
        reads = [len(ops) - 1]
    target = data.draw(st.sampled_from(reads))
    old = ops[target]
    _, rev = old.output
    ops[target] = Operation(
        old.client, old.key, GET, (), old.invoke, old.complete, OK, ("never-written", rev or 1)
    )
    result = check_history(ops, time_budget_per_key=20)
    assert_verdict(result, ILLEGAL, ops)
    key = result.keys[old.key]
    assert ops[target] in key.minimal_history
    assert key.failing_op == ops[target]


def stale_read_candidates(
    ops: list[Operation], reads_from: int = 0, limit: int = 10**9
) -> list[tuple[int, int]]:
    """(read index, write index) pairs where the write was definitely overwritten before the
    read began: the write completed, then another definite write ran, then the read."""
    definite = [
        op
        for op in ops
        if op.outcome == OK and op.kind in (PUT, CAS, DELETE) and isinstance(op.output, int)
    ]
    pairs = []
    for r, read in enumerate(ops):
        if r < reads_from or read.kind != GET or read.outcome != OK:
            continue
        # latest invocation of a definite write that completed before the read began
        overwritten_by = max(
            (w.invoke for w in definite if w.key == read.key and w.end < read.invoke),
            default=None,
        )
        if overwritten_by is None:
            continue
        for w, first in enumerate(ops):
            if (
                first.key == read.key
                and first.kind in (PUT, CAS)
                and first.outcome == OK
                and isinstance(first.output, int)
                and first.end < overwritten_by
            ):
                pairs.append((r, w))
        if len(pairs) >= limit:
            break
    return pairs


@hypothesis_settings
@given(specs_strategy, st.data())
def test_stale_read_is_illegal(specs: list[Spec], data: st.DataObject) -> None:
    ops = simulate(specs)
    pairs = stale_read_candidates(ops)
    if not pairs:
        return
    r, w = data.draw(st.sampled_from(pairs))
    read, write = ops[r], ops[w]
    ops[r] = Operation(
        read.client,
        read.key,
        GET,
        (),
        read.invoke,
        read.complete,
        OK,
        (write.args[-1], write.output),
    )
    assert_verdict(check_history(ops, time_budget_per_key=20), ILLEGAL, ops)


def busy_history(n_ops: int, clients: int, seed: int, unknown_rate: float = 0.01) -> list[Spec]:
    """A long one-key workload with ``clients`` concurrent clients (for the speed test)."""
    rng = random.Random(seed)
    specs = []
    for _ in range(n_ops):
        fate = "ok"
        if rng.random() < unknown_rate:
            fate = rng.choice(["applied", "lost"])
        specs.append(
            Spec(
                client=rng.randrange(clients),
                kind=rng.choice([PUT, PUT, GET, GET, GET, CAS]),
                key="k",
                fate=fate,
                gap=rng.random() * 0.002,
                pre=rng.random() * 0.003,
                post=rng.random() * 0.003,
                cas_hits=rng.random() < 0.5,
                cas_guess=rng.randrange(n_ops),
            )
        )
    return specs


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_two_thousand_ops_ten_clients_is_linearizable(seed: int) -> None:
    # Speed belongs in a benchmark, not in an assertion: this checks the verdict only.
    ops = simulate(busy_history(2000, 10, seed))
    result = check_history(ops)
    assert result.verdict == OK, result.format()


def test_long_history_with_one_stale_read_is_explained() -> None:
    ops = simulate(busy_history(2000, 10, seed=7, unknown_rate=0))
    # the most recent overwritten write, for a read halfway through the run
    pairs = stale_read_candidates(ops, reads_from=len(ops) // 2, limit=1)
    r, w = max(pairs, key=lambda pair: ops[pair[1]].invoke)
    read, write = ops[r], ops[w]
    ops[r] = Operation(
        read.client,
        read.key,
        GET,
        (),
        read.invoke,
        read.complete,
        OK,
        (write.args[-1], write.output),
    )
    result = check_history(ops)
    key = result.keys["k"]
    assert key.verdict == ILLEGAL
    assert ops[r] in key.minimal_history
    assert write in key.minimal_history
    assert len(key.minimal_history) <= 10, result.format()

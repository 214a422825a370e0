"""Linearizability checker for kvd histories: per-key WGL search over a versioned register.

The search is Wing & Gong's algorithm with Lowe's cache of refuted (linearized set, state)
configurations, as in Porcupine and Knossos, run one key at a time: keys are independent
registers, so a history is linearizable iff every key's sub-history is.

Model of one key (a *versioned register*)::

    state = (value or None, revision, floor)

``revision`` is the key's mod revision: an ``int`` when known (``0`` while the key is absent),
or ``None`` after a write of unknown outcome: "some revision above ``floor``", learned when a
later get or cas reveals it.  ``floor`` is the highest revision used on the key so far.
Revisions come from the store's global counter, so they are unique across all keys and
increase with every write: a write's revision must be above the floor, and a revision that a
definite write reported can never be learned as an unknown write's revision.

Operations and the outputs they record (outcome ``'ok'``):

* ``put(value)`` -> the new revision (``int``; ``None`` if the client did not record it).
* ``get()`` -> ``(value, revision)``; ``(None, 0)`` when the key is absent.
* ``cas(expected_revision, value)`` -> the new revision, or ``"mismatch"`` (HTTP 409).
  Expecting revision 0 means "create if absent".
* ``delete()`` -> the revision of the delete, or ``"notfound"`` (HTTP 404).

Outcome ``'fail'`` means the operation certainly had no effect (e.g. a 503) and it is dropped;
a ``'fail'`` cas/delete whose output is ``"mismatch"``/``"notfound"`` is a definite answer, so
it is kept as an observation.  Outcome ``'unknown'`` (timeouts, lost connections) means the
operation may take effect at any time after its invocation, or never: it gets an infinite
completion time and is optional: the history is linearizable if some linearization contains
every definite operation and any subset of the unknown ones.

Besides the cache, the search prunes with facts of the model (see :func:`_search`): definite
writes go in revision order, reads and cas expecting revision r go before the floor passes r,
and unknown operations are tried only after definite ones, with refuted configurations also
covering those that merely linearized more unknown operations.  With these, a linearizable
history costs about one search step per operation; an illegal one needs a full refutation,
which the per-key time budget bounds (verdict ``'unknown'`` when it runs out).

For an illegal key the checker finds the op whose completion makes the history illegal and
shrinks the history around it to a small sub-history that is still illegal, for the report.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

__all__ = [
    "CAS",
    "DELETE",
    "FAIL",
    "GET",
    "ILLEGAL",
    "MISMATCH",
    "NOTFOUND",
    "OK",
    "PUT",
    "UNKNOWN",
    "CheckResult",
    "KeyResult",
    "Operation",
    "check_history",
    "dump_history",
    "load_history",
    "main",
    "operation_from_json",
    "operation_to_json",
    "parse_history",
    "save_history",
]

# Operation kinds.
PUT: Final = "put"
GET: Final = "get"
CAS: Final = "cas"
DELETE: Final = "delete"
KINDS: Final = (PUT, GET, CAS, DELETE)

# Outcomes of an operation; OK and UNKNOWN double as verdicts, ILLEGAL is a verdict only.
OK: Final = "ok"
FAIL: Final = "fail"
UNKNOWN: Final = "unknown"
ILLEGAL: Final = "illegal"
OUTCOMES: Final = (OK, FAIL, UNKNOWN)

# Negative (but definite) answers of cas and delete.
MISMATCH: Final = "mismatch"
NOTFOUND: Final = "notfound"

_ARITY: Final = {PUT: 1, GET: 0, CAS: 2, DELETE: 0}
_INF: Final = math.inf


def _is_revision(value: object) -> bool:
    """True for an int revision (bool is not accepted as one)."""
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Operation:
    """One client call on one key, as recorded by a torture run.

    ``args`` is ``(value,)`` for put, ``()`` for get and delete, ``(expected_revision, value)``
    for cas.  ``complete`` may be ``None`` (or ``inf``) only when ``outcome`` is not ``'ok'``.
    See the module docstring for the ``output`` of each kind.
    """

    client: int | str
    key: str
    kind: str
    args: tuple[Any, ...]
    invoke: float
    complete: float | None
    outcome: str
    output: Any = None

    def __post_init__(self) -> None:
        """Normalise JSON-ish inputs (lists to tuples) and reject malformed records early."""
        object.__setattr__(self, "args", tuple(self.args))
        if self.kind == GET and isinstance(self.output, list):
            object.__setattr__(self, "output", tuple(self.output))
        if self.kind not in KINDS:
            raise ValueError(f"unknown operation kind {self.kind!r}")
        if self.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {self.outcome!r}")
        if len(self.args) != _ARITY[self.kind]:
            raise ValueError(f"{self.kind} takes {_ARITY[self.kind]} args, got {self.args!r}")
        if self.kind in (PUT, CAS) and self.args[-1] is None:
            raise ValueError(f"{self.kind} cannot write None (None means 'absent')")
        if self.kind == CAS and not _is_revision(self.args[0]):
            raise ValueError(f"cas expected revision must be an int, got {self.args[0]!r}")
        if self.outcome == OK:
            if self.complete is None or not math.isfinite(self.complete):
                raise ValueError(f"ok operation needs a finite completion time: {self!r}")
            if self.complete < self.invoke:
                raise ValueError(f"operation completes before it is invoked: {self!r}")
            self._check_output()

    def _check_output(self) -> None:
        """Validate the output of an ``'ok'`` operation against its kind."""
        out = self.output
        if self.kind == PUT:
            good = out is None or _is_revision(out)
        elif self.kind == GET:
            good = isinstance(out, tuple) and len(out) == 2
            good = good and (out[1] is None or _is_revision(out[1]))
        elif self.kind == CAS:
            good = out == MISMATCH or _is_revision(out)
        else:
            good = out == NOTFOUND or _is_revision(out)
        if not good:
            raise ValueError(f"bad output {out!r} for an ok {self.kind}")

    @property
    def end(self) -> float:
        """Completion time used by the checker: +inf unless the outcome is definite."""
        if self.outcome != OK or self.complete is None:
            return _INF
        return self.complete

    def describe(self) -> str:
        """One readable line: client, call, result and the [invoke, complete] interval."""
        if self.kind == PUT:
            call = f"put({self.args[0]!r})"
        elif self.kind == CAS:
            call = f"cas(rev={self.args[0]}, {self.args[1]!r})"
        else:
            call = f"{self.kind}()"
        if self.outcome == OK:
            result = _describe_output(self.kind, self.output)
        elif self.outcome == UNKNOWN:
            result = "? (outcome unknown)"
        elif self.output is None:
            result = "failed"
        else:
            result = f"failed {self.output!r}"
        end = "..." if self.complete is None else f"{self.complete:.6f}"
        return f"client {self.client!s:<5} {call:<26} -> {result:<24} [{self.invoke:.6f}, {end}]"


def _describe_output(kind: str, out: Any) -> str:
    """Render the output of a definite operation."""
    if kind == GET:
        value, rev = out
        return "absent" if value is None else f"{value!r} rev={rev}"
    if out in (MISMATCH, NOTFOUND):
        return str(out)
    return "ok rev=?" if out is None else f"ok rev={out}"


# --------------------------------------------------------------------------------------------
# JSON lines persistence


def operation_to_json(op: Operation) -> dict[str, Any]:
    """A JSON-serialisable dict for ``op`` (an infinite completion time is written as null)."""
    complete = op.complete
    if complete is not None and not math.isfinite(complete):
        complete = None
    output = list(op.output) if isinstance(op.output, tuple) else op.output
    return {
        "client": op.client,
        "key": op.key,
        "kind": op.kind,
        "args": list(op.args),
        "invoke": op.invoke,
        "complete": complete,
        "outcome": op.outcome,
        "output": output,
    }


def operation_from_json(record: Mapping[str, Any]) -> Operation:
    """Rebuild an :class:`Operation` from :func:`operation_to_json`'s dict."""
    complete = record.get("complete")
    return Operation(
        client=record["client"],
        key=record["key"],
        kind=record["kind"],
        args=tuple(record.get("args", ())),
        invoke=float(record["invoke"]),
        complete=None if complete is None else float(complete),
        outcome=record["outcome"],
        output=record.get("output"),
    )


def dump_history(ops: Iterable[Operation], stream: IO[str]) -> None:
    """Write ``ops`` to ``stream`` as JSON lines, one operation per line."""
    for op in ops:
        stream.write(json.dumps(operation_to_json(op), sort_keys=True))
        stream.write("\n")


def parse_history(stream: IO[str]) -> list[Operation]:
    """Read JSON lines written by :func:`dump_history`; blank lines and '#' lines are skipped."""
    ops = []
    for lineno, line in enumerate(stream, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            ops.append(operation_from_json(json.loads(text)))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"line {lineno}: {exc}") from exc
    return ops


def save_history(ops: Iterable[Operation], path: str | Path) -> None:
    """Save a history to a JSON lines file so a failing run can be re-checked later."""
    with open(path, "w", encoding="utf-8") as stream:
        dump_history(ops, stream)


def load_history(path: str | Path) -> list[Operation]:
    """Load a history saved by :func:`save_history`."""
    with open(path, encoding="utf-8") as stream:
        return parse_history(stream)


# --------------------------------------------------------------------------------------------
# Compiled operations and the register model

_K_PUT: Final = 0
_K_GET: Final = 1
_K_CAS: Final = 2
_K_DEL: Final = 3
_KIND_CODE: Final = {PUT: _K_PUT, GET: _K_GET, CAS: _K_CAS, DELETE: _K_DEL}

_DONE: Final = 0  # definitely took effect / definitely observed
_NEG: Final = 1  # definite negative answer: cas mismatch, delete notfound (no effect)
_MAYBE: Final = 2  # outcome unknown: optional, and if linearized it takes effect

# (value id or None when absent, revision or None when unknown, floor)
_State = tuple[int | None, int | None, int]
_INITIAL: Final[_State] = (None, 0, 0)


class _Op:
    """An operation compiled for the search: small ints and interned values only."""

    __slots__ = (
        "kind",
        "value",
        "rev",
        "expected",
        "status",
        "invoke",
        "complete",
        "source",
        "pending",
        "learnable",
    )

    def __init__(
        self,
        kind: int,
        value: int | None,
        rev: int | None,
        expected: int,
        status: int,
        invoke: float,
        complete: float,
        source: Operation,
        pending: bool = False,
    ) -> None:
        """``value`` is the written (put/cas) or observed (get) value id; ``rev`` the output."""
        self.kind = kind
        self.value = value
        self.rev = rev
        self.expected = expected
        self.status = status
        self.invoke = invoke
        self.complete = complete
        self.source = source
        self.pending = pending
        # whether a state of unknown revision may learn this op's observed revision (get) or
        # expected revision (cas): not if that revision belongs to another, definite write
        self.learnable = True

    @property
    def required(self) -> bool:
        """Whether every linearization must contain this operation."""
        return self.status != _MAYBE

    @property
    def is_write(self) -> bool:
        """Whether this op may have set the key to a value (put, or a cas that did not fail)."""
        return self.kind == _K_PUT or (self.kind == _K_CAS and self.status != _NEG)

    def pending_copy(self) -> _Op:
        """This op as seen by a history cut while it was still in flight (optional effect)."""
        copy = _Op(
            self.kind,
            self.value,
            self.rev,
            self.expected,
            _MAYBE,
            self.invoke,
            _INF,
            self.source,
            pending=True,
        )
        copy.learnable = self.learnable
        return copy


def _step(state: _State, op: _Op) -> _State | None:
    """Apply ``op`` to ``state``; the new state, or None if ``op`` cannot happen here."""
    value, rev, floor = state
    kind = op.kind
    if kind == _K_GET:
        want = op.value
        if want is None:
            return state if value is None else None
        if value != want:
            return None
        seen = op.rev
        if seen is None:
            return state
        if rev is None:  # learn the revision a write of unknown outcome got
            return (value, seen, seen) if seen > floor and op.learnable else None
        return state if rev == seen else None
    if kind == _K_PUT:
        new = op.rev
        if new is None:
            return (op.value, None, floor)
        return (op.value, new, new) if new > floor else None
    if kind == _K_CAS:
        expected = op.expected
        if op.status == _NEG:
            return state if rev is None or rev != expected else None
        if rev is None:
            if expected <= floor or not op.learnable:
                return None
            floor = expected  # the unknown revision was `expected`
        elif rev != expected:
            return None
        new = op.rev
        if new is None:
            return (op.value, None, floor)
        return (op.value, new, new) if new > floor else None
    # delete
    if op.status == _NEG:
        return state if value is None else None
    if value is None:
        return None
    new = op.rev
    if new is None:
        return (None, 0, floor)
    return (None, 0, new) if new > floor else None


class _Values:
    """Interns values as small ints so states hash and compare cheaply."""

    def __init__(self) -> None:
        """Start with no values."""
        self._ids: dict[str, int] = {}
        self.values: list[Any] = []

    def intern(self, value: Any) -> int | None:
        """The id of ``value`` (None stays None: it means 'absent')."""
        if value is None:
            return None
        token = json.dumps(value, sort_keys=True, default=repr)
        ident = self._ids.get(token)
        if ident is None:
            ident = self._ids[token] = len(self.values)
            self.values.append(value)
        return ident

    def show(self, ident: int | None) -> str:
        """repr of the value with id ``ident``."""
        return "absent" if ident is None else repr(self.values[ident])


def _known_revisions(ops: Iterable[Operation]) -> frozenset[int]:
    """Revisions that definite writes (on any key) reported; no other write can have them."""
    return frozenset(
        op.output for op in ops if op.outcome == OK and op.kind != GET and _is_revision(op.output)
    )


def _compile(
    ops: Sequence[Operation], values: _Values, known_revisions: frozenset[int] = frozenset()
) -> tuple[list[_Op], int]:
    """Compile one key's operations for the search; returns (ops, number dropped).

    Dropped: failed ops, gets of unknown outcome (no effect, nothing observed) and unknown
    writes and deletes that nothing could observe (see :func:`_drop_unobservable`).
    """
    compiled: list[_Op] = []
    for op in ops:
        kind = _KIND_CODE[op.kind]
        outcome = op.outcome
        negative = (op.kind == CAS and op.output == MISMATCH) or (
            op.kind == DELETE and op.output == NOTFOUND
        )
        if outcome == FAIL and not negative:
            continue
        if outcome == UNKNOWN and kind == _K_GET:
            continue
        definite = outcome != UNKNOWN
        end = op.complete if definite and op.complete is not None else _INF
        if definite and not math.isfinite(end):
            continue  # a 'fail' mismatch without completion time: treat as not observed
        value: int | None = None
        rev: int | None = None
        expected = 0
        status = _DONE if definite else _MAYBE
        if kind == _K_PUT:
            value = values.intern(op.args[0])
            rev = op.output if definite else None
        elif kind == _K_GET:
            seen_value, seen_rev = op.output
            value = values.intern(seen_value)
            rev = 0 if seen_rev is None and value is None else seen_rev
        elif kind == _K_CAS:
            expected = op.args[0]
            value = values.intern(op.args[1])
            if definite and negative:
                status = _NEG
            elif definite:
                rev = op.output
        else:
            if definite and negative:
                status = _NEG
            elif definite:
                rev = op.output
        compiled.append(_Op(kind, value, rev, expected, status, op.invoke, end, op))
        if kind == _K_GET:
            compiled[-1].learnable = rev not in known_revisions
        elif kind == _K_CAS:
            compiled[-1].learnable = expected not in known_revisions
    compiled = _drop_unobservable(compiled)
    return compiled, len(ops) - len(compiled)


def _drop_unobservable(ops: list[_Op]) -> list[_Op]:
    """Drop unknown-outcome writes and deletes that no later op could observe.

    An unknown write of a value no get returned only makes the key present with an unknown
    revision; only a delete, a cas mismatch or a cas expecting a revision no definite write
    has could tell.  An unknown delete only makes the key absent; only a get or delete
    finding it absent, a cas mismatch or a cas creating the key could tell.  With no such
    observer completing after the op is invoked, leaving the op out of a linearization keeps
    it valid, and trying it would only slow the search down.
    """
    read = {op.value for op in ops if op.kind == _K_GET}
    sees_present = max(
        (
            op.complete
            for op in ops
            if (op.kind == _K_DEL and op.status != _NEG)
            or (op.kind == _K_CAS and (op.status == _NEG or (op.expected > 0 and op.learnable)))
        ),
        default=-_INF,
    )
    sees_absent = max(
        (
            op.complete
            for op in ops
            if (op.kind == _K_GET and op.value is None)
            or (op.kind == _K_DEL and op.status == _NEG)
            or (op.kind == _K_CAS and (op.status == _NEG or op.expected == 0))
        ),
        default=-_INF,
    )
    return [
        op
        for op in ops
        if op.required
        or (op.is_write and (op.value in read or op.invoke <= sees_present))
        or (op.kind == _K_DEL and op.invoke <= sees_absent)
    ]


# --------------------------------------------------------------------------------------------
# The search


@dataclass
class _Search:
    """What one WGL search found: verdict plus the deepest point it reached."""

    verdict: str
    states: int
    reason: str = ""
    depth: int = 0
    stuck_state: _State | None = None
    stuck_op: int | None = None
    path: list[int] | None = None


def _floor_bound(op: _Op) -> int | None:
    """The highest floor at which a definite op can still be linearized, if it has one."""
    if not op.required:
        return None
    if op.kind == _K_GET and op.value is not None and op.rev:
        return op.rev  # the register must hold revision rev: floor == rev, or learn rev
    if op.kind == _K_CAS and op.status == _DONE and op.expected > 0:
        return op.expected
    return None


def _search(
    ops: Sequence[_Op], init: _State, deadline: float, max_states: int, want_path: bool = False
) -> _Search:
    """Wing-Gong-Lowe search: is there a linearization of all required and some optional ops?

    Required ops' calls and returns live in a doubly linked list (arrays ``nxt``/``prv``) in
    time order; linearizing an op lifts its call and return out of it and backtracking puts
    them back (LIFO).  The candidates are the calls before the first return left in the list.
    Optional (unknown-outcome) ops return at +inf, so only their calls are kept, in a second
    list, and they are candidates when invoked before that first return.

    Lowe's cache holds refuted configurations (linearized set, state), the set split into
    required and optional bits.  A configuration is also refuted if a refuted one has the
    same required bits and state and a subset of its optional bits: it has the same options
    minus some optional ops.  Required candidates are tried before optional ones, so the
    configuration without a pointless optional op is refuted first and every variant with
    that op linearized and then overwritten is cut off; otherwise each unknown write would
    double the work of refuting an illegal history.

    Facts of the model prune further, all sound because the floor never decreases: definite
    writes are linearized in revision order; a get or cas bound to revision r must be
    linearized before the floor passes r (so a write is never placed before a read of the
    value it overwrote, the usual source of backtracking); identical optional ops are used
    in invocation order; an optional op is not stacked on an optional op it overwrites.
    """
    required_left = sum(1 for op in ops if op.required)
    if required_left == 0:
        return _Search(OK, 0)
    events = sorted(
        [(op.invoke, 0, i) for i, op in enumerate(ops)]
        + [(op.complete, 1, i) for i, op in enumerate(ops)]
    )  # calls sort before returns at equal times: such ops count as concurrent
    n = len(events)
    entry_op = [i for _, _, i in events]
    is_call = [c == 0 for _, c, _ in events]
    required = [op.required for op in ops]
    where_return = {i: p for p, (_, c, i) in enumerate(events) if c == 1}
    match = [where_return[i] if c == 0 else -1 for _, c, i in events]
    req_head, opt_head = n, n + 1
    nxt = [-1] * (n + 2)
    prv = [-1] * (n + 2)
    for head, members in (
        (req_head, [p for p in range(n) if required[entry_op[p]]]),
        (opt_head, [p for p in range(n) if is_call[p] and not required[entry_op[p]]]),
    ):
        last = head
        for p in members:
            nxt[last], prv[p], last = p, last, p
    has_optional = nxt[opt_head] >= 0

    # Revisions of definite writes, ascending.  The floor never decreases along a
    # linearization, so these writes go in this order, and a state whose floor has reached
    # the next one's revision is dead.
    ordered = [op.required and op.kind != _K_GET and op.rev is not None for op in ops]
    order_revs = sorted(op.rev for op, o in zip(ops, ordered, strict=True) if o and op.rev)
    n_order = len(order_revs)
    done_order = 0  # how many of them are linearized
    # Likewise a definite get of (value, r > 0) or successful cas expecting r > 0 needs the
    # floor to be at most r when it is linearized: these go in order of r, and a state whose
    # floor is above the smallest r still due is dead.
    bounds = [_floor_bound(op) for op in ops]
    bound_vals = sorted(b for b in bounds if b is not None)
    n_bound = len(bound_vals)
    done_bound = 0
    # Required and optional ops get separate, dense bit positions (small ints hash faster).
    bits = [0] * len(ops)
    n_req = n_opt = 0
    for i, op in enumerate(ops):
        if op.required:
            bits[i], n_req = 1 << n_req, n_req + 1
        else:
            bits[i], n_opt = 1 << n_opt, n_opt + 1
    # Optional ops that behave identically are interchangeable: linearize them only in order
    # of invocation, so that which of them was used does not multiply configurations.
    twin_before = [-1] * len(ops)
    last_twin: dict[tuple[Any, ...], int] = {}
    for i in sorted(range(len(ops)), key=lambda j: (ops[j].invoke, j)):
        op = ops[i]
        if not op.required:
            sig = (op.kind, op.value, op.rev, op.expected, op.status, op.learnable)
            twin_before[i] = last_twin.get(sig, -1)
            last_twin[sig] = i

    # (required bits, state) -> optional bits of each refuted configuration with them
    refuted: dict[tuple[int, _State], list[int]] = {}
    n_refuted = 0
    stack_entry: list[int] = []
    stack_state: list[_State] = []
    stack_phase: list[bool] = []
    stack_boundary: list[int] = []
    req_lin = 0
    opt_lin = 0
    state = init
    phase_optional = False  # scanning optional candidates (required ones are exhausted)
    boundary = n  # position of the first return left: optional calls before it are candidates
    best = _Search(ILLEGAL, 0, depth=-1)
    steps = 0
    entry = nxt[req_head]
    step = _step
    while True:
        steps += 1
        if not steps & 2047:
            if time.monotonic() > deadline:
                best.verdict, best.reason = UNKNOWN, "time budget exhausted"
                break
            if n_refuted > max_states:
                best.verdict, best.reason = UNKNOWN, f"more than {max_states} states"
                break
        if phase_optional:
            candidate = 0 <= entry < boundary
        elif entry >= 0 and is_call[entry]:
            candidate = True
        else:  # first return reached: required candidates exhausted, try optional ones
            boundary = entry if entry >= 0 else n
            candidate = False
            if has_optional:
                phase_optional = True
                entry = nxt[opt_head]
                continue
        if candidate:
            i = entry_op[entry]
            twin = twin_before[i]
            if twin >= 0 and not opt_lin & bits[twin]:  # use the earlier twin first
                entry = nxt[entry]
                continue
            new_state = step(state, ops[i])
            if (
                new_state is not None
                and phase_optional
                and stack_phase
                and stack_phase[-1]
                and step(stack_state[-1], ops[i]) == new_state
            ):
                # Optional op, last op optional too and overwritten by this one: the same
                # state is reached without the last op, a sibling configuration with fewer
                # optional ops that the parent explores anyway.
                new_state = None
            if new_state is not None:
                next_order = done_order + 1 if ordered[i] else done_order
                next_bound = done_bound if bounds[i] is None else done_bound + 1
                if (next_order < n_order and new_state[2] >= order_revs[next_order]) or (
                    next_bound < n_bound and new_state[2] > bound_vals[next_bound]
                ):
                    new_state = None  # an op due later needs a lower floor than this
            if new_state is not None:
                if phase_optional:
                    new_req, new_opt = req_lin, opt_lin | bits[i]
                else:
                    new_req, new_opt = req_lin | bits[i], opt_lin
                seen = refuted.get((new_req, new_state))
                # refuted with a subset of these optional ops: refuted here too
                if seen is None or not any(o & new_opt == o for o in seen):
                    stack_entry.append(entry)
                    stack_state.append(state)
                    stack_phase.append(phase_optional)
                    stack_boundary.append(boundary)
                    req_lin, opt_lin, state = new_req, new_opt, new_state
                    done_order = next_order
                    done_bound = next_bound
                    nxt[prv[entry]] = nxt[entry]
                    if nxt[entry] >= 0:
                        prv[nxt[entry]] = prv[entry]
                    if not phase_optional:
                        ret = match[entry]
                        nxt[prv[ret]] = nxt[ret]
                        if nxt[ret] >= 0:
                            prv[nxt[ret]] = prv[ret]
                        required_left -= 1
                        if required_left == 0:
                            best.verdict = OK
                            break
                    phase_optional = False
                    entry = nxt[req_head]
                    continue
            entry = nxt[entry]
            continue

        # Dead end: the op returning at `boundary` was not linearized in time.
        if len(stack_entry) > best.depth:
            best.depth = len(stack_entry)
            best.stuck_state = state
            best.stuck_op = entry_op[boundary] if boundary < n else None
            if want_path:
                best.path = [entry_op[e] for e in stack_entry]
        if not stack_entry:
            break
        seen = refuted.get((req_lin, state))
        if seen is None:
            refuted[(req_lin, state)] = [opt_lin]
        else:  # keep an antichain: supersets of opt_lin are now redundant
            seen[:] = [o for o in seen if o & opt_lin != opt_lin]
            seen.append(opt_lin)
        n_refuted += 1
        entry = stack_entry.pop()
        state = stack_state.pop()
        phase_optional = stack_phase.pop()
        boundary = stack_boundary.pop()
        i = entry_op[entry]
        if phase_optional:
            opt_lin ^= bits[i]
        else:
            req_lin ^= bits[i]
            required_left += 1
            if ordered[i]:
                done_order -= 1
            if bounds[i] is not None:
                done_bound -= 1
            ret = match[entry]
            nxt[prv[ret]] = ret
            if nxt[ret] >= 0:
                prv[nxt[ret]] = ret
        nxt[prv[entry]] = entry
        if nxt[entry] >= 0:
            prv[nxt[entry]] = entry
        entry = nxt[entry]
    best.states = n_refuted + len(stack_entry)
    best.depth = max(best.depth, 0)
    return best


# --------------------------------------------------------------------------------------------
# Explaining an illegal key: cut the history short, then shrink it


def _truncate(ops: Sequence[_Op], cut: float) -> list[_Op]:
    """The history as an observer saw it at time ``cut``: in-flight ops become optional.

    In-flight reads and negative answers have no effect, so they are dropped.  If the cut
    history is illegal, so is every later cut and the whole history.
    """
    out = []
    for op in ops:
        if op.invoke > cut:
            continue
        if op.complete <= cut:
            out.append(op)
        elif op.is_write or (op.kind == _K_DEL and op.status != _NEG):
            out.append(op.pending_copy() if op.required else op)
    return out


class _Support:
    """Keeps a shrunk history meaningful: an observation keeps some op that can explain it.

    Without this, shrinking a stale read (put a; put b; get -> a) could drop ``put a`` and
    report a read of a value never written, a smaller but different failure.  So when
    shrinking drops ops, :meth:`repair` adds back one explaining op per orphaned observation.
    """

    def __init__(self, ops: Sequence[_Op]) -> None:
        """Work out, for each op, which other ops could explain what it observed.

        Revisions pin the explanation down where they are known: a cas expecting revision e
        needs the write of e, and a successful delete or create (cas expecting 0) needs the
        write or delete just before it in revision order.  Otherwise, fall back to timing.
        """
        self.ops = ops
        self.sources: list[tuple[int, ...]] = []  # one of these must stay (may be empty)
        self.absent: list[bool] = []  # observes 'absent': needs a delete if a write precedes
        self.present: list[bool] = []  # observes 'present' (delete ok): needs a write
        self.is_delete = [op.kind == _K_DEL and op.status != _NEG for op in ops]
        by_value: dict[int | None, list[int]] = {}
        by_rev: dict[int | None, list[int]] = {}
        for j, op in enumerate(ops):
            if op.is_write:
                by_value.setdefault(op.value, []).append(j)
                by_rev.setdefault(op.rev, []).append(j)
        in_rev_order = sorted(
            (op.rev, j)
            for j, op in enumerate(ops)
            if op.rev is not None and (op.is_write or self.is_delete[j])
        )
        previous = {j: in_rev_order[k - 1][1] for k, (_, j) in enumerate(in_rev_order) if k}
        for i, op in enumerate(ops):
            sources: list[int] = []
            absent = op.kind == _K_GET and op.value is None
            present = False
            if op.kind == _K_GET and op.value is not None:
                same = by_value.get(op.value, [])
                exact = [j for j in same if ops[j].rev is None or ops[j].rev == op.rev]
                sources = exact or same
            elif op.kind == _K_CAS and op.status != _NEG and op.expected > 0:
                sources = by_rev.get(op.expected) or [j for j in by_rev.get(None, []) if j != i]
            elif op.kind == _K_CAS and op.status != _NEG:  # create: the key was absent
                if op.rev is None:
                    absent = True
                else:
                    sources = self._previous(i, previous, lambda j: self.is_delete[j])
            elif op.kind == _K_DEL and op.status == _NEG:
                absent = True
            elif op.kind == _K_DEL:  # the key was present
                if op.rev is None:
                    present = True
                else:
                    sources = self._previous(i, previous, lambda j: ops[j].is_write)
            # only ops that may precede the observation explain it; prefer the latest
            sources = sorted(
                (j for j in sources if ops[j].invoke <= op.complete),
                key=lambda j: -ops[j].invoke,
            )
            self.sources.append(tuple(sources))
            self.absent.append(absent)
            self.present.append(present)
        self.last_write = self._latest_before(lambda j: ops[j].is_write)
        self.last_delete = self._latest_before(lambda j: self.is_delete[j])

    def _previous(
        self, i: int, previous: Mapping[int, int], explains: Callable[[int], bool]
    ) -> list[int]:
        """What explains the state just before op ``i``, whose revision is known.

        The op just before it in revision order if that ``explains`` it, else ops of unknown
        revision that would, else that previous op itself as evidence of the violation.
        """
        before = previous.get(i)
        if before is not None and explains(before):
            return [before]
        unknown = [j for j, op in enumerate(self.ops) if op.rev is None and explains(j)]
        return unknown or ([] if before is None else [before])

    def _latest_before(self, wanted: Callable[[int], bool]) -> list[int | None]:
        """For each op, the latest-invoked op satisfying ``wanted`` that may precede it."""
        ops = self.ops
        candidates = sorted((ops[j].invoke, j) for j in range(len(ops)) if wanted(j))
        invokes = [t for t, _ in candidates]
        result: list[int | None] = []
        for op in ops:
            k = bisect.bisect_right(invokes, op.complete)
            result.append(candidates[k - 1][1] if k else None)
        return result

    def missing(self, keep: Sequence[int]) -> list[int]:
        """Ops to add back so every observation in ``keep`` has something to explain it."""
        ops = self.ops
        kept = set(keep)
        first_write = min((ops[j].invoke for j in keep if ops[j].is_write), default=_INF)
        first_delete = min((ops[j].invoke for j in keep if self.is_delete[j]), default=_INF)
        # highest known revision among kept writes completed by a time, and among kept
        # deletes invoked by a time (deletes of unknown revision are not counted)
        writes = sorted(
            (ops[j].complete, rev) for j in keep if ops[j].is_write and (rev := ops[j].rev)
        )
        write_times = [t for t, _ in writes]
        write_revs = list(itertools.accumulate((r for _, r in writes), max))
        deletes = sorted((ops[j].invoke, ops[j].rev or -1) for j in keep if self.is_delete[j])
        delete_times = [t for t, _ in deletes]
        delete_revs = list(itertools.accumulate((r for _, r in deletes), max))
        add: list[int | None] = []
        for i in keep:
            sources = self.sources[i]
            if sources and not any(j in kept for j in sources):
                add.append(sources[0])
            end = ops[i].complete
            if self.present[i] and first_write > end:
                add.append(self.last_write[i])  # a successful delete needs an earlier write
            if not self.absent[i]:
                continue
            k = bisect.bisect_left(write_times, ops[i].invoke)
            if k:  # absent after a write of known revision: keep a delete that follows it
                before = write_revs[k - 1]
                d = bisect.bisect_right(delete_times, end)
                if not d or delete_revs[d - 1] < before:
                    add.append(self._delete_after(before, end))
            elif first_write <= end < first_delete:
                add.append(self.last_delete[i])  # absent after a write: needs a delete
        return sorted({j for j in add if j is not None and j not in kept})

    def _delete_after(self, rev: float, end: float) -> int | None:
        """The first delete after revision ``rev`` that may precede time ``end``."""
        ops = self.ops
        found = [
            (_INF if ops[j].rev is None else ops[j].rev, -ops[j].invoke, j)
            for j in range(len(ops))
            if self.is_delete[j] and ops[j].invoke <= end and (ops[j].rev or _INF) > rev
        ]
        return min(found)[2] if found else None

    def repair(self, keep: Sequence[int]) -> list[int]:
        """``keep`` plus whatever (transitively) explains its observations, in order."""
        result = list(keep)
        for _ in range(len(self.ops)):
            extra = self.missing(result)
            if not extra:
                break
            result = sorted(result + extra)
        return result


def _shrink(
    ops: list[_Op],
    accept: Callable[[list[int]], bool],
    deadline: float,
    fixed: int | None = None,
) -> tuple[list[int], bool]:
    """ddmin-style: drop chunks of ops (adding back explaining ops) while ``accept`` holds.

    ``fixed`` is never dropped.  Returns the indices kept and whether shrinking ran to
    completion (no single op can be dropped).
    """
    support = _Support(ops)
    keep = support.repair(range(len(ops)))
    parts = 2
    while len(keep) >= 2:
        size = math.ceil(len(keep) / parts)
        shrunk = False
        for start in range(0, len(keep), size):
            if time.monotonic() > deadline:
                return keep, False
            rest = keep[:start] + keep[start + size :]
            if fixed is not None and fixed not in rest:
                rest = sorted([*rest, fixed])
            candidate = support.repair(rest)
            if len(candidate) < len(keep) and accept(candidate):
                keep = candidate
                parts = max(parts - 1, 2)
                shrunk = True
                break
        if not shrunk:
            if size == 1:
                break
            parts = min(parts * 2, len(keep))
    return keep, True


def _show_state(state: _State | None, values: _Values) -> str:
    """Readable register state."""
    if state is None:
        return "?"
    value, rev, floor = state
    if value is None:
        return f"absent (last revision used: {floor})" if floor else "absent"
    if rev is None:
        return f"value={values.show(value)} rev=? (> {floor})"
    return f"value={values.show(value)} rev={rev}"


def _why(state: _State, op: _Op, values: _Values) -> str:
    """Why ``op`` does not apply in ``state`` (or that it applies but leads nowhere)."""
    if _step(state, op) is not None:
        return "it applies, but every continuation was already refuted"
    value, rev, floor = state
    shown = _show_state(state, values)
    if op.kind == _K_GET:
        seen = "absent" if op.value is None else f"{values.show(op.value)} rev={op.rev}"
        return f"it observed {seen} but the register holds {shown}"
    if op.kind == _K_CAS and op.status == _NEG:
        return f"it reported a mismatch but the revision was {rev} (= expected)"
    matches = rev == op.expected or (rev is None and op.expected > floor)
    if op.kind == _K_CAS and not matches:
        return f"it succeeded with expected rev={op.expected} but the register holds {shown}"
    if op.kind == _K_DEL and op.status == _NEG:
        return f"it reported notfound but the register holds {shown}"
    if op.kind == _K_DEL and value is None:
        return "it deleted a key that was absent"
    return f"its revision {op.rev} is not above the last revision used ({floor})"


def _brief(op: Operation) -> str:
    """:meth:`Operation.describe` without the column padding, for use inside a sentence."""
    return " ".join(op.describe().split())


def _source_line(op: _Op) -> str:
    """The op's original record as a line, flagged when a cut made it in-flight."""
    line = op.source.describe()
    return line + "  (in flight at the cut)" if op.pending else line


# --------------------------------------------------------------------------------------------
# Results and the entry points


@dataclass
class KeyResult:
    """Verdict for one key's sub-history, with an explanation when it is not 'ok'."""

    key: str
    verdict: str
    operations: int  # ops the search saw
    dropped: int  # failed ops, unknown reads and unobservable unknown writes left out
    elapsed: float
    states: int  # (linearized set, state) pairs the search cached
    reason: str = ""
    failing_op: Operation | None = None
    minimal_history: list[Operation] = field(default_factory=list)
    explanation: str = ""

    def format(self) -> str:
        """Summary line, followed by the explanation if there is one."""
        line = (
            f"key {self.key!r}: {self.verdict} ({self.operations} ops, {self.dropped} "
            f"dropped, {self.states} states, {self.elapsed:.3f}s)"
        )
        if self.reason:
            line += f": {self.reason}"
        return line + ("\n" + self.explanation if self.explanation else "")


@dataclass
class CheckResult:
    """Verdict for a whole history: 'illegal' if any key is, else 'unknown' if any key is."""

    verdict: str
    keys: dict[str, KeyResult]
    elapsed: float

    @property
    def illegal_keys(self) -> list[str]:
        """Keys whose sub-history is not linearizable."""
        return [k for k, r in self.keys.items() if r.verdict == ILLEGAL]

    @property
    def unknown_keys(self) -> list[str]:
        """Keys the search could not decide within its budget."""
        return [k for k, r in self.keys.items() if r.verdict == UNKNOWN]

    def format(self, all_keys: bool = False) -> str:
        """Readable report: verdict line, then keys that are not ok (or every key)."""
        counts = {
            v: sum(r.verdict == v for r in self.keys.values()) for v in (OK, ILLEGAL, UNKNOWN)
        }
        lines = [
            f"verdict: {self.verdict} ({len(self.keys)} keys: {counts[OK]} ok, "
            f"{counts[ILLEGAL]} illegal, {counts[UNKNOWN]} unknown; "
            f"{self.elapsed:.3f}s)"
        ]
        lines += [r.format() for r in self.keys.values() if all_keys or r.verdict != OK]
        return "\n".join(lines)


def _explain(
    compiled: list[_Op],
    init: _State,
    first: _Search,
    values: _Values,
    budget: float,
    max_states: int,
) -> tuple[_Op | None, list[_Op], str]:
    """Find a small illegal window of an illegal key and describe it.

    1. Binary search for the earliest cut of the history that is illegal: the op completing
       at that cut is the culprit (with it still in flight, everything before fits).
    2. Shrink that cut ddmin-style, keeping the culprit, keeping ops that explain what the
       kept ops observed, and keeping it a violation *by the culprit*: illegal, but legal
       again with the culprit in flight.
    Every candidate is re-checked, so the reported window is itself a proof.
    """
    deadline = time.monotonic() + budget

    def verdict_of(sub: list[_Op]) -> str:
        now = time.monotonic()
        if now > deadline:
            return UNKNOWN
        check_deadline = now + min(deadline - now, max(budget / 4, 0.05))
        return _search(sub, init, check_deadline, max_states).verdict

    cuts = sorted({op.complete for op in compiled if op.required})
    lo, hi = 0, len(cuts) - 1  # the cut at cuts[-1] is the whole history: illegal
    if first.stuck_op is not None and compiled[first.stuck_op].required:
        guess = cuts.index(compiled[first.stuck_op].complete)
        if verdict_of(_truncate(compiled, cuts[guess])) == ILLEGAL:
            hi = guess
    while lo < hi and time.monotonic() < deadline:
        mid = (lo + hi) // 2
        if verdict_of(_truncate(compiled, cuts[mid])) == ILLEGAL:
            hi = mid
        else:
            lo = mid + 1
    window = _truncate(compiled, cuts[hi])
    culprit: int | None = None
    if lo == hi:
        at_cut = [i for i, op in enumerate(window) if op.required and op.complete == cuts[hi]]
        culprit = at_cut[0] if len(at_cut) == 1 else None

    def accept(keep: list[int]) -> bool:
        sub = [window[i] for i in keep]
        if verdict_of(sub) != ILLEGAL:
            return False
        if culprit is None:
            return True
        relaxed = [window[i] for i in keep if i != culprit]
        suspect = window[culprit]
        if (suspect.is_write or suspect.kind == _K_DEL) and suspect.status != _NEG:
            relaxed.append(suspect.pending_copy())  # in flight: may or may not take effect
        return verdict_of(relaxed) == OK

    if culprit is not None and not accept(list(range(len(window)))):
        culprit = None
    kept, complete = _shrink(window, accept, deadline, culprit)
    minimal = [window[i] for i in kept]
    final = _search(minimal, init, time.monotonic() + max(budget, 1.0), max_states, want_path=True)
    if final.verdict != ILLEGAL:  # only if the last check ran out of time
        minimal, final, culprit = compiled, first, None
    if culprit is not None:
        marked: _Op | None = window[culprit]
    else:
        marked = minimal[final.stuck_op] if final.stuck_op is not None else None
    stuck = minimal[final.stuck_op] if final.stuck_op is not None else None

    label = "minimal" if complete else "smallest found (shrinking ran out of time)"
    lines = [
        f"  {label} illegal sub-history: {len(minimal)} of {len(compiled)} ops, by invocation time:"
    ]
    for op in sorted(minimal, key=lambda o: (o.invoke, o.complete)):
        lines.append(("  * " if op is marked else "    ") + _source_line(op))
    if culprit is not None:
        lines.append("  (*: the history is linearizable up to this op's completion, not after)")
    if final.path is not None:
        lines.append(
            "  longest valid order found:" if final.path else "  no operation can go first:"
        )
        for n, i in enumerate(final.path, 1):
            lines.append(f"    {n:>2}. {minimal[i].source.describe()}")
        lines.append(f"  state then: {_show_state(final.stuck_state, values)}")
    if stuck is not None and final.stuck_state is not None:
        lines.append("  next due, but it cannot be linearized there:")
        lines.append(f"    {stuck.source.describe()}")
        after = _step(final.stuck_state, stuck)
        if after is None:
            lines.append(f"    {_why(final.stuck_state, stuck, values)}")
        else:
            lines.append(
                f"    it applies, leaving {_show_state(after, values)}, "
                "but the ops due after it cannot follow"
            )
            if marked is not None and marked is not stuck and _step(after, marked) is None:
                lines.append(f"    (*: {_why(after, marked, values)})")
    if first.stuck_op is not None:
        lines.append(
            f"  whole key history: at most {first.depth} of {len(compiled)} ops linearized, "
            f"stuck before {_brief(compiled[first.stuck_op].source)} "
            f"in state {_show_state(first.stuck_state, values)}"
        )
    return marked, minimal, "\n".join(lines)


def check_history(
    ops: Iterable[Operation],
    time_budget_per_key: float = 10.0,
    *,
    shrink_budget_per_key: float = 5.0,
    max_states_per_key: int = 3_000_000,
    initial: Mapping[str, tuple[Any, int]] | None = None,
) -> CheckResult:
    """Check a whole history for linearizability, one key at a time.

    ``time_budget_per_key`` bounds each key's search (exceeding it makes the key 'unknown');
    ``shrink_budget_per_key`` bounds the extra work of explaining an illegal key;
    ``max_states_per_key`` bounds the search cache (memory); ``initial`` gives
    ``(value, revision)`` for keys that already existed when the history began.
    """
    started = time.monotonic()
    by_key: dict[str, list[Operation]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    values = _Values()
    known = _known_revisions(op for key_ops in by_key.values() for op in key_ops)
    results: dict[str, KeyResult] = {}
    for key, key_ops in by_key.items():
        t0 = time.monotonic()
        init = _INITIAL
        if initial is not None and key in initial:
            value, rev = initial[key]
            init = (values.intern(value), rev, rev) if value is not None else (None, 0, rev)
        compiled, dropped = _compile(key_ops, values, known)
        found = _search(compiled, init, t0 + time_budget_per_key, max_states_per_key)
        result = KeyResult(
            key, found.verdict, len(compiled), dropped, 0.0, found.states, found.reason
        )
        if found.verdict == ILLEGAL:
            stuck, minimal, text = _explain(
                compiled, init, found, values, shrink_budget_per_key, max_states_per_key
            )
            result.failing_op = stuck.source if stuck is not None else None
            result.minimal_history = [op.source for op in minimal]
            result.explanation = text
        elif found.verdict == UNKNOWN and found.stuck_op is not None:
            result.explanation = (
                f"  deepest point: {found.depth} of {len(compiled)} ops linearized; next due:\n"
                f"    {compiled[found.stuck_op].source.describe()}"
            )
        result.elapsed = time.monotonic() - t0
        results[key] = result
    verdicts = {r.verdict for r in results.values()}
    verdict = ILLEGAL if ILLEGAL in verdicts else UNKNOWN if UNKNOWN in verdicts else OK
    return CheckResult(verdict, results, time.monotonic() - started)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: check a JSON lines history; exit 0 if ok, 1 if illegal, 2 if unknown."""
    parser = argparse.ArgumentParser(
        prog="python -m kvd.torture.checker",
        description="Check a kvd history (JSON lines) for linearizability.",
    )
    parser.add_argument("history", type=Path, help="JSON lines file, one operation per line")
    parser.add_argument(
        "--budget",
        type=float,
        default=10.0,
        help="search time budget per key in seconds (default 10)",
    )
    parser.add_argument(
        "--shrink-budget",
        type=float,
        default=5.0,
        help="time per illegal key spent finding a small window (default 5)",
    )
    parser.add_argument("--all-keys", action="store_true", help="report ok keys too")
    args = parser.parse_args(argv)
    result = check_history(
        load_history(args.history), args.budget, shrink_budget_per_key=args.shrink_budget
    )
    print(result.format(all_keys=args.all_keys))
    return {OK: 0, ILLEGAL: 1}.get(result.verdict, 2)


if __name__ == "__main__":
    sys.exit(main())

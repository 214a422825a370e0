"""Safety rule 6 of DESIGN.md section 5: restart."""

from __future__ import annotations

from typing import Any

from kvd.wal.writer import LAZY_DELAY
from tests.replication.safety.support import member
from tests.replication.support import InlineReactor, answer, entry, prepare, reopen
from tests.support import follower_of


# Fails if: recover_store applies every recovered entry (drop the commit-mark `break`).
def test_rule6_restart_applies_only_up_to_the_last_persisted_commit_mark(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """The log comes back whole; the store only as far as the commit mark."""
    node = member(tmp_path, reactor, "b")
    answer(follower_of(node).prepare(prepare(
        "a", 1, (0, 0), [entry(1, i) for i in range(1, 5)], 2))).get()
    reactor.advance(LAZY_DELAY)  # commit marks ride with the next write, or follow shortly
    node = reopen(node, reactor)
    assert node.rlog.last == (1, 4)
    assert node.rlog.commit_index == 2 and node.store.applied_index == 2
    assert node.store.get(b"k2") is not None and node.store.get(b"k3") is None

"""Safety rule 3 of DESIGN.md section 5: commit by counting only in the current epoch."""

from __future__ import annotations

from typing import Any

from tests.replication.safety.support import give_log, lead, member
from tests.replication.support import FakeLink, InlineReactor, entry


# Fails if: Leader.advance_commit loses both its `candidate < self.marker_index` and its
# `epoch_at(candidate) != self.epoch` guards (each alone is enough: they are redundant).
def test_rule3_older_epoch_entries_commit_only_through_the_marker(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """Entries of epoch 1 held by W voters stay uncommitted until epoch 2's marker is."""
    node = member(tmp_path, reactor, "a")
    give_log(node, [entry(1, 1), entry(1, 2)], commit=0, promised=1)
    link = FakeLink("b")
    leader = lead(node, 2, 2, link, FakeLink("c"))
    assert leader.marker_index == 3
    link.match_index = 2
    leader.stream_answered(link)
    assert node.rlog.commit_index == 0 and node.store.applied_index == 0
    link.match_index = 3
    leader.stream_answered(link)
    assert node.rlog.commit_index == 3 and node.store.applied_index == 3

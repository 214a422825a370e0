"""Safety rule 14 of DESIGN.md section 5: a total state machine."""

from __future__ import annotations

from typing import Any

from kvd.wal.record import LogEntry
from kvd.wal.writer import LAZY_DELAY
from tests.replication.safety.support import lead, member, serve
from tests.replication.support import (
    Answer,
    FakeLink,
    InlineReactor,
    answer,
    entry,
    prepare,
    put,
    reopen,
)
from tests.support import follower_of

# Findings of the protocol review


# Fails if: Store._apply_one drops its `problem(command)` check.
def test_rule14_a_malformed_command_yields_an_error_result_and_the_entry_applies(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A put with no key: the entry applies, later ones too, and so does a restart."""
    node = member(tmp_path, reactor, "b")
    bad = LogEntry(1, 1, [{"op": "put"}, put("k1")])
    ack = answer(follower_of(node).prepare(prepare("a", 1, (0, 0), [bad, entry(1, 2)], 2))).get()
    assert ack["ok"]
    assert node.store.applied_index == 2 and node.store.revision == 2
    reactor.advance(LAZY_DELAY)  # the commit mark reaches the disk
    node = reopen(node, reactor)
    assert node.store.applied_index == 2 and node.store.get(b"k1") is not None


# Fails if: Leader.propose accepts commands that are not a list of maps (drop its check).
def test_rule14_every_queued_write_gets_exactly_one_answer(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    node = member(tmp_path, reactor, "a")
    link = FakeLink("b")
    leader = lead(node, 1, 2, link)
    serve(node, link)
    bad = Answer(leader.propose(7))  # type: ignore[arg-type]
    good = Answer(leader.propose([put("k")]))
    reactor.advance(0)
    link.match_index = node.rlog.last_index
    leader.stream_answered(link)
    assert bad.failure is not None
    assert good.get() == [{"ok": True, "revision": 1}]

"""Safety rule 8 of DESIGN.md section 5: answers that depend on pending state."""

from __future__ import annotations

from typing import Any

import pytest

from kvd.replication.log import FatalLogError
from tests.replication.safety.support import give_log, lead, member, serve, submit
from tests.replication.support import FakeLink, InlineReactor, entry, put


# Fails if: Node.submit answers a compare that fails against the applied store at once
# (insert `if (f := self.store._check_prev(commands[0]["k"], commands[0])): return succeed([f])`).
def test_rule8_a_failed_compare_is_answered_only_once_its_entry_commits(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """The 409 of a CAS waits for the commit of the entry it was evaluated in, in log order."""
    node = member(tmp_path, reactor, "a")
    link = FakeLink("b")
    lead(node, 1, 2, link)
    leader = serve(node, link)
    write = submit(node, reactor, put("k", "1", "w1"))
    mismatch = submit(node, reactor, put("k", "2", "cas1", prev=7))
    must_not_exist = submit(node, reactor, put("k", "3", "cas2", prev=0))
    assert not (write.called or mismatch.called or must_not_exist.called)
    link.match_index = node.rlog.last_index
    leader.stream_answered(link)
    assert write.get() == [{"ok": True, "revision": 1}]
    assert mismatch.get()[0]["error"] == "conflict"
    # Evaluated after the pending put, not against the store as it was on arrival.
    assert must_not_exist.get()[0] == {"ok": False, "error": "conflict", "revision": 1,
                                       "current_revision": 1}


# Smaller findings of the protocol review


# Fails if: ReplicatedLog.entry drops its range check (a negative offset reads the tail).
def test_the_log_refuses_to_read_an_entry_it_does_not_hold(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    node = member(tmp_path, reactor, "b")
    give_log(node, [entry(1, 1), entry(1, 2)], promised=1)
    with pytest.raises(FatalLogError):
        node.rlog.entry(0)
    with pytest.raises(FatalLogError):
        node.rlog.entry(3)

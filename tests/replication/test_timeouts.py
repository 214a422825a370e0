"""A write that cannot reach W copies in time answers 504, and may still commit later."""

from __future__ import annotations

from typing import Any

from twisted.python.failure import Failure

from kvd import errors
from kvd.node import NodeSettings
from kvd.store import put_command
from tests.support import InlineReactor, open_inline_node


def test_a_write_without_a_quorum_times_out_as_outcome_unknown(tmp_path: Any) -> None:
    reactor = InlineReactor()
    node = open_inline_node(str(tmp_path), reactor,
                            NodeSettings(url="http://127.0.0.1:1", write_timeout=2.0))
    assert node.leader is not None
    node.leader.write_quorum = 2  # no follower will ever answer
    outcomes: list[Any] = []
    node.submit([put_command(b"k", b"v", "r1")]).addBoth(outcomes.append)
    reactor.advance(0)
    reactor.advance(1.5)
    assert outcomes == []
    reactor.advance(1.0)
    assert isinstance(outcomes[0], Failure) and outcomes[0].check(errors.InDoubt)
    assert outcomes[0].value.as_json()["error"]["outcome"] == "unknown"
    # It was proposed: once a quorum holds it, it commits after all.
    node.leader.write_quorum = 1
    node.leader.advance_commit()
    kv = node.store.get(b"k")
    assert kv is not None and kv.value == b"v"
    assert len(outcomes) == 1

"""The leader's stream to one follower (kvd/replication/stream.py): what it does
with the follower's answers, on real files, the follower's answers faked."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.replication.safety.support import lead, member, stream_to
from tests.replication.support import InlineReactor, Peers, close_all


@pytest.fixture
def reactor() -> Iterator[InlineReactor]:
    yield InlineReactor()
    close_all()


@pytest.mark.parametrize("reply", [
    "ok", {"ok": True, "index": "7", "promised": 1}, {"ok": True, "promised": 1},
    {"ok": False, "nack": True, "last_index": None, "promised": 1},
    {"ok": False, "reject": "sender is not a voter", "last_index": -1, "promised": 0},
    {"ok": True, "index": 1, "promised": True},
])
def test_a_malformed_answer_changes_nothing_and_the_stream_tries_again(
    tmp_path: Any, reactor: InlineReactor, reply: Any
) -> None:
    node = member(tmp_path, reactor, "a")
    lead(node, 1, 2)
    peers = Peers()
    peers.handlers["http://b"] = lambda name, body: reply
    stream = stream_to(node, peers, "b")
    stream.start()
    assert len(peers.sent("prepare")) == 1 and stream.match_index == 0
    before = stream.next_index
    reactor.advance(0.25)  # RETRY_SECONDS later
    assert len(peers.sent("prepare")) == 2
    assert (stream.match_index, stream.next_index, stream.confirmed_seq) == (0, before, 0)

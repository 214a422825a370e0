"""The peer API's forward route over a real node, through StubTreq."""

from __future__ import annotations

from typing import Any

import pytest
from treq.testing import StubTreq

from kvd.api.peer import PeerAPI
from kvd.replication.peer import MSGPACK, PEER_PREFIX, decode, encode
from tests.support import InlineReactor, open_inline_node


def post(treq: StubTreq, route: str, body: Any) -> tuple[int, Any]:
    d = treq.post(f"http://kvd{PEER_PREFIX}/{route}", data=encode(body),
                  headers={b"Content-Type": [MSGPACK]})
    treq.flush()
    responses: list[Any] = []
    d.addCallback(responses.append)
    assert responses
    content: list[bytes] = []
    responses[0].content().addCallback(content.append)
    treq.flush()
    return responses[0].code, decode(content[0])


# Fails if: PeerAPI.forward submits `message["commands"]` without `client_commands` (rule 14).
@pytest.mark.parametrize("commands", [
    5,
    [],
    [{"op": "put"}],
    [{"op": "put", "k": b"k", "v": "not bytes"}],
    [{"op": "config", "voters": [["x", "forged"]]}],
    [{"op": "txn", "compare": "x", "success": [], "failure": []}],
])
def test_a_forward_with_malformed_commands_is_a_400_and_changes_nothing(
    tmp_path: Any, commands: Any
) -> None:
    reactor = InlineReactor()
    node = open_inline_node(str(tmp_path), reactor)
    treq = StubTreq(PeerAPI(lambda: node).resource())
    last = node.rlog.last_index
    status, body = post(treq, "forward", {"commands": commands})
    reactor.advance(0)
    assert status == 400 and body["code"] == "bad_request", body
    assert node.rlog.last_index == last and node.store.revision == 0

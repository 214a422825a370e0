"""The peer API's forward route over a real node, through StubTreq."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from treq.testing import StubTreq

from kvd.replication.peer import MSGPACK, PEER_PREFIX, decode, encode
from kvd.replication.peerauth import HEADER as AUTH_HEADER
from kvd.replication.peerauth import PeerAuth
from kvd.web.peer import PeerAPI
from tests.support import InlineReactor, follower_of, open_inline_node

AUTH = PeerAuth(b"a test secret of enough bytes")


def post(treq: StubTreq, route: str, body: Any, auth: PeerAuth | None = AUTH,
         raw: bytes | None = None) -> tuple[int, Any]:
    path = f"{PEER_PREFIX}/{route}"
    data = encode(body) if raw is None else raw
    headers = {b"Content-Type": [MSGPACK]}
    if auth is not None:
        headers[AUTH_HEADER] = [auth.sign_request(path.encode(), data)]
    d = treq.post(f"http://kvd{path}", data=data, headers=headers)
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
    treq = StubTreq(PeerAPI(lambda: node, lambda: follower_of(node), AUTH).resource())
    last = node.rlog.last_index
    status, body = post(treq, "forward", {"commands": commands})
    reactor.advance(0)
    assert status == 400 and body["code"] == "bad_request", body
    assert node.rlog.last_index == last and node.store.revision == 0


def _node_and_treq(tmp_path: Any) -> tuple[Any, InlineReactor, StubTreq]:
    reactor = InlineReactor()
    node = open_inline_node(str(tmp_path), reactor)
    api = PeerAPI(lambda: node, lambda: follower_of(node), AUTH)
    return node, reactor, StubTreq(api.resource())


def _state(node: Any) -> tuple[Any, ...]:
    rlog = node.rlog
    return (rlog.promised_epoch, rlog.promised_leader, rlog.last, rlog.commit_index,
            node.store.digest(), node.role)


ROUTES = ["newepoch", "prepare", "snapshot", "fetch", "readindex", "forward"]


# Fails if: PeerAPI._message decodes a request whose MAC it has not checked.
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("auth", [None, PeerAuth(b"another cluster's secret!!")])
def test_a_peer_message_without_valid_credentials_is_a_401_and_changes_nothing(
    tmp_path: Any, route: str, auth: PeerAuth | None
) -> None:
    node, reactor, treq = _node_and_treq(tmp_path)
    before = _state(node)
    forged = {"epoch": 99, "node_id": node.node_id, "url": "http://x", "peer_url": "http://x",
              "incarnation": node.identity.incarnation, "prev": [0, 0], "entries": [],
              "commit": 0, "from": 1, "commands": [{"op": "del", "k": b"k"}]}
    status, body = post(treq, route, forged, auth=auth)
    reactor.advance(0)
    assert status == 401 and body["code"] == "unauthorized"
    assert _state(node) == before


def test_a_body_altered_after_signing_is_a_401(tmp_path: Any) -> None:
    node, reactor, treq = _node_and_treq(tmp_path)
    path = f"{PEER_PREFIX}/newepoch"
    mac = AUTH.sign_request(path.encode(), encode({"epoch": 1}))
    d = treq.post(f"http://kvd{path}", data=encode({"epoch": 2}),
                  headers={b"Content-Type": [MSGPACK], AUTH_HEADER: [mac]})
    treq.flush()
    codes: list[int] = []
    d.addCallback(lambda response: codes.append(response.code))
    assert codes == [401]


_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=8)
            | st.text(max_size=8) | st.floats(allow_nan=False))
_fields = st.sampled_from(["epoch", "node_id", "url", "peer_url", "incarnation", "prev",
                           "entries", "commit", "from", "snapshot_epoch", "snapshot_index",
                           "offset", "total", "data", "commands"])
_bodies = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(_fields, inner, max_size=8), max_leaves=16)


# The fuzzer of the trust boundary: valid credentials, any body.
@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), body=_bodies)
def test_fuzz_no_peer_message_gets_a_5xx_or_changes_a_node_it_should_not(
    tmp_path_factory: Any, route: str, body: Any
) -> None:
    """A standalone node accepts no peer message, so nothing may change at all."""
    node, reactor, treq = _node_and_treq(tmp_path_factory.mktemp("fuzz"))
    before = _state(node)
    status, _ = post(treq, route, body)
    reactor.advance(0)
    assert status < 500 or status == 503, (route, body, status)
    assert _state(node) == before
    node.rlog._writer.close()


def _valid(route: str) -> dict[str, Any]:
    """A well-formed message of ``route`` from voter a at epoch 3."""
    from tests.replication.support import OTHER_DISK

    sender = {"epoch": 3, "node_id": "a", "url": "http://a", "peer_url": "http://a",
              "incarnation": OTHER_DISK}
    return {
        "newepoch": sender,
        "prepare": {**sender, "prev": [0, 0], "entries": [[3, 1, encode([])]], "commit": 0},
        "snapshot": {**sender, "snapshot_epoch": 3, "snapshot_index": 1, "offset": 0,
                     "total": 1, "data": b"x"},
        "fetch": {"epoch": 3, "node_id": "a", "incarnation": OTHER_DISK, "from": 1},
        "forward": {"commands": [{"op": "del", "k": b"k", "rid": "r"}]},
    }[route]


# Fails if: PeerAPI._message skips `messages.check` (malformed fields reach the handlers).
@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(["newepoch", "prepare", "snapshot", "fetch", "forward"]),
       field=_fields, value=_bodies)
def test_fuzz_a_malformed_field_of_a_voters_message_is_a_400_before_any_side_effect(
    tmp_path_factory: Any, route: str, field: str, value: Any
) -> None:
    """One field of a valid message from a voter replaced by anything."""
    from tests.replication.support import close_all, member_of

    reactor = InlineReactor()
    node = member_of(str(tmp_path_factory.mktemp("fuzz")), reactor, "b", ("a", "b", "c"))
    treq = StubTreq(PeerAPI(lambda: node, lambda: follower_of(node), AUTH).resource())
    message = {**_valid(route), field: value}
    before = _state(node)
    status, _ = post(treq, route, message)
    reactor.advance(0)
    assert status < 500 or status == 503, (route, message, status)
    if status == 400:
        assert _state(node) == before, (route, message)
    close_all()


def _snapshot_bytes(store: Any, meta: Any = None) -> bytes:
    from kvd.wal import snapshot

    return snapshot.encode(snapshot.Snapshot(3, 1, store, meta or {}))


# Fails if: Follower._prepare appends entries it has not decoded (drop `_decoded`), or
# Follower._install_snapshot installs a snapshot whose store it has not read back.
@pytest.mark.parametrize("route,fields", [
    ("prepare", {"entries": [[3, 1, b"\xc1"]]}),
    ("prepare", {"entries": [[3, 1, encode({"op": "put"})]]}),
    ("prepare", {"entries": [[4, 1, encode([])]]}),
    ("snapshot", {"data": _snapshot_bytes({"revision": "x"})}),
    ("snapshot", {"data": _snapshot_bytes(
        {"revision": 1, "applied_index": 1, "data": {b"k": b"short"}, "requests": []})}),
    # An unknown header tag: read unchecked, it would pass for the long header.
    ("snapshot", {"data": _snapshot_bytes(
        {"revision": 1, "applied_index": 1, "kv": {b"k": b"\x07" + bytes(24)},
         "requests": []})}),
    ("snapshot", {"data": _snapshot_bytes(
        {"revision": 1, "applied_index": 1, "data": {}, "requests": []}, {"voters": "x"})}),
])
def test_an_unreadable_entry_or_snapshot_is_a_400_before_any_side_effect(
    tmp_path: Any, route: str, fields: dict[str, Any]
) -> None:
    from tests.replication.support import close_all, member_of

    reactor = InlineReactor()
    node = member_of(str(tmp_path), reactor, "b", ("a", "b", "c"))
    treq = StubTreq(PeerAPI(lambda: node, lambda: follower_of(node), AUTH).resource())
    before = _state(node)
    message = {**_valid(route), **fields}
    if route == "snapshot":
        message["total"] = len(message["data"])
    status, body = post(treq, route, message)
    reactor.advance(0)
    assert status == 400, body
    assert _state(node) == before
    assert node.data_dir is not None and node.data_dir.snapshot_indexes() == []
    close_all()


# Fails if: PeerAuth.sign_request uses no fresh nonce (an answer could be replayed).
def test_an_answer_is_good_for_its_own_request_only() -> None:
    path, body = b"/peer/v1/readindex", encode({})
    first, second = AUTH.sign_request(path, body), AUTH.sign_request(path, body)
    assert first != second
    assert AUTH.request_ok(path, body, first) and AUTH.request_ok(path, body, second)
    answer = encode({"index": 7})
    proof = AUTH.sign_answer(first, answer)
    assert AUTH.answer_ok(first, answer, proof)
    assert not AUTH.answer_ok(second, answer, proof), "a recorded answer replayed"


# Fails if: PeerAPI._message takes a body past its limit (one sent without a length).
def test_a_peer_body_past_the_limit_is_a_413_before_it_is_decoded(tmp_path: Any) -> None:
    from tests.replication.support import close_all, member_of

    node = member_of(str(tmp_path), InlineReactor(), "b", ("a", "b", "c"))
    limit = len(encode(_valid("newepoch"))) + 10
    treq = StubTreq(PeerAPI(lambda: node, lambda: follower_of(node), AUTH,
                            max_body_bytes=limit).resource())
    before = _state(node)
    status, body = post(treq, "newepoch", {**_valid("newepoch"), "pad": b"x" * 100})
    assert status == 413, body
    assert _state(node) == before
    assert post(treq, "newepoch", _valid("newepoch"))[0] == 200
    close_all()

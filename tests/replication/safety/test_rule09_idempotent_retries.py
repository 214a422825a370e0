"""Safety rule 9 of DESIGN.md section 5: idempotent retries."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import fail
from twisted.internet.error import ConnectionLost

from kvd.errors import InDoubt, NotReady
from kvd.node import Role
from kvd.replication.peer import NotDelivered
from tests.replication.safety.support import install, member, snapshot_of, submit
from tests.replication.support import Answer, InlineReactor, Peers, answer, entry, prepare, put
from tests.support import follower_of, open_inline_node


# Fails if: Store._apply_one ignores the remembered result of a request id.
def test_rule9_a_retried_request_id_returns_the_first_result_and_applies_once(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A retried CAS gets its first answer (not a conflict), also after a restart."""
    path = str(tmp_path / "standalone")
    node = open_inline_node(path, reactor)
    cas = put("k", "v", "req-1", prev=0)
    first = submit(node, reactor, cas).get()
    assert first == [{"ok": True, "revision": 1}]
    assert submit(node, reactor, cas).get() == first
    kv = node.store.get(b"k")
    assert kv is not None and kv.version == 1 and node.store.revision == 1
    assert submit(node, reactor, put("k", "v", "req-2", prev=0)).get()[0]["error"] == "conflict"
    node.rlog._writer.close()
    node = open_inline_node(path, reactor)
    assert submit(node, reactor, cas).get() == first
    kv = node.store.get(b"k")
    assert kv is not None and kv.version == 1
    node.rlog._writer.close()


# Fails if: Store.from_snapshot starts with an empty request window.
def test_rule9_the_request_window_travels_in_snapshots(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """A follower that installed a snapshot answers a retry with the first result."""
    entries = [entry(1, 1, put("k", "v", "req-1", prev=0)), entry(1, 2)]
    leader_store, data = snapshot_of(entries)
    node = member(tmp_path, reactor, "b")
    assert install(node, "a", 1, entries[-1], data).get()["ok"]
    assert node.store.result_for("req-1") == {"ok": True, "revision": 1}
    retry = node.store.apply(3, [put("k", "v", "req-1", prev=0)])
    assert retry == [{"ok": True, "revision": 1}]
    assert node.store.digest() == leader_store.digest()


# Fails if: Node._forward answers NotReady (503) for a forward that failed after sending.
def test_rule9_a_forward_that_fails_after_it_was_sent_answers_504(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    """Only a forward that certainly did not reach the leader is a 503."""
    node = member(tmp_path, reactor, "b")
    answer(follower_of(node).prepare(prepare("a", 1, (0, 0), [], 0))).get()
    assert node.role == Role.FOLLOWER
    peers = Peers()
    node.peer = peers  # type: ignore[assignment]
    peers.handlers["http://a"] = lambda name, body: fail(ConnectionLost("reset"))
    lost = Answer(node.submit([put("k")]))
    assert lost.failure is not None and isinstance(lost.failure.value, InDoubt)
    assert lost.failure.value.status == 504
    peers.handlers["http://a"] = lambda name, body: fail(NotDelivered("refused"))
    refused = Answer(node.submit([put("k")]))
    assert refused.failure is not None and isinstance(refused.failure.value, NotReady)


# Findings of the protocol review
# Rule 9: a forward that fails after it was sent answers 504


# Fails if: Node._forward answers NotReady for a leader's 504 (`raise InDoubt(message)`
# -> `raise NotReady(message)`).
def test_rule9_a_leaders_504_to_a_forward_stays_a_504(
    tmp_path: Any, reactor: InlineReactor
) -> None:
    from kvd.replication.peer import PeerError

    node = member(tmp_path, reactor, "b")
    answer(follower_of(node).prepare(prepare("a", 1, (0, 0), [], 0))).get()
    peers = Peers()
    node.peer = peers.client()
    peers.handlers["http://a"] = lambda name, body: fail(PeerError(504, {
        "code": "outcome_unknown", "message": "not committed within 5s"}))
    lost = Answer(node.submit([put("k")]))
    assert lost.failure is not None and isinstance(lost.failure.value, InDoubt)

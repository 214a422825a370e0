"""Snapshots travel in chunks, so no peer message is larger than a chunk or a batch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.defer import succeed

from kvd.node import Node
from kvd.replication import messages, stream
from kvd.replication.stream import FollowerStream, _within_bytes
from kvd.wal.record import LogEntry
from tests.replication.safety.support import lead, member, snapshot_of
from tests.replication.support import (
    FakeLink,
    Peers,
    answer,
    close_all,
    entry,
    member_of,
    message,
    put,
)
from tests.support import InlineReactor, follower_of


def chunks(data: bytes, size: int) -> list[tuple[int, bytes]]:
    return [(offset, data[offset:offset + size]) for offset in range(0, len(data), size)]


def send(node: Node, snap: LogEntry, data: bytes, offset: int, chunk: bytes,
         epoch: int = 3) -> dict[str, Any]:
    return answer(follower_of(node).install_snapshot(message(
        "a", epoch, snapshot_epoch=snap.epoch, snapshot_index=snap.index, offset=offset,
        total=len(data), data=chunk))).reply()


@pytest.fixture
def follower(tmp_path: Any) -> Iterator[Node]:
    node = member_of(str(tmp_path), InlineReactor(), "b", ("a", "b", "c"))
    yield node
    close_all()


# Fails if: Follower._assemble installs what it has before the last chunk.
def test_a_snapshot_in_chunks_is_installed_once_the_last_one_arrives(follower: Node) -> None:
    entries = [entry(2, i, put(f"k{i}", "v" * 50)) for i in range(1, 6)]
    leader_store, data = snapshot_of(entries)
    parts = chunks(data, 97)
    assert len(parts) > 2
    for offset, chunk in parts[:-1]:
        reply = send(follower, entries[-1], data, offset, chunk)
        assert reply["ok"] and reply["received"] == offset + len(chunk)
        assert follower.store.applied_index == 0
        assert follower.data_dir.snapshot_indexes() == []
    reply = send(follower, entries[-1], data, *parts[-1])
    assert reply["ok"] and reply["index"] == 5
    assert follower.store.digest() == leader_store.digest()
    assert follower.data_dir.snapshot_indexes() == [5]


# Fails if: Follower._assemble appends a chunk without checking its offset.
def test_a_chunk_out_of_order_or_from_another_transfer_starts_it_again(follower: Node) -> None:
    entries = [entry(2, i, put(f"k{i}")) for i in range(1, 4)]
    _, data = snapshot_of(entries)
    parts = chunks(data, 40)
    assert send(follower, entries[-1], data, *parts[0])["ok"]
    assert send(follower, entries[-1], data, *parts[2])["reject"] == "snapshot chunk out of order"
    assert send(follower, entries[-1], data, *parts[1])["reject"] == "snapshot chunk out of order"
    for offset, chunk in parts:
        reply = send(follower, entries[-1], data, offset, chunk)
    assert reply["ok"] and reply["index"] == 3


# Fails if: Follower._install_snapshot buffers a chunk before its refusal check.
def test_a_chunk_is_refused_before_it_is_kept_when_the_epoch_is_stale(follower: Node) -> None:
    entries = [entry(2, i, put(f"k{i}")) for i in range(1, 4)]
    _, data = snapshot_of(entries)
    follower.rlog.promise(9, "c")
    reply = send(follower, entries[-1], data, 0, data[:40], epoch=3)
    assert reply["reject"] == "stale epoch"
    assert follower_of(follower)._incoming is None


@pytest.mark.parametrize("fields", [
    {"offset": 0, "total": 3, "data": b"four"},
    {"offset": -1, "total": 3, "data": b"x"},
    {"offset": 0, "total": 0, "data": b""},
    {"offset": 0, "total": messages.MAX_SNAPSHOT_BYTES + 1, "data": b"x"},
    {"offset": 0, "total": 1, "data": b"x" * (messages.SNAPSHOT_CHUNK_BYTES + 1)},
    {"total": 1, "data": b"x"},
])
def test_a_chunk_that_does_not_fit_its_transfer_is_a_bad_message(fields: dict[str, Any]) -> None:
    snapshot = {"epoch": 3, "node_id": "a", "url": "http://a", "peer_url": "http://a",
                "incarnation": "i", "snapshot_epoch": 3, "snapshot_index": 1, **fields}
    with pytest.raises(messages.BadMessage):
        messages.check("snapshot", snapshot)


# Fails if: _within_bytes never stops (a PREPARE takes every entry up to
# MAX_ENTRIES_PER_MESSAGE whatever their size).
def test_a_prepare_carries_entries_up_to_its_byte_bound_and_at_least_one() -> None:
    big = [LogEntry(1, i, packed=b"x" * (messages.MAX_MESSAGE_BYTES // 3)) for i in range(1, 6)]
    assert [e.index for e in _within_bytes(big)] == [1, 2, 3]
    huge = [LogEntry(1, 1, packed=b"x" * (messages.MAX_MESSAGE_BYTES + 1))] + big
    assert [e.index for e in _within_bytes(huge)] == [1]
    assert len(_within_bytes(big[:2])) == 2


def test_the_peer_body_limit_holds_the_largest_prepare_and_chunk() -> None:
    limit = messages.peer_body_limit(2 * 1024 * 1024)
    assert limit >= messages.MAX_MESSAGE_BYTES + messages.MAX_BATCH_BYTES + 2 * 1024 * 1024
    assert limit >= messages.SNAPSHOT_CHUNK_BYTES
    assert limit < 64 * 1024 * 1024
    assert messages.peer_body_limit(100 * 1024 * 1024) > 100 * 1024 * 1024
    assert stream.MAX_ENTRIES_PER_MESSAGE <= messages.MAX_ENTRIES


# Fails if: FollowerStream._send_snapshot sends only the first chunk (the follower never
# gets the rest, so it never installs).
def test_the_leader_sends_a_snapshot_chunk_after_chunk_until_it_is_installed(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream, "SNAPSHOT_CHUNK_BYTES", 64)
    reactor = InlineReactor()
    leader_node = member(tmp_path, reactor, "a")
    follower_node = member(tmp_path, reactor, "b")
    # Each knows the other's real disk.
    follower_node.bootstrap_voters["a"] = leader_node.identity.incarnation
    leader_node.bootstrap_voters["b"] = follower_node.identity.incarnation
    entries = [entry(1, i, put(f"k{i}", "v" * 30)) for i in range(1, 6)]
    leader_store, data = snapshot_of(entries)
    lead(leader_node, 2, 2, FakeLink("c"))
    peers = Peers()
    peers.route_to(follower_node)
    link = FollowerStream(leader_node.leader, leader_node.rlog, peers.client(), "b",
                          "http://b", leader_node.voters()["b"],
                          lambda: succeed((1, 5, data)))
    link._send_snapshot()
    sent = [body for _, name, body in peers.calls if name == "snapshot"]
    assert len(sent) == -(-len(data) // 64) > 2
    assert [m["offset"] for m in sent] == list(range(0, len(data), 64))
    assert link.match_index == 5 and link.next_index == 6
    assert follower_node.store.digest() == leader_store.digest()
    close_all()

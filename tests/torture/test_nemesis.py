"""Tests for the nemesis' pure logic and the ZooKeeper links' tripwire (no kvd, no ZooKeeper)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytest_twisted
from kazoo.protocol.serialization import Connect, Create, GetChildren, Ping, SetData, Transaction
from kazoo.security import OPEN_ACL_UNSAFE
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater

from kvd.torture.nemesis import (
    FAULTS,
    Nemesis,
    read_node_id,
    set_flag,
    sync_quorum,
    wipe_budget,
)
from kvd.torture.proxy import (
    Tripwire,
    ZooKeeperLinks,
    election_create,
    election_or_epoch,
    epoch_multi,
    zk_request,
)


def frame(request: Any, xid: int | None = 1) -> bytes:
    """A client->server ZooKeeper frame, built as kazoo's connection does."""
    body = bytearray()
    if xid:
        body += struct.pack(">i", xid)
    if request.type:
        body += struct.pack(">i", request.type)
    body += request.serialize()
    return struct.pack(">i", len(body)) + bytes(body)


def connect_frame() -> bytes:
    return frame(Connect(0, 0, 2000, 0, b"\0" * 16, False), xid=None)


ELECTION = "/kvd/torture/election/0123abcd-n_"


def create(path: str) -> Create:
    return Create(path, b"{}", OPEN_ACL_UNSAFE, 3)


def epoch_transaction() -> Transaction:
    return Transaction([SetData("/kvd/torture/epoch", b"7", 3)])


# The wipe budget and fault choice


@pytest.mark.parametrize(("replicas", "budget"), [(1, 0), (2, 0), (3, 1), (4, 1), (5, 2),
                                                  (7, 3)])
def test_wipes_leave_a_majority_of_voters(replicas: int, budget: int) -> None:
    assert wipe_budget(replicas) == budget


def nemesis(nodes: int, faults: tuple[str, ...] = FAULTS) -> Nemesis:
    cluster = SimpleNamespace(nodes=[SimpleNamespace() for _ in range(nodes)])
    return Nemesis(reactor, cluster, None, None, faults, 1, 0.0)  # type: ignore[arg-type]


def test_wipe_voter_is_no_longer_chosen_once_its_budget_is_spent() -> None:
    n = nemesis(5)
    assert n.eligible("wipe-voter")
    n.wiped.add(3)
    assert n.eligible("wipe-voter")
    n.wiped.add(1)
    assert not n.eligible("wipe-voter")
    assert all(n.eligible(name) for name in FAULTS if name != "wipe-voter")
    assert not nemesis(3, ("wipe-voter",)).wiped and nemesis(3).eligible("wipe-voter")
    assert not nemesis(2).eligible("wipe-voter")


@pytest.mark.parametrize(("replicas", "wiped", "may"), [(3, 0, True), (3, 1, False),
                                                       (5, 1, True), (5, 2, False),
                                                       (7, 2, True), (7, 3, False)])
def test_a_voter_is_torn_only_while_a_clean_sync_quorum_remains(replicas: int, wiped: int,
                                                                 may: bool) -> None:
    n = nemesis(replicas)
    n.wiped.update(range(wiped))
    assert n.may_tear_voter() is may
    assert replicas - wiped >= sync_quorum(replicas)  # the wipes alone always leave one


def test_voters_leave_out_wiped_and_killed_nodes() -> None:
    n = nemesis(5)
    n.wiped.add(0)
    n.killed.add(3)
    assert n.voters() == [1, 2, 4]


def test_unknown_faults_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown faults: zk-nap"):
        nemesis(3, ("zk-cut", "zk-nap"))


def test_set_flag_adds_or_replaces() -> None:
    args = ["--zookeeper", "127.0.0.1:1", "--advertise", "http://x"]
    set_flag(args, "--node-id", "abc")
    assert args[-2:] == ["--node-id", "abc"]
    set_flag(args, "--node-id", "def")
    assert args == ["--zookeeper", "127.0.0.1:1", "--advertise", "http://x", "--node-id", "def"]


def test_read_node_id(tmp_path: Path) -> None:
    (tmp_path / "node-id").write_text(json.dumps({"node_id": "4d67d39f", "incarnation": "u"}))
    assert read_node_id(str(tmp_path)) == "4d67d39f"


# ZooKeeper framing


def test_requests_are_told_apart_by_type_and_path() -> None:
    assert zk_request(frame(create(ELECTION))) == (1, ELECTION)
    assert zk_request(frame(Ping, xid=-2))[0] == 11  # type: ignore[index]
    assert zk_request(b"\0\0\0\4\0\0\0\1") is None
    election = zk_request(frame(create(ELECTION)))
    assert election is not None and election_create(*election) == f"create {ELECTION}"
    member = zk_request(frame(create("/kvd/torture/members/abc")))
    assert member is not None and election_or_epoch(*member) is None
    multi = zk_request(frame(epoch_transaction()))
    assert multi is not None and epoch_multi(*multi) and not election_create(*multi)
    children = zk_request(frame(GetChildren("/kvd/torture/election", None)))
    assert children is not None and election_or_epoch(*children) is None


# The tripwire, over loopback against a fake ZooKeeper


class _Sink(Protocol):
    """Fake ZooKeeper: records what arrives, answers every chunk with b"reply"."""

    def __init__(self, received: list[bytes]) -> None:
        self.received = received

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)
        self.transport.write(b"reply")


class _Client(Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


async def _until(condition: Any, seconds: float = 3.0) -> None:
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await deferLater(reactor, 0.01)
    raise AssertionError("condition not met in time")


@pytest_twisted.ensureDeferred
async def test_a_tripwire_forwards_the_create_drops_the_reply_and_cuts_the_link() -> None:
    received: list[bytes] = []
    server = reactor.listenTCP(0, Factory.forProtocol(lambda: _Sink(received)),
                               interface="127.0.0.1")
    links = ZooKeeperLinks(reactor, lambda: {})
    links.add(server.getHost().port)
    links.add(server.getHost().port)
    trips: list[tuple[int, str]] = []
    try:
        client = _Client()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", links.proxies[1].port)
        await connectProtocol(endpoint, client)
        links.arm(Tripwire(frozenset({1}), lambda i, what: trips.append((i, what))))
        client.transport.write(connect_frame())
        await _until(lambda: client.data == b"reply")
        member = frame(create("/kvd/torture/members/n1"))
        client.transport.write(member[:7])  # a frame split over two writes
        client.transport.write(member[7:])
        await _until(lambda: client.data == b"reply" * 2)
        assert not trips
        client.transport.write(frame(create(ELECTION)))
        await client.lost
        assert trips == [(1, f"create {ELECTION}")]
        assert b"".join(received).endswith(frame(create(ELECTION)))  # ZooKeeper got it
        assert client.data == b"reply" * 2  # but its reply never came back
        assert links.cut == {1} and links.tripwire is None
        # While cut, new connections are reset at once; after the restore they pass.
        again = _Client()
        await connectProtocol(endpoint, again)
        await again.lost
        links.restore(1)
        third = _Client()
        await connectProtocol(endpoint, third)
        third.transport.write(connect_frame())
        await _until(lambda: third.data == b"reply")
        third.transport.loseConnection()
        await third.lost
    finally:
        links.heal()
        await links.close()
        await server.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_delayed_tripwire_cut_is_cancelled_by_the_heal() -> None:
    received: list[bytes] = []
    server = reactor.listenTCP(0, Factory.forProtocol(lambda: _Sink(received)),
                               interface="127.0.0.1")
    links = ZooKeeperLinks(reactor, lambda: {})
    links.add(server.getHost().port)
    trips: list[tuple[int, str]] = []
    try:
        client = _Client()
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", links.proxies[0].port),
                              client)
        links.arm(Tripwire(frozenset({0}), lambda i, what: trips.append((i, what)), delay=0.2,
                           match=epoch_multi))
        sent = connect_frame() + frame(create(ELECTION))
        client.transport.write(sent)
        await _until(lambda: b"".join(received) == sent)
        assert not trips  # the election create does not match this tripwire
        client.transport.write(frame(epoch_transaction()))
        await _until(lambda: trips)
        assert trips == [(0, "multi (epoch transaction)")]
        await _until(lambda: b"".join(received) == sent + frame(epoch_transaction()))
        assert not links.cut and links.pending  # the multi went through; the cut is to come
        links.heal()
        await deferLater(reactor, 0.3)
        assert not links.cut and not client.lost.called
        client.transport.loseConnection()
        await client.lost
    finally:
        await links.close()
        await server.stopListening()

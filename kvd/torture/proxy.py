"""
A fault-injecting TCP proxy for node-to-node traffic, on loopback.

Each kvd node is started with ``--advertise http://127.0.0.1:<proxy port>``,
so its peers reach it (PREPARE, NEWEPOCH, read index, forwarded writes,
snapshots) through its proxy, while clients and the torture harness talk to
its real port. A proxy can tell which node opened a connection: the
connecting socket is a loopback socket of one of the node processes, found
through ``/proc/net/tcp`` and ``/proc/<pid>/fd``. That makes partitions per
(source, destination) pair possible, although every node is on 127.0.0.1.

A blocked pair is cut in one of two ways:

* ``drop``: like a cable pulled out: existing connections go silent (bytes
  are discarded both ways) and new ones are accepted but never forwarded;
  callers see timeouts. At the heal those connections are reset, since
  their byte streams lost data.
* ``reset``: existing connections are reset and new ones reset at once;
  callers see lost connections quickly.

ZooKeeper traffic does not go through these peer proxies: a partition cuts
peers from each other, never a node from ZooKeeper. Each node has its own
ZooKeeper link instead (:class:`ZooKeeperLinks`, the same proxy machinery):
its ``--zookeeper`` flag points at a proxy in front of the ZooKeeper port,
which can reset that one node's ZooKeeper connections (and refuse new ones)
for a while, or arm a *tripwire*: the proxy follows the ZooKeeper framing of
the client->server stream and, right after forwarding the first create of an
election znode or the first ``multi`` (the epoch transaction), drops the
reply and resets the link, at once or a given delay later.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IListeningPort,
    IPushProducer,
    ITCPTransport,
    ITransport,
)
from twisted.internet.protocol import ClientFactory, Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

DROP = "drop"
RESET = "reset"
MODES = (DROP, RESET)

_LOOPBACK_HEX = "0100007F"  # 127.0.0.1 as /proc/net/tcp writes it (little-endian)


def _socket_inode(local_port: int, remote_port: int) -> str | None:
    """Inode of the IPv4 loopback socket ``127.0.0.1:local_port -> 127.0.0.1:remote_port``."""
    local = f"{_LOOPBACK_HEX}:{local_port:04X}"
    remote = f"{_LOOPBACK_HEX}:{remote_port:04X}"
    try:
        with open("/proc/net/tcp") as table:
            next(table, None)
            for line in table:
                fields = line.split()
                if len(fields) > 9 and fields[1] == local and fields[2] == remote:
                    return fields[9]
    except OSError:
        return None
    return None


def socket_owner(local_port: int, remote_port: int, pids: Iterable[int]) -> int | None:
    """Which of ``pids`` holds the loopback socket from ``local_port`` to ``remote_port``.

    Linux only; None when it cannot be told (then the caller treats the
    source as unknown).
    """
    inode = _socket_inode(local_port, remote_port)
    if inode is None or inode == "0":
        return None
    wanted = f"socket:[{inode}]"
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:
            continue
        for name in names:
            try:
                if os.readlink(f"{fd_dir}/{name}") == wanted:
                    return pid
            except OSError:
                continue
    return None


def _tcp(transport: ITransport | None) -> ITCPTransport:
    """A proxied connection's transport: set once it is made, and always TCP."""
    assert ITCPTransport.providedBy(transport)
    return transport


def _producer(transport: ITransport | None) -> IPushProducer:
    """A proxied connection's transport as the push producer every TCP transport is."""
    assert IPushProducer.providedBy(transport)
    return transport


class _Upstream(Protocol):
    """The proxy's connection to the node's real port."""

    def __init__(self, inbound: _Inbound) -> None:
        self.inbound = inbound

    def connectionMade(self) -> None:
        self.inbound.upstream_ready(self)

    def dataReceived(self, data: bytes) -> None:
        if not self.inbound.silenced and self.inbound.transport is not None:
            self.inbound.transport.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.inbound.upstream_lost()


class _UpstreamFactory(ClientFactory):
    """Connects one inbound connection to the node; a refused connect resets the inbound."""

    noisy = False

    def __init__(self, inbound: _Inbound) -> None:
        self.inbound = inbound

    def buildProtocol(self, addr: Any) -> _Upstream:
        return _Upstream(self.inbound)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self.inbound.upstream_lost()


class _Inbound(Protocol):
    """One connection a node opened to another node's proxy."""

    def __init__(self, proxy: NodeProxy) -> None:
        self.proxy = proxy
        self.source: int | None = None
        self.upstream: _Upstream | None = None
        self.pending: list[bytes] = []
        self.silenced = False
        self.closed = False

    def connectionMade(self) -> None:
        peer = _tcp(self.transport).getPeer()
        self.source = self.proxy.net.identify(peer.port, self.proxy.port)
        self.proxy.net.connections.add(self)
        action = self.proxy.net.action(self.source, self.proxy.index)
        if action == RESET:
            self.reset()
            return
        if action == DROP:
            self.silenced = True
            return
        _producer(self.transport).pauseProducing()
        self.proxy.net.reactor.connectTCP(
            "127.0.0.1", self.proxy.target_port, _UpstreamFactory(self), timeout=2
        )

    def upstream_ready(self, upstream: _Upstream) -> None:
        self.upstream = upstream
        if self.closed or self.silenced:
            _tcp(upstream.transport).abortConnection()
            return
        for chunk in self.pending:
            _tcp(upstream.transport).write(chunk)
        self.pending = []
        _producer(self.transport).resumeProducing()

    def upstream_lost(self) -> None:
        if not self.closed:
            _tcp(self.transport).loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.silenced:
            return
        if self.upstream is None:
            self.pending.append(data)
        else:
            _tcp(self.upstream.transport).write(data)

    def silence(self) -> None:
        """Go quiet both ways (a 'drop' partition)."""
        self.silenced = True
        self.pending = []

    def reset(self) -> None:
        """Reset both sides now."""
        self.closed = True
        _tcp(self.transport).abortConnection()
        if self.upstream is not None:
            _tcp(self.upstream.transport).abortConnection()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True
        self.proxy.net.connections.discard(self)
        if self.upstream is not None:
            _tcp(self.upstream.transport).loseConnection()


class _InboundFactory(Factory):
    noisy = False

    def __init__(self, proxy: NodeProxy) -> None:
        self.proxy = proxy

    def buildProtocol(self, addr: Any) -> _Inbound:
        return self.proxy.net.protocol(self.proxy)


@dataclass
class NodeProxy:
    """The proxy in front of one node's peer traffic."""

    net: ProxyNet
    index: int
    target_port: int
    port: int = 0
    listening: IListeningPort | None = None

    @property
    def url(self) -> str:
        """What the node advertises to its peers."""
        return f"http://127.0.0.1:{self.port}"

    def listen(self) -> None:
        """Accept connections (on the same port as before, if it had one)."""
        if self.listening is None:
            self.listening = self.net.reactor.listenTCP(
                self.port, _InboundFactory(self), interface="127.0.0.1"
            )
            host = self.listening.getHost()
            assert isinstance(host, (IPv4Address, IPv6Address))  # a TCP port's
            self.port = host.port

    def close(self) -> Deferred[None]:
        """Refuse new connections (like a dead host's port) and reset the open ones."""
        listening, self.listening = self.listening, None
        for conn in [c for c in self.net.connections if c.proxy is self]:
            conn.reset()
        if listening is None:
            return succeed(None)
        # maybeDeferred's overloads cannot tell that a Deferred[None] | None result
        # becomes a Deferred[None].
        return cast("Deferred[None]", maybeDeferred(listening.stopListening))


@dataclass
class ProxyNet:
    """All node proxies of a cluster and the partition currently in force."""

    #: The protocol of an accepted connection.
    protocol: ClassVar[type[_Inbound]] = _Inbound

    reactor: Any
    #: Maps a node process id to its node index (the processes change on restarts).
    pids: Callable[[], dict[int, int]]
    proxies: list[NodeProxy] = field(default_factory=list)
    connections: set[_Inbound] = field(default_factory=set)
    blocked: frozenset[tuple[int, int]] = frozenset()
    mode: str = DROP
    unknown_sources: int = 0
    identified: int = 0

    def add(self, target_port: int) -> NodeProxy:
        """A listening proxy in front of the node whose real port is ``target_port``."""
        proxy = NodeProxy(self, len(self.proxies), target_port)
        proxy.listen()
        self.proxies.append(proxy)
        return proxy

    def identify(self, peer_port: int, proxy_port: int) -> int | None:
        """The node index that opened a connection from ``peer_port``, or None."""
        owners = self.pids()
        pid = socket_owner(peer_port, proxy_port, owners)
        if pid is None:
            self.unknown_sources += 1
            return None
        self.identified += 1
        return owners[pid]

    def action(self, source: int | None, dest: int) -> str | None:
        """What to do with traffic from ``source`` to ``dest``: None (pass), DROP or RESET.

        An unidentified source is cut only when every other node is cut from ``dest``
        (a full isolation of ``dest``), where the source does not matter.
        """
        if not self.blocked:
            return None
        if source is None:
            others = {i for i in range(len(self.proxies)) if i != dest}
            cut = {s for s, d in self.blocked if d == dest}
            return self.mode if others and others <= cut else None
        return self.mode if (source, dest) in self.blocked else None

    def partition(self, pairs: Iterable[tuple[int, int]], mode: str) -> None:
        """Cut traffic from a to b for each (a, b); existing connections included."""
        assert mode in MODES
        self.blocked = frozenset(pairs)
        self.mode = mode
        for conn in list(self.connections):
            if self.action(conn.source, conn.proxy.index) is None:
                continue
            if mode == RESET:
                conn.reset()
            else:
                conn.silence()
        log.info("Partition ({mode}): cut {pairs}", mode=mode, pairs=sorted(self.blocked))

    def isolate(self, node: int, mode: str) -> list[tuple[int, int]]:
        """Cut ``node`` from every other node, both ways; returns the pairs cut."""
        pairs = []
        for other in range(len(self.proxies)):
            if other != node:
                pairs += [(node, other), (other, node)]
        self.partition(pairs, mode)
        return pairs

    def heal(self) -> None:
        """Let everything through again; silenced connections are reset (they lost bytes)."""
        self.blocked = frozenset()
        for conn in list(self.connections):
            if conn.silenced:
                conn.reset()
        log.info("Partition healed")

    def close(self) -> Deferred[Any]:
        """Stop every proxy."""
        self.blocked = frozenset()
        return DeferredList([proxy.close() for proxy in self.proxies], consumeErrors=True)


# ZooKeeper links: one proxy per node in front of the ZooKeeper port

#: ZooKeeper request types (``OpCode``) a tripwire fires on.
ZK_CREATE_TYPES = frozenset({1, 15, 19, 21})  # create, create2, createContainer, createTTL
ZK_MULTI = 14
#: A frame longer than this is not ZooKeeper's (jute.maxbuffer is about 1 MiB): stop parsing.
_ZK_MAX_FRAME = 16 * 1024 * 1024


def zk_request(frame: bytes) -> tuple[int, str] | None:
    """(type, path) of one client->server ZooKeeper frame (after the connect request).

    ``frame`` is the whole frame, length prefix included; the path is "" for
    requests without one at the front (multi). None if it is too short.
    """
    if len(frame) < 12:
        return None
    _xid, op = struct.unpack_from(">ii", frame, 4)
    path = ""
    if len(frame) >= 16:
        (n,) = struct.unpack_from(">i", frame, 12)
        if 0 <= n <= len(frame) - 16:
            path = frame[16:16 + n].decode("utf-8", "replace")
    return op, path


def election_create(op: int, path: str) -> str | None:
    """A tripwire match: the create of an election znode (under ``.../election/``)."""
    if op in ZK_CREATE_TYPES and "/election/" in path:
        return f"create {path}"
    return None


def epoch_multi(op: int, path: str) -> str | None:
    """A tripwire match: a ``multi`` (kvd's only one is the epoch transaction)."""
    return "multi (epoch transaction)" if op == ZK_MULTI else None


def election_or_epoch(op: int, path: str) -> str | None:
    """A tripwire match: an election znode's create or a ``multi``."""
    return election_create(op, path) or epoch_multi(op, path)


#: Tripwire matches by name.
TRIP_MATCHES: dict[str, Callable[[int, str], str | None]] = {
    "create": election_create,
    "multi": epoch_multi,
    "either": election_or_epoch,
}


@dataclass
class Tripwire:
    """Cut a node's ZooKeeper link right after it sends a matching request.

    ``delay`` 0: the request reaches ZooKeeper, its reply is dropped and the
    link is reset 0.1 s later (the node sees ConnectionLoss for a request that
    took effect). A positive ``delay``: the link goes on working for that long,
    then is cut. ``tripped(node, what)`` is called once, when it fires.
    """

    nodes: frozenset[int]
    tripped: Callable[[int, str], None]
    delay: float = 0.0
    match: Callable[[int, str], str | None] = election_or_epoch


class _ZooKeeperInbound(_Inbound):
    """A node's connection to ZooKeeper through its link; frames are tracked for tripwires."""

    def connectionMade(self) -> None:
        self.buffer = b""
        self.frames = 0
        self.parsing = True
        super().connectionMade()

    def dataReceived(self, data: bytes) -> None:
        if self.silenced:
            return
        if not self.parsing:
            super().dataReceived(data)
            return
        self.buffer += data
        while len(self.buffer) >= 4 and not self.silenced and not self.closed:
            (n,) = struct.unpack_from(">i", self.buffer)
            if n < 0 or n > _ZK_MAX_FRAME:  # not ZooKeeper framing: pass through from now on
                self.parsing = False
                rest, self.buffer = self.buffer, b""
                super().dataReceived(rest)
                return
            if len(self.buffer) < 4 + n:
                return
            frame, self.buffer = self.buffer[:4 + n], self.buffer[4 + n:]
            super().dataReceived(frame)
            self.frames += 1
            if self.frames > 1 and self.upstream is not None:  # the first is the connect request
                request = zk_request(frame)
                if request is not None:
                    assert isinstance(self.proxy.net, ZooKeeperLinks)
                    self.proxy.net.observe(self, *request)


@dataclass
class ZooKeeperLinks(ProxyNet):
    """One proxy per node in front of ZooKeeper: each node's link can be cut alone."""

    protocol: ClassVar[type[_Inbound]] = _ZooKeeperInbound

    #: Nodes whose link is cut: their connections are reset, new ones reset at once.
    cut: set[int] = field(default_factory=set)
    tripwire: Tripwire | None = None
    resets: int = 0
    #: Cuts a fired tripwire scheduled and that have not happened yet.
    pending: dict[int, IDelayedCall] = field(default_factory=dict)

    def hosts(self, index: int) -> str:
        """What node ``index`` passes as ``--zookeeper``."""
        return f"127.0.0.1:{self.proxies[index].port}"

    def identify(self, peer_port: int, proxy_port: int) -> int | None:
        """Every connection to a node's link is that node's."""
        for proxy in self.proxies:
            if proxy.port == proxy_port:
                return proxy.index
        return None

    def action(self, source: int | None, dest: int) -> str | None:
        return RESET if dest in self.cut else None

    def cut_link(self, index: int) -> None:
        """Reset node ``index``'s ZooKeeper connections now, and refuse new ones."""
        self.cut.add(index)
        for conn in [c for c in self.connections if c.proxy.index == index]:
            self.resets += 1
            conn.reset()
        log.info("ZooKeeper link of node{index} cut", index=index)

    def _scheduled_cut(self, index: int) -> None:
        self.pending.pop(index, None)
        self.cut_link(index)

    def restore(self, index: int) -> None:
        """Let node ``index`` reach ZooKeeper again (a cut still scheduled is cancelled)."""
        call = self.pending.pop(index, None)
        if call is not None and call.active():
            call.cancel()
        if index in self.cut:
            self.cut.discard(index)
            log.info("ZooKeeper link of node{index} restored", index=index)

    def arm(self, tripwire: Tripwire) -> None:
        self.tripwire = tripwire

    def disarm(self) -> None:
        self.tripwire = None

    def observe(self, conn: _Inbound, op: int, path: str) -> None:
        """A request was just forwarded on ``conn``: fire the tripwire if it matches."""
        wire = self.tripwire
        index = conn.proxy.index
        if wire is None or index not in wire.nodes or index in self.cut:
            return
        what = wire.match(op, path)
        if what is None:
            return
        self.tripwire = None
        if wire.delay <= 0:
            conn.silence()  # the request went through; its reply never arrives
            self.cut.add(index)
            delay = 0.1
        else:
            delay = wire.delay
        self.pending[index] = self.reactor.callLater(delay, self._scheduled_cut, index)
        log.info("Tripwire on node{index}'s ZooKeeper link: {what}", index=index, what=what)
        wire.tripped(index, what)

    def heal(self) -> None:
        """Every link works again; no tripwire armed."""
        self.tripwire = None
        for index in list(self.pending):
            self.restore(index)
        self.cut.clear()
        for conn in list(self.connections):
            if conn.silenced:
                conn.reset()

    def close(self) -> Deferred[Any]:
        """Stop every link."""
        self.heal()
        return super().close()

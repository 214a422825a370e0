"""
The service tree of one node: the HTTP listener, WAL recovery, the node's role.

The listener starts first so that ``/readyz`` answers 503 while the WAL is
replayed on a thread; the node takes its role once recovery has finished.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure

from kvd.auth.tokens import TokenSigner
from kvd.clock import MonotonicClock, use_monotonic_time
from kvd.config import NodeConfig, read_digest_file
from kvd.coord.bridge import ZooKeeperService
from kvd.coord.cluster import ClusterCoordinator
from kvd.metrics import Metrics
from kvd.node import Node, NodeSettings
from kvd.replication.log import ReplicatedLog
from kvd.replication.messages import peer_body_limit
from kvd.replication.peer import PeerClient
from kvd.replication.peerauth import HEADER as AUTH_HEADER
from kvd.replication.peerauth import PeerAuth, generate_secret, read_secret_file
from kvd.replication.peertls import PeerTLS
from kvd.store import DEFAULT_HISTORY, Store
from kvd.wal import snapshot
from kvd.wal.layout import DataDir, Identity
from kvd.wal.recovery import Recovered, WalCorruption, recover
from kvd.wal.writer import DEFAULT_SEGMENT_BYTES, WalWriter
from kvd.web.access import ClientAccess
from kvd.web.peer import PeerAPI
from kvd.web.public import ClientAPI, Limits
from kvd.web.site import ConnectionLimit, KvdSite, Root


def release_free_memory() -> None:
    """Hand the heap freed after a snapshot's peak back to the OS (glibc only).

    Encoding a snapshot briefly needs as much memory again as the store; glibc
    keeps what was freed, so the process would stay at its peak otherwise.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        pass


#: The interface of a ``tcp:``/``ssl:`` listen string, which the peer listener shares.
_LISTEN_INTERFACE = re.compile(r"interface=([^:]+)")


class FatalNodeError(Exception):
    """The node found its state unsafe to go on with."""


def recover_store(data_dir: DataDir, node_id: str | None,
                  history: int = DEFAULT_HISTORY) -> tuple[Recovered, Store, Identity]:
    """Read the data dir back: log, store as of the last commit mark, identity. Blocking."""
    data_dir.create()
    identity = data_dir.identity(node_id)
    recovered = recover(data_dir)
    if recovered.snapshot is not None:
        store = Store.from_snapshot(recovered.snapshot.store, history=history)
    else:
        store = Store(history=history)
    # Only what is known committed reaches the store; the rest waits for a leader.
    for entry in recovered.entries:
        if entry.index > recovered.commit_mark:
            break
        store.apply(entry.index, entry.commands)
        entry.release()
    return recovered, store, identity


def open_node(
    reactor: Any,
    data_dir: DataDir,
    outcome: tuple[Recovered, Store, Identity],
    settings: NodeSettings,
    fsync: bool,
    on_fatal: Callable[[Failure], None] | None = None,
    pool: Any = None,
    observe_batch: Callable[[int, float], None] | None = None,
    segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    clock: Any = None,
) -> tuple[Node, WalWriter]:
    """A node over recovered state, with its WAL writer started."""
    recovered, store, identity = outcome
    writer = WalWriter(reactor, data_dir, recovered.segments, fsync=fsync, on_fatal=on_fatal,
                       pool=pool, observe_batch=observe_batch, segment_bytes=segment_bytes)
    writer.start()
    writer.open_last()
    node = Node(reactor, identity, settings, store, ReplicatedLog(writer, recovered),
                data_dir=data_dir, clock=clock)
    if recovered.snapshot is not None:
        node.adopt_snapshot_meta(recovered.snapshot.meta)
    Node.log.info(
        "Node {node_id} recovered: applied index {applied}, last index {last}, "
        "revision {revision}, {keys} keys",
        node_id=identity.node_id, applied=store.applied_index,
        last=node.rlog.last_index, revision=store.revision, keys=len(store),
    )
    return node, writer


class KvdService(MultiService):
    """One kvd node under twistd."""

    log = Logger()

    def __init__(self, config: NodeConfig, reactor: Any = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
            # Our own process's reactor: no timer may move with the wall clock.
            use_monotonic_time(reactor)
        self.reactor = reactor
        self.config = config
        self.node: Node | None = None
        self.writer: WalWriter | None = None
        self.data_dir = DataDir(config.data_dir)
        self.zookeeper: ZooKeeperService | None = None
        self.metrics = Metrics(lambda: self.node, self._session_state)
        expose = os.environ.get("KVD_TESTING_EXPOSE_SESSION") == "1"
        secret = None if config.peer_secret_file is None else read_secret_file(
            config.peer_secret_file)
        if secret is None and config.standalone:
            # No ZooKeeper to share one through: tokens last as long as the process.
            secret = generate_secret()
        self.peer_auth = PeerAuth(secret)
        tokens = TokenSigner(lambda: self.peer_auth.secret, config.token_ttl)
        self.api = ClientAPI(lambda: self.node, Limits(
            config.max_key_bytes, config.max_value_bytes, config.max_body_bytes,
            config.max_watches), metrics=self.metrics,
            access=ClientAccess(tokens, config.metrics_auth))
        self.peer_api = PeerAPI(lambda: self.node, self.peer_auth,
                                session=self._zookeeper_session if expose else None,
                                max_body_bytes=peer_body_limit(config.max_body_bytes))
        self.site = KvdSite(Root(self.api.resource()), config.max_body_bytes, self.metrics,
                            config.request_timeout)
        client_factory: Any = self.site
        if config.client_ca is not None:
            # Mutual TLS, as on the peer listener: a client shows a certificate from the CA.
            client_factory = PeerTLS.load(config.client_cert or "", config.client_key or "",
                                          config.client_ca).wrap_server(client_factory)
        strports.service(config.listen, ConnectionLimit(client_factory, config.max_connections)
                         ).setServiceParent(self)
        self.peer_site = KvdSite(Root(self.peer_api.resource()), self.peer_api.max_body_bytes,
                                 self.metrics,
                                 config.request_timeout, required_header=AUTH_HEADER,
                                 on_refused=self.peer_api.log_refusal)
        self.peer_port: Any = None
        self.peer_url = config.advertise_peer
        self.peer_tls = None if config.peer_ca is None else PeerTLS.load(
            config.peer_cert or "", config.peer_key or "", config.peer_ca)
        self.coordinator: ClusterCoordinator | None = None
        self.peer: PeerClient | None = None
        if not config.standalone:
            digest = None if config.zookeeper_auth_file is None else read_digest_file(
                config.zookeeper_auth_file)
            self.zookeeper = ZooKeeperService(config.zookeeper, timeout=config.session_timeout,
                                              reactor=reactor, digest=digest)
            self.zookeeper.setServiceParent(self)
        self._snapshotting = False
        self.ready: Deferred[None] = Deferred()

    def _session_state(self) -> str | None:
        return None if self.zookeeper is None else self.zookeeper.state

    def _zookeeper_session(self) -> tuple[int, bytes] | None:
        return None if self.zookeeper is None else self.zookeeper.client_id

    def startService(self) -> None:
        if not self.config.fsync:
            self.log.warn("--fsync none: acknowledged writes can be lost on a crash. "
                          "For benchmarks only.")
        super().startService()
        self.log.info("Recovering {data_dir}", data_dir=self.data_dir.root)
        recovering = deferToThread(self._recover)
        d = recovering if self.config.standalone else self._listen_peer().addCallback(
            lambda _: recovering)
        d.addCallback(self._recovered)
        d.addCallbacks(self.ready.callback, self._fatal)

    def _listen_peer(self) -> Deferred[None]:
        """Open the peer listener; its URL defaults to the client host, port it got."""
        host = urlsplit(self.config.advertise).hostname or "127.0.0.1"
        interface = _LISTEN_INTERFACE.search(self.config.listen)
        description = self.config.peer_listen or (
            "tcp:0" if interface is None else f"tcp:0:interface={interface.group(1)}")
        url_host = f"[{host}]" if ":" in host else host
        factory: Any = self.peer_site
        if self.peer_tls is not None:
            factory = self.peer_tls.wrap_server(factory)
        d = serverFromString(self.reactor, description).listen(
            ConnectionLimit(factory, self.config.max_connections))

        def listening(port: Any) -> None:
            self.peer_port = port
            if self.peer_url is None:
                scheme = "http" if self.peer_tls is None else "https"
                self.peer_url = f"{scheme}://{url_host}:{port.getHost().port}"
            self.log.info("Peer listener on {description}, advertised as {url}",
                          description=description, url=self.peer_url)

        return d.addCallback(listening)

    def _recover(self) -> tuple[Recovered, Store, Identity]:
        return recover_store(self.data_dir, self.config.node_id, self.config.watch_history)

    def _recovered(self, outcome: tuple[Recovered, Store, Identity]) -> Deferred[None]:
        recovered, store, identity = outcome
        settings = NodeSettings(
            url=self.config.advertise,
            peer_url=self.peer_url or "",
            write_timeout=self.config.write_timeout,
            snapshot_entries=self.config.snapshot_entries,
            log_tail=min(5000, max(1, self.config.snapshot_entries // 4)),
        )
        self.node, self.writer = open_node(
            self.reactor, self.data_dir, outcome, settings, self.config.fsync, self._fatal,
            observe_batch=self.metrics.observe_wal_batch, clock=MonotonicClock(self.reactor),
        )
        self.node.observe_round = self.metrics.observe_round
        self.node.snapshotter = self.take_snapshot
        self.node.on_fatal = lambda message: self._fatal(Failure(FatalNodeError(message)))
        if self.config.standalone:
            return self.node.become_standalone()
        assert self.zookeeper is not None
        self.peer = PeerClient(self.reactor, self.peer_auth,
                               tls=None if self.peer_tls is None else self.peer_tls.policy())
        self.node.peer = self.peer
        in_zookeeper = self.config.peer_secret_file is None
        self.coordinator = ClusterCoordinator(self.reactor, self.zookeeper, self.node,
                                              self.config, self.peer,
                                              self.peer_auth if in_zookeeper else None)
        self.coordinator.start()
        return succeed(None)

    def _fatal(self, failure: Failure) -> None:
        if failure.check(WalCorruption, FatalNodeError):
            self.log.critical("{message}", message=failure.getErrorMessage())
        else:
            self.log.failure("Fatal error; stopping the node", failure)
        # A node that cannot trust its disk must not serve: stop hard, non-zero.
        sys.stdout.flush()
        self.reactor.callLater(0, os._exit, 1)

    def take_snapshot(self) -> Deferred[None]:
        """Snapshot the applied store off the reactor thread, then compact."""
        node, writer = self.node, self.writer
        if node is None or writer is None or self._snapshotting:
            return succeed(None)
        index = node.store.applied_index
        epoch = node.rlog.epoch_at(index)
        if epoch is None:
            return succeed(None)
        self._snapshotting = True
        # The voter set travels with the snapshot: once compacted, the log's
        # config entry is gone, and voters live in the log (safety rule 4).
        meta = {"voters": sorted([i, inc] for i, inc in node.voters().items()),
                # Compaction may delete the segment holding the promise record.
                "promised_epoch": node.rlog.promised_epoch,
                "promised_leader": node.rlog.promised_leader}
        state = snapshot.Snapshot(epoch, index, node.store.snapshot_state(), meta)
        active_at_capture = writer.active_segment
        keep_from = max(0, index - node.settings.log_tail)

        def compact(path: str) -> Deferred[object]:
            self.log.info("Snapshot {path} at index {index}", path=path, index=index)
            node.adopt_snapshot_meta(meta)
            node.rlog.compact(keep_from)
            return writer.run_exclusive(
                lambda: writer.delete_segments_before(active_at_capture, keep_from)
            )

        def done(result: object) -> None:
            self._snapshotting = False
            if isinstance(result, Failure):
                self.log.failure("Snapshot failed", result)

        written: Deferred[str] = deferToThread(snapshot.write, self.data_dir, state)
        compacted = written.addCallback(compact)
        released = compacted.addCallback(lambda _: deferToThread(release_free_memory))
        return released.addBoth(done)

    def stopService(self) -> Deferred[Any]:
        if self.coordinator is not None:
            self.coordinator.stop()
        d = super().stopService()
        node = self.node
        if node is not None:
            node.step_down("the node is stopping")
        writer = self.writer
        if writer is None:
            return d
        closing = writer.flush()
        closing.addBoth(lambda _: writer.run_exclusive(writer.close))
        waits = [d, closing]
        if self.peer is not None:
            waits.append(self.peer.close())
        if self.peer_port is not None:
            waits.append(self.peer_port.stopListening())
        return DeferredList(waits, consumeErrors=True)

"""
The service tree of one node (``KvdService``) and the parts that make it up.

Each part is a service that starts once the one before it has started and
stops in reverse: the client listener first, so that ``/readyz`` answers 503
while the WAL is replayed on a thread; the node takes its role last.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from twisted.application import strports
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python.failure import Failure

from kvd.asyncservice import AsyncMultiService
from kvd.auth.tokens import TokenSigner
from kvd.clock import MonotonicClock, use_monotonic_time
from kvd.config import NodeConfig, read_digest_file
from kvd.coord.bridge import ZooKeeperService
from kvd.coord.cluster import ClusterCoordinator
from kvd.metrics import Metrics
from kvd.node import Node, NodeSettings
from kvd.replica import Replica, assemble
from kvd.replication.follower import Follower
from kvd.replication.messages import peer_body_limit
from kvd.replication.peer import PeerClient
from kvd.replication.peerauth import HEADER as AUTH_HEADER
from kvd.replication.peerauth import PeerAuth, generate_secret, read_secret_file
from kvd.replication.peertls import PeerTLS
from kvd.ttl import ExpiryScheduler
from kvd.wal.layout import DataDir
from kvd.wal.recovery import WalCorruption
from kvd.wal.storage import StorageService
from kvd.web.access import ClientAccess
from kvd.web.etcd import EtcdGateway
from kvd.web.peer import PeerAPI
from kvd.web.public import ClientAPI, Limits
from kvd.web.site import ConnectionLimit, KvdSite, Root

#: The interface of a ``tcp:``/``ssl:`` listen string, which the peer listener shares.
_LISTEN_INTERFACE = re.compile(r"interface=([^:]+)")


class FatalNodeError(Exception):
    """The node found its state unsafe to go on with."""


class PeerListenerService(Service):
    """The peer listener; its URL defaults to the client host and the port it got."""

    log = Logger()

    def __init__(self, reactor: Any, config: NodeConfig, factory: Any) -> None:
        self._reactor = reactor
        self._config = config
        self._factory = factory
        self._tls = config.peer_ca is not None
        self.url = config.advertise_peer
        self._port: Any = None

    def startService(self) -> Deferred[None]:
        super().startService()
        config = self._config
        host = urlsplit(config.advertise).hostname or "127.0.0.1"
        interface = _LISTEN_INTERFACE.search(config.listen)
        description = config.peer_listen or (
            "tcp:0" if interface is None else f"tcp:0:interface={interface.group(1)}")
        url_host = f"[{host}]" if ":" in host else host
        d = serverFromString(self._reactor, description).listen(self._factory)

        def listening(port: Any) -> None:
            self._port = port
            if self.url is None:
                scheme = "https" if self._tls else "http"
                self.url = f"{scheme}://{url_host}:{port.getHost().port}"
            self.log.info("Peer listener on {description}, advertised as {url}",
                          description=description, url=self.url)

        return d.addCallback(listening)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        return None if self._port is None else self._port.stopListening()


class InBackground(Service):
    """Starts ``service`` without waiting for it: ZooKeeper's session connects in
    the background, and a node recovers and answers (503 for writes) meanwhile."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def startService(self) -> None:
        super().startService()
        self.service.startService()  # its Deferred fires when first connected

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        return self.service.stopService()


class PeerClientService(Service):
    """Owns the peer client's connection pool: closed once the node has stopped."""

    def __init__(self, peer: PeerClient) -> None:
        self.peer = peer

    def stopService(self) -> Deferred[None]:
        super().stopService()
        return self.peer.close()


class NodeService(Service):
    """The node over the recovered storage, with the parts that serve it."""

    def __init__(self, reactor: Any, storage: StorageService,
                 settings: Callable[[], NodeSettings], peer: PeerClient | None,
                 on_fatal: Callable[[str], None],
                 observe_round: Callable[[int, float], None] | None, standalone: bool) -> None:
        """``settings`` is asked when the node starts (the peer URL is known by then)."""
        self._reactor = reactor
        self._storage = storage
        self._settings = settings
        self._peer = peer
        self._on_fatal = on_fatal
        self._observe_round = observe_round
        self._standalone = standalone
        self.replica: Replica | None = None

    def startService(self) -> Deferred[None]:
        super().startService()
        storage = self._storage
        assert storage.recovered is not None and storage.writer is not None
        self.replica = assemble(self._reactor, storage.data_dir, storage.recovered,
                                storage.writer, self._settings(), peer=self._peer,
                                on_fatal=self._on_fatal, observe_round=self._observe_round,
                                clock=MonotonicClock(self._reactor))
        if self._standalone:
            return self.replica.node.become_standalone()
        return succeed(None)

    def stopService(self) -> None:
        super().stopService()
        if self.replica is not None:
            self.replica.node.step_down("the node is stopping")


class CoordinatorService(Service):
    """The node's part in the cluster: znodes, election, leading or following."""

    def __init__(self, reactor: Any, zookeeper: ZooKeeperService, nodes: NodeService,
                 config: NodeConfig, peer: PeerClient, auth: PeerAuth | None) -> None:
        """``auth`` is filled from the ``secret`` znode (None: a file gave the secret)."""
        self._reactor = reactor
        self._zookeeper = zookeeper
        self._nodes = nodes
        self._config = config
        self._peer = peer
        self._auth = auth
        self.coordinator: ClusterCoordinator | None = None

    def startService(self) -> None:
        super().startService()
        replica = self._nodes.replica
        assert replica is not None
        self.coordinator = ClusterCoordinator(self._reactor, self._zookeeper, replica.node,
                                              replica.follower, self._config, self._peer,
                                              self._auth)
        self.coordinator.start()

    def stopService(self) -> None:
        super().stopService()
        if self.coordinator is not None:
            self.coordinator.stop()


class KvdService(AsyncMultiService):
    """One kvd node under twistd: its parts, started in this order and stopped in reverse.

    The client listener comes first, so that ``/readyz`` answers 503 while the
    WAL is replayed on a thread; then the peer listener, ZooKeeper's session,
    the peer client, the storage (recovery), the node, the coordinator.
    """

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
        #: The node's service, once the tree below is built (metrics ask at once).
        self.nodes: NodeService | None = None
        self.zookeeper: ZooKeeperService | None = None
        self.metrics = Metrics(self._node, self._session_state)
        expose = os.environ.get("KVD_TESTING_EXPOSE_SESSION") == "1"
        secret = None if config.peer_secret_file is None else read_secret_file(
            config.peer_secret_file)
        if secret is None and config.standalone:
            # No ZooKeeper to share one through: tokens last as long as the process.
            secret = generate_secret()
        self.peer_auth = PeerAuth(secret)
        tokens = TokenSigner(lambda: self.peer_auth.secret, config.token_ttl)
        self.api = ClientAPI(self._node, Limits(
            config.max_key_bytes, config.max_value_bytes, config.max_body_bytes,
            config.max_watches), metrics=self.metrics,
            access=ClientAccess(tokens, config.metrics_auth), cluster=self._coordinator,
            leases=self._lease_clock)
        self.peer_api = PeerAPI(self._node, self._follower, self.peer_auth,
                                session=self._zookeeper_session if expose else None,
                                max_body_bytes=peer_body_limit(config.max_body_bytes))
        gateway = EtcdGateway(self.api, config.cluster)
        etcd = gateway.resource()
        site = KvdSite(Root(self.api.resource(), {b"v3": etcd, b"v3beta": etcd,
                                                  b"version": etcd}),
                       config.max_body_bytes, self.metrics,
                       config.request_timeout)
        client_factory: Any = site
        if config.client_ca is not None:
            # Mutual TLS, as on the peer listener: a client shows a certificate from the CA.
            client_factory = PeerTLS.load(config.client_cert or "", config.client_key or "",
                                          config.client_ca).wrap_server(client_factory)
        strports.service(config.listen, ConnectionLimit(client_factory, config.max_connections),
                         reactor=reactor).setServiceParent(self)

        self.peer_listener: PeerListenerService | None = None
        peer: PeerClient | None = None
        if not config.standalone:
            peer_tls = None if config.peer_ca is None else PeerTLS.load(
                config.peer_cert or "", config.peer_key or "", config.peer_ca)
            peer_factory: Any = KvdSite(
                Root(self.peer_api.resource()), self.peer_api.max_body_bytes, self.metrics,
                config.request_timeout, required_header=AUTH_HEADER,
                on_refused=self.peer_api.log_refusal)
            if peer_tls is not None:
                peer_factory = peer_tls.wrap_server(peer_factory)
            self.peer_listener = PeerListenerService(
                reactor, config, ConnectionLimit(peer_factory, config.max_connections))
            self.peer_listener.setServiceParent(self)
            digest = None if config.zookeeper_auth_file is None else read_digest_file(
                config.zookeeper_auth_file)
            self.zookeeper = ZooKeeperService(config.zookeeper, timeout=config.session_timeout,
                                              reactor=reactor, digest=digest)
            InBackground(self.zookeeper).setServiceParent(self)
            peer = PeerClient(reactor, self.peer_auth,
                              tls=None if peer_tls is None else peer_tls.policy())
            PeerClientService(peer).setServiceParent(self)
        self.storage = StorageService(reactor, DataDir(config.data_dir), config.node_id,
                                      config.watch_history, config.fsync, self._fatal,
                                      observe_batch=self.metrics.observe_wal_batch)
        self.storage.setServiceParent(self)
        nodes = NodeService(reactor, self.storage, self._settings, peer, self._node_fatal,
                            self.metrics.observe_round, standalone=config.standalone)
        nodes.setServiceParent(self)
        self.nodes = nodes
        self.coordination: CoordinatorService | None = None
        if self.zookeeper is not None:
            assert peer is not None
            in_zookeeper = config.peer_secret_file is None
            self.coordination = CoordinatorService(
                reactor, self.zookeeper, nodes, config, peer,
                self.peer_auth if in_zookeeper else None)
            self.coordination.setServiceParent(self)
        self.ready: Deferred[None] = Deferred()

    # What the listeners see of the parts that start later (None until they have).

    def _replica(self) -> Replica | None:
        return None if self.nodes is None else self.nodes.replica

    def _node(self) -> Node | None:
        replica = self._replica()
        return None if replica is None else replica.node

    def _lease_clock(self) -> ExpiryScheduler | None:
        replica = self._replica()
        return None if replica is None else replica.expiry

    def _follower(self) -> Follower | None:
        replica = self._replica()
        return None if replica is None else replica.follower

    def _coordinator(self) -> ClusterCoordinator | None:
        return None if self.coordination is None else self.coordination.coordinator

    def _session_state(self) -> str | None:
        return None if self.zookeeper is None else self.zookeeper.state

    def _zookeeper_session(self) -> tuple[int, bytes] | None:
        return None if self.zookeeper is None else self.zookeeper.client_id

    def _settings(self) -> NodeSettings:
        config = self.config
        return NodeSettings(
            url=config.advertise,
            peer_url=(self.peer_listener.url if self.peer_listener is not None else None) or "",
            write_timeout=config.write_timeout,
            snapshot_entries=config.snapshot_entries,
            snapshot_bytes=config.snapshot_bytes,
            log_tail=min(5000, max(1, config.snapshot_entries // 4)),
        )

    def startService(self) -> Deferred[None]:
        if not self.config.fsync:
            self.log.warn("--fsync none: acknowledged writes can be lost on a crash. "
                          "For benchmarks only.")
        d = super().startService()
        d.addCallbacks(self.ready.callback, self._fatal)
        return d

    def _node_fatal(self, message: str) -> None:
        self._fatal(Failure(FatalNodeError(message)))

    def _fatal(self, failure: Failure) -> None:
        if failure.check(WalCorruption, FatalNodeError):
            self.log.critical("{message}", message=failure.getErrorMessage())
        else:
            self.log.failure("Fatal error; stopping the node", failure)
        # A node that cannot trust its disk must not serve: stop hard, non-zero.
        sys.stdout.flush()
        self.reactor.callLater(0, os._exit, 1)

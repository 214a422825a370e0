"""The settings of one node, as parsed from the command line."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class NodeConfig:
    """Everything ``twistd kvd`` was told; see DESIGN section 3."""

    listen: str
    advertise: str
    data_dir: str
    zookeeper: str = "127.0.0.1:2181"
    cluster: str = "default"
    node_id: str | None = None
    replicas: int = 3
    write_quorum: int = 2
    fsync: bool = True
    max_key_bytes: int = 1024
    max_value_bytes: int = 1024 * 1024
    max_body_bytes: int = 2 * 1024 * 1024
    session_timeout: float = 6.0
    snapshot_entries: int = 20_000
    snapshot_bytes: int = 64 << 20
    write_timeout: float = 5.0
    watch_history: int = 10_000
    standalone: bool = False
    #: Endpoint of the peer listener (None: an ephemeral port on the client host).
    peer_listen: str | None = None
    #: URL other nodes reach the peer listener at (None: from the port it got).
    advertise_peer: str | None = None
    #: File holding the cluster's peer secret (None: kept in ZooKeeper).
    peer_secret_file: str | None = None
    #: File holding ``user:password``: kvd's ZooKeeper digest identity (None: none).
    zookeeper_auth_file: str | None = None
    #: Peer mutual TLS: this node's certificate and key, and the peers' CA (PEM files).
    peer_cert: str | None = None
    peer_key: str | None = None
    peer_ca: str | None = None
    #: Client TLS with client certificates: this node's certificate and key, and
    #: the CA every client's certificate must come from (PEM files).
    client_cert: str | None = None
    client_key: str | None = None
    client_ca: str | None = None
    #: Connections each listener takes at once; more are closed at once.
    max_connections: int = 1024
    #: Seconds a client has to send a request's headers.
    request_timeout: float = 10.0
    #: Watches a node streams at once.
    max_watches: int = 1024
    #: Seconds a client token is good for.
    token_ttl: float = 300.0
    #: With auth on, ``/metrics`` needs a token too.
    metrics_auth: bool = False

    @property
    def sync_quorum(self) -> int:
        """R = N - W + 1, so that every sync quorum meets every write quorum."""
        return self.replicas - self.write_quorum + 1


def read_digest_file(path: str) -> tuple[str, str]:
    """``user:password`` from ``path`` (mode 600), for ZooKeeper's digest scheme."""
    with open(path) as f:
        text = f.read().strip()
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ValueError(f"{path}: expected one line 'user:password'")
    mode = os.stat(path).st_mode
    if mode & 0o077:
        raise ValueError(f"{path}: readable by others (mode {mode & 0o777:o}); chmod 600 it")
    return user, password

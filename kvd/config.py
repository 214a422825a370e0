"""The settings of one node, as parsed from the command line."""

from __future__ import annotations

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
    write_timeout: float = 5.0
    watch_history: int = 10_000
    standalone: bool = False
    #: Endpoint of the peer listener (None: an ephemeral port on the client host).
    peer_listen: str | None = None
    #: URL other nodes reach the peer listener at (None: from the port it got).
    advertise_peer: str | None = None
    #: File holding the cluster's peer secret (None: kept in ZooKeeper).
    peer_secret_file: str | None = None

    @property
    def sync_quorum(self) -> int:
        """R = N - W + 1, so that every sync quorum meets every write quorum."""
        return self.replicas - self.write_quorum + 1

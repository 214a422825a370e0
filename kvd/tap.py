"""
``twistd kvd``: the command line, and the service tree it builds.

Nothing here starts anything: ``makeService`` only wires services whose
``startService`` does the work, because twistd forks after ``makeService``.
"""

from __future__ import annotations

import os
import re
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from kvd.config import NodeConfig

_PORT_IN_ENDPOINT = re.compile(r"^(?:tcp6?|ssl|unix)?:?(?:port=)?(\d+)")


def _positive(name: str, value: int) -> int:
    if value <= 0:
        raise usage.UsageError(f"--{name} must be a positive integer, not {value}")
    return value


class Options(usage.Options):
    """Options of ``twistd kvd``; see DESIGN section 3."""

    synopsis = "[options]"
    longdesc = "Run one kvd node: a replicated in-memory key-value store."

    optFlags = [
        ["standalone", None, "One node, no ZooKeeper: the leader of a cluster of one."],
    ]
    optParameters = [
        ["port", "p", None, "Listen on this TCP port (shorthand for --listen tcp:PORT).", int],
        ["listen", None, None, "Listen on this Twisted server endpoint string."],
        ["zookeeper", None, "127.0.0.1:2181", "ZooKeeper hosts, with an optional /chroot."],
        ["cluster", None, "default", "Cluster name: the ZooKeeper tree is /kvd/<cluster>."],
        ["data-dir", None, None, "Data directory (default ./kvd-data/<port>)."],
        ["node-id", None, None, "Node id (default: generated once, kept in the data dir)."],
        ["advertise", None, None, "URL other nodes and clients use to reach this node."],
        ["replicas", None, 3, "Voters in the cluster, N (bootstrap value).", int],
        ["write-quorum", None, None, "Write quorum W (bootstrap; default a majority).", int],
        ["fsync", None, "always", "always | none (none is for benchmarks only)."],
        ["max-key-bytes", None, 1024, "Largest key accepted, in bytes.", int],
        ["max-value-bytes", None, 1024 * 1024, "Largest value accepted, in bytes.", int],
        ["max-body-bytes", None, 2 * 1024 * 1024, "Largest request body, in bytes.", int],
        ["session-timeout", None, 6.0, "ZooKeeper session timeout, seconds.", float],
        ["snapshot-entries", None, 20_000, "Snapshot every this many applied entries.", int],
        ["watch-history", None, 10_000, "Change events kept for watches to resume from.", int],
        ["write-timeout", None, 5.0, "Seconds before a write answers 504 (outcome unknown).",
         float],
    ]

    def postOptions(self) -> None:
        if self["port"] is not None and self["listen"] is not None:
            raise usage.UsageError("give --port or --listen, not both")
        if self["port"] is not None:
            if not 0 < self["port"] < 65536:
                raise usage.UsageError(f"--port must be 1-65535, not {self['port']}")
            self["listen"] = f"tcp:{self['port']}"
        if self["listen"] is None:
            raise usage.UsageError("--port or --listen is required")
        match = _PORT_IN_ENDPOINT.match(self["listen"])
        port = match.group(1) if match else None
        if self["data-dir"] is None:
            self["data-dir"] = os.path.join("kvd-data", port or "node")
        if self["advertise"] is None:
            if port is None:
                raise usage.UsageError("--advertise is required when --listen has no port")
            self["advertise"] = f"http://127.0.0.1:{port}"
        if not re.match(r"^https?://[^/\s]+$", self["advertise"].rstrip("/")):
            raise usage.UsageError(f"--advertise must be an http(s) URL, not "
                                   f"{self['advertise']!r}")
        self["advertise"] = self["advertise"].rstrip("/")
        if self["fsync"] not in ("always", "none"):
            raise usage.UsageError(f"--fsync must be 'always' or 'none', not {self['fsync']!r}")
        for name in ("replicas", "max-key-bytes", "max-value-bytes", "max-body-bytes",
                     "snapshot-entries", "watch-history"):
            _positive(name, self[name])
        for name in ("session-timeout", "write-timeout"):
            if self[name] <= 0:
                raise usage.UsageError(f"--{name} must be positive")
        replicas = self["replicas"]
        if self["write-quorum"] is None:
            self["write-quorum"] = replicas // 2 + 1
        if not 1 <= self["write-quorum"] <= replicas:
            raise usage.UsageError(
                f"--write-quorum must be between 1 and --replicas ({replicas})"
            )
        if self["cluster"] and not re.match(r"^[A-Za-z0-9_.-]+$", self["cluster"]):
            raise usage.UsageError("--cluster may hold only letters, digits, '_', '.', '-'")

    def config(self) -> NodeConfig:
        return NodeConfig(
            listen=self["listen"],
            advertise=self["advertise"],
            zookeeper=self["zookeeper"],
            cluster=self["cluster"],
            data_dir=self["data-dir"],
            node_id=self["node-id"],
            replicas=self["replicas"],
            write_quorum=self["write-quorum"],
            fsync=self["fsync"] == "always",
            max_key_bytes=self["max-key-bytes"],
            max_value_bytes=self["max-value-bytes"],
            max_body_bytes=self["max-body-bytes"],
            session_timeout=self["session-timeout"],
            snapshot_entries=self["snapshot-entries"],
            write_timeout=self["write-timeout"],
            watch_history=self["watch-history"],
            standalone=bool(self["standalone"]),
        )


def makeService(options: dict[str, Any]) -> IService:
    from kvd.service import KvdService

    assert isinstance(options, Options)
    return KvdService(options.config())

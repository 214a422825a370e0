"""
A real kvd cluster on loopback: N ``twistd kvd`` processes and one ZooKeeper.

Blocking, for tests, benchmarks and torture runs.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from typing import Any

import msgpack
from kazoo.client import KazooClient

from kvd.replication.peerauth import HEADER as AUTH_HEADER
from kvd.replication.peerauth import PeerAuth
from kvd.testing.process import KvdProcess, Response, request, wait_for
from kvd.testing.zookeeper import ZooKeeperServer


@dataclass
class Cluster:
    """N nodes of one cluster name against one ZooKeeper."""

    workdir: str
    zookeeper: ZooKeeperServer
    size: int = 3
    name: str = "test"
    session_timeout: float = 2.0
    extra_args: list[str] = field(default_factory=list)
    nodes: list[KvdProcess] = field(default_factory=list)
    #: (name, password) the helpers log in with once the cluster has auth on.
    credentials: tuple[str, str] | None = None
    _token: str | None = None

    def __post_init__(self) -> None:
        if not self.nodes:
            self.nodes = [self._make_node(i) for i in range(self.size)]

    def _make_node(self, i: int) -> KvdProcess:
        return KvdProcess(
            os.path.join(self.workdir, f"node{i}"),
            args=["--zookeeper", self.zookeeper.hosts, "--cluster", self.name,
                  "--session-timeout", str(self.session_timeout), *self.extra_args],
        )

    def start(self, timeout: float = 60.0) -> Cluster:
        os.environ["KVD_TESTING_EXPOSE_SESSION"] = "1"
        for node in self.nodes:
            node.start(wait=False)
        for node in self.nodes:
            node.wait_ready(timeout)
        self.wait_leader(timeout)
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> Cluster:
        """Started, and stopped again if starting fails."""
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def running(self) -> list[KvdProcess]:
        return [n for n in self.nodes if n.proc is not None and n.proc.poll() is None]

    def status(self, node: KvdProcess) -> dict[str, Any]:
        answer = node.call("GET", "/api/v1/cluster", headers=self._auth(), timeout=2)
        if answer.status == 401 and self.credentials is not None:
            self._token = None
            answer = node.call("GET", "/api/v1/cluster", headers=self._auth(node), timeout=2)
        return answer.body

    def _auth(self, node: KvdProcess | None = None) -> dict[str, str]:
        """An ``Authorization`` header from ``credentials`` (logging in on ``node``)."""
        if self.credentials is None:
            return {}
        if self._token is None and node is not None:
            name, password = self.credentials
            answer = node.call("POST", "/api/v1/auth/authenticate",
                               {"name": name, "password": password}, timeout=5)
            self._token = answer.body["token"] if answer.status == 200 else None
        return {} if self._token is None else {"Authorization": f"Bearer {self._token}"}

    def leader(self) -> KvdProcess | None:
        """The running node that says it leads and serves (None if none does)."""
        for node in self.running():
            try:
                if self.status(node)["role"] == "leader" and node.ready():
                    return node
            except Exception:
                continue
        return None

    def wait_leader(self, timeout: float = 30.0, not_this: KvdProcess | None = None
                    ) -> KvdProcess:
        def found() -> KvdProcess | None:
            leader = self.leader()
            return leader if leader is not None and leader is not not_this else None

        return wait_for(found, timeout, "a serving leader")

    def followers(self) -> list[KvdProcess]:
        leader = self.leader()
        return [n for n in self.running() if n is not leader]

    def wait_converged(self, timeout: float = 30.0) -> int:
        """Every running node has applied the same index; returns it."""
        def same() -> int | None:
            indexes = {self.status(n)["applied_index"] for n in self.running()}
            commits = {self.status(n)["commit_index"] for n in self.running()}
            if len(indexes) == 1 and indexes == commits:
                return indexes.pop() or None
            return None

        return wait_for(same, timeout, "all nodes applied the same index")

    def put(self, node: KvdProcess, key: str, value: str, timeout: float = 10.0) -> Response:
        return node.call("PUT", f"/api/v1/keys/{key}", {"value": value}, timeout=timeout)

    def get(self, node: KvdProcess, key: str, stale: bool = False) -> Response:
        query = "?consistency=stale" if stale else ""
        return node.call("GET", f"/api/v1/keys/{key}{query}")

    def peer_secret(self) -> bytes:
        """The cluster's peer secret, as the first node kept it in ZooKeeper."""
        client = KazooClient(hosts=self.zookeeper.hosts)
        client.start(10)
        try:
            data, _ = client.get(f"/kvd/{self.name}/secret")
            return bytes(data)
        finally:
            client.stop()
            client.close()

    def peer_url(self, node: KvdProcess) -> str:
        """Where ``node`` takes peer messages (its peer listener)."""
        status = self.status(node)
        return str(next(m["peer_url"] for m in status["members"]
                        if m["node_id"] == status["node_id"]))

    def zookeeper_session(self, node: KvdProcess) -> tuple[int, bytes]:
        """The node's ZooKeeper session, to force its expiry."""
        path = "/peer/v1/testing/zookeeper-session"
        body = msgpack.packb({})
        mac = PeerAuth(self.peer_secret()).sign_request(path.encode(), body)
        raw = request(self.peer_url(node), "POST", path, body=body,
                      headers={"Content-Type": "application/msgpack",
                               AUTH_HEADER.decode(): mac.decode()})
        assert raw.status == 200, raw
        body = raw.body if isinstance(raw.body, dict) else msgpack.unpackb(raw.body)
        return int(body["session_id"]), bytes(body["password"])

    def pause(self, node: KvdProcess) -> None:
        node.signal(signal.SIGSTOP)

    def resume(self, node: KvdProcess) -> None:
        node.signal(signal.SIGCONT)

"""
A kvd for tests, in memory: ``StubKvd`` serves the real client API over a
standalone node on a temporary directory, reached through treq's ``StubTreq``
(no sockets, no threads, no reactor running). Use it to test code that takes
a ``KvdClient``::

    kvd = StubKvd(tmp_path)
    client = kvd.client()
    d = client.put("k", "v")
    kvd.flush()
"""

from __future__ import annotations

from typing import Any

from treq.testing import StubTreq
from twisted.web.resource import IResource, Resource

from kvd.client.client import KvdClient
from kvd.node import Node, NodeSettings
from kvd.replica import open_replica
from kvd.testing.inline import InlinePool, InlineReactor, inline_defer_to_thread
from kvd.wal.layout import DataDir
from kvd.wal.storage import recover_store
from kvd.web.public import ClientAPI


class _ByHost(Resource):
    """Each endpoint's host:port to its own resource (one ``StubTreq`` for several nodes)."""

    isLeaf = False

    def __init__(self, resources: dict[bytes, IResource]) -> None:
        super().__init__()
        self.resources = resources

    def getChildWithDefault(self, path: bytes, request: Any) -> IResource:
        resource = self.resources[request.getHeader(b"host") or b""]
        request.postpath.insert(0, request.prepath.pop())
        return resource


class StubKvd:
    """A standalone kvd node served in memory at ``url``."""

    def __init__(self, path: str, url: str = "http://kvd.invalid:8081") -> None:
        self.reactor = InlineReactor()
        self.url = url
        data_dir = DataDir(str(path))
        replica = open_replica(self.reactor, data_dir, recover_store(data_dir, None),
                               NodeSettings(url=url), fsync=False, pool=InlinePool(),
                               defer_to_thread=inline_defer_to_thread)
        self.node: Node = replica.node
        self._writer = replica.writer
        started = self.node.become_standalone()
        self.reactor.advance(0)
        assert started.called, "a standalone node serves once its marker is durable"
        self.api = ClientAPI(lambda: self.node, defer_to_thread=inline_defer_to_thread)
        host = url.split("://", 1)[1].split("/", 1)[0].encode()
        #: Other endpoints the stub answers for, by host:port (see ``answer_with``).
        self.resources: dict[bytes, IResource] = {host: self.api.resource()}
        self.treq = StubTreq(_ByHost(self.resources))

    def answer_with(self, url: str, resource: IResource) -> None:
        """Serve ``resource`` at ``url`` too (say, a node that is not ready)."""
        self.resources[url.split("://", 1)[1].split("/", 1)[0].encode()] = resource

    def client(self, endpoints: list[str] | None = None, **kwargs: Any) -> KvdClient:
        """A ``KvdClient`` over the stub, trying ``endpoints`` (default: the node) in order."""
        return KvdClient(endpoints or [self.url], self.reactor, http=self.treq, **kwargs)

    def flush(self) -> None:
        """Run what is pending: the node's timers due now, then the stub's I/O."""
        for _ in range(3):
            self.reactor.advance(0)
            self.treq.flush()

    def close(self) -> None:
        self._writer.close()

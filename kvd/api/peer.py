"""
The peer API: node-to-node messages under ``/peer/v1``, msgpack in and out.

Separate from the client API so that it can be fenced off (a shared token,
another listener) without touching client routes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from kvd import errors
from kvd.api.site import MAX_PEER_BODY
from kvd.commands import client_commands
from kvd.node import Node, Role
from kvd.replication.leader import NotLeading
from kvd.replication.peer import MSGPACK, PEER_PREFIX, decode, encode

log = Logger()



class PeerAPI:
    """Handlers of peer messages; each answers a msgpack map."""

    app = Klein()

    def __init__(self, node: Callable[[], Node | None], token: str = "",
                 session: Callable[[], tuple[int, bytes] | None] | None = None) -> None:
        self._node = node
        self._token = token
        #: Only for fault-injection tests (KVD_TESTING_EXPOSE_SESSION=1): the
        #: ZooKeeper session id and password, to force the session's expiry.
        self._session = session

    def resource(self) -> IResource:
        return self.app.resource()

    def node(self) -> Node:
        node = self._node()
        if node is None:
            raise errors.NotReady("the node is still starting")
        return node

    def _reply(self, request: IRequest, status: int, body: Any) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", MSGPACK)
        return encode(body)

    def _message(self, request: IRequest) -> dict[str, Any]:
        if self._token:
            supplied = request.getHeader(b"x-kvd-peer-token") or b""
            if supplied.decode("latin-1") != self._token:
                raise errors.KvdError("bad peer token")
        raw = request.content.read(MAX_PEER_BODY + 1) if request.content else b""
        try:
            message = decode(raw) if raw else {}
        except Exception:
            raise errors.BadRequest("body is not msgpack") from None
        if not isinstance(message, dict):
            raise errors.BadRequest("body must be a msgpack map")
        return message

    @app.handle_errors(errors.KvdError)
    def _error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, errors.KvdError)
        return self._reply(request, error.status, {"code": error.code, "message": error.message})

    @app.handle_errors(NotLeading)
    def _not_leading(self, request: IRequest, failure: Failure) -> bytes:
        return self._reply(request, 503, {"code": "not_leader",
                                          "message": failure.getErrorMessage()})

    @app.handle_errors(Exception)
    def _bug(self, request: IRequest, failure: Failure) -> bytes:
        log.failure("Peer request {path} failed", failure, path=request.path)
        return self._reply(request, 500, {"code": "internal", "message": "internal error"})

    @app.route(f"{PEER_PREFIX}/newepoch", methods=["POST"])
    async def new_epoch(self, request: IRequest) -> bytes:
        answer = await self.node().follower.new_epoch(self._message(request))
        return self._reply(request, 200, answer)

    @app.route(f"{PEER_PREFIX}/prepare", methods=["POST"])
    async def prepare(self, request: IRequest) -> bytes:
        answer = await self.node().follower.prepare(self._message(request))
        return self._reply(request, 200, answer)

    @app.route(f"{PEER_PREFIX}/snapshot", methods=["POST"])
    async def snapshot(self, request: IRequest) -> bytes:
        answer = await self.node().follower.install_snapshot(self._message(request))
        return self._reply(request, 200, answer)

    @app.route(f"{PEER_PREFIX}/fetch", methods=["POST"])
    async def fetch(self, request: IRequest) -> bytes:
        answer = await self.node().follower.fetch(self._message(request))
        return self._reply(request, 200, answer)

    @app.route(f"{PEER_PREFIX}/readindex", methods=["POST"])
    async def read_index(self, request: IRequest) -> bytes:
        self._message(request)
        node = self.node()
        if node.role != Role.LEADER or node.leader is None:
            raise errors.NotReady("this node does not lead")
        index = await node.leader.read_index()
        return self._reply(request, 200, {"index": index})

    @app.route(f"{PEER_PREFIX}/forward", methods=["POST"])
    async def forward(self, request: IRequest) -> bytes:
        message = self._message(request)
        # Validated before anything is proposed (safety rule 14).
        commands = client_commands(message.get("commands"))
        node = self.node()
        if node.role != Role.LEADER or node.leader is None:
            raise errors.NotReady("this node no longer leads")
        results = await node.submit(commands)
        return self._reply(request, 200, {"results": results})


    @app.route(f"{PEER_PREFIX}/testing/zookeeper-session", methods=["POST"])
    def zookeeper_session(self, request: IRequest) -> bytes:
        self._message(request)
        if self._session is None:
            raise errors.NotFound("not enabled")
        session = self._session()
        if session is None:
            raise errors.NotReady("no ZooKeeper session")
        return self._reply(request, 200, {"session_id": session[0], "password": session[1]})

"""
The peer API: node-to-node messages under ``/peer/v1``, msgpack in and out.

Served only on the peer listener. Every request must prove it comes from a
node holding the cluster secret (``kvd.replication.peerauth``): without a
valid MAC it is a 401 before its body is decoded. A request that passes is
checked against its message schema (``kvd.replication.messages``) before its
handler runs: a bad one is a 400 with nothing changed. Every answer carries
its own MAC.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from klein import Klein
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource

from kvd import errors
from kvd.commands import client_commands
from kvd.node import Node, Role
from kvd.replication import messages
from kvd.replication.follower import Follower
from kvd.replication.leader import NotLeading
from kvd.replication.peer import MSGPACK, PEER_PREFIX, decode, encode
from kvd.replication.peerauth import HEADER as AUTH_HEADER
from kvd.replication.peerauth import PeerAuth
from kvd.web.hotroutes import HotRouteResource

log = Logger()

REFUSAL_LOG_SECONDS = 60.0
#: Found without werkzeug's matcher (``HotRouteResource``): what every write and read sends.
HOT_ROUTES = tuple(f"{PEER_PREFIX}/{name}" for name in ("prepare", "readindex", "forward"))


class PeerAPI:
    """Handlers of peer messages; each answers a msgpack map."""

    app = Klein()

    def __init__(self, node: Callable[[], Node | None], follower: Callable[[], Follower | None],
                 auth: PeerAuth,
                 session: Callable[[], tuple[int, bytes] | None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 max_body_bytes: int = messages.peer_body_limit(2 * 1024 * 1024)) -> None:
        self._node = node
        self._follower = follower
        #: The largest body a peer message may have (the site refuses more first).
        self.max_body_bytes = max_body_bytes
        self._auth = auth
        self._clock = clock
        #: Source address -> when its last refusal was logged (one line a minute).
        self._refusals_logged: dict[str, float] = {}
        #: Only for fault-injection tests (KVD_TESTING_EXPOSE_SESSION=1): the
        #: ZooKeeper session id and password, to force the session's expiry.
        self._session = session

    def resource(self) -> IResource:
        return HotRouteResource(self.app, HOT_ROUTES)

    def node(self) -> Node:
        node = self._node()
        if node is None:
            raise errors.NotReady("the node is still starting")
        return node

    def follower(self) -> Follower:
        follower = self._follower()
        if follower is None:
            raise errors.NotReady("the node is still starting")
        return follower

    def _reply(self, request: IRequest, status: int, body: Any) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", MSGPACK)
        data = encode(body)
        if self._auth.secret is not None:
            proof = request.getHeader(AUTH_HEADER) or b""
            request.setHeader(AUTH_HEADER, self._auth.sign_answer(proof, data))
        return data

    def log_refusal(self, request: IRequest, why: str) -> None:
        """One log line per source and minute for requests without valid credentials."""
        source = getattr(request.getClientAddress(), "host", "?")
        now = self._clock()
        if now - self._refusals_logged.get(source, -REFUSAL_LOG_SECONDS) >= REFUSAL_LOG_SECONDS:
            self._refusals_logged[source] = now
            log.warn("Refused a peer request from {source} to {path}: {why} (logged once a "
                     "minute per source)", source=source, path=request.path, why=why)

    def _refuse(self, request: IRequest, why: str) -> None:
        self.log_refusal(request, why)
        raise errors.Unauthorized(why)

    def _message(self, request: IRequest, name: str) -> dict[str, Any]:
        raw = request.content.read(self.max_body_bytes + 1) if request.content else b""
        if len(raw) > self.max_body_bytes:
            raise errors.TooLarge(f"a peer message is at most {self.max_body_bytes} bytes")
        if self._auth.secret is None:
            raise errors.NotReady("this node does not know the cluster secret yet")
        supplied = request.getHeader(AUTH_HEADER)
        if supplied is None:
            self._refuse(request, "no peer credentials")
        elif not self._auth.request_ok(request.path, raw, supplied):
            self._refuse(request, "bad peer credentials")
        try:
            message = decode(raw) if raw else {}
        except Exception:
            raise errors.BadRequest("body is not msgpack") from None
        try:
            return messages.check(name, message)
        except messages.BadMessage as e:
            raise errors.BadRequest(f"bad {name} message: {e}") from None

    @app.handle_errors(errors.ApiError)
    def _error(self, request: IRequest, failure: Failure) -> bytes:
        error = failure.value
        assert isinstance(error, errors.ApiError)
        return self._reply(request, error.status, {"code": error.code, "message": error.message})

    @app.handle_errors(messages.BadMessage)
    def _bad_message(self, request: IRequest, failure: Failure) -> bytes:
        return self._reply(request, 400, {"code": "bad_request",
                                          "message": failure.getErrorMessage()})

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
        answer = await self.follower().new_epoch(self._message(request, "newepoch"))
        return self._reply(request, 200, answer)

    @app.route(f"{PEER_PREFIX}/prepare", methods=["POST"])
    async def prepare(self, request: IRequest) -> bytes:
        answer = await self.follower().prepare(self._message(request, "prepare"))
        return self._reply(request, 200, answer)

    @app.route(f"{PEER_PREFIX}/snapshot", methods=["POST"])
    async def snapshot(self, request: IRequest) -> bytes:
        answer = await self.follower().install_snapshot(self._message(request, "snapshot"))
        return self._reply(request, 200, answer)

    @app.route(f"{PEER_PREFIX}/fetch", methods=["POST"])
    async def fetch(self, request: IRequest) -> bytes:
        answer = await self.follower().fetch(self._message(request, "fetch"))
        return self._reply(request, 200, answer)

    @app.route(f"{PEER_PREFIX}/readindex", methods=["POST"])
    async def read_index(self, request: IRequest) -> bytes:
        self._message(request, "readindex")
        node = self.node()
        if node.role != Role.LEADER or node.leader is None:
            raise errors.NotReady("this node does not lead")
        index = await node.leader.read_index()
        return self._reply(request, 200, {"index": index})

    @app.route(f"{PEER_PREFIX}/forward", methods=["POST"])
    async def forward(self, request: IRequest) -> bytes:
        message = self._message(request, "forward")
        # Validated before anything is proposed (safety rule 14).
        commands = client_commands(message.get("commands"))
        node = self.node()
        if node.role != Role.LEADER or node.leader is None:
            raise errors.NotReady("this node no longer leads")
        results = await node.submit(commands)
        return self._reply(request, 200, {"results": results})


    @app.route(f"{PEER_PREFIX}/testing/zookeeper-session", methods=["POST"])
    def zookeeper_session(self, request: IRequest) -> bytes:
        self._message(request, "testing/zookeeper-session")
        if self._session is None:
            raise errors.NotFound("not enabled")
        session = self._session()
        if session is None:
            raise errors.NotReady("no ZooKeeper session")
        return self._reply(request, 200, {"session_id": session[0], "password": session[1]})

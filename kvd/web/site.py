"""
The HTTP sites of a node: the client API on the client listener, the peer
API on the peer listener (``/peer/*`` on the client listener is a 404).

Two things happen here before any route runs: a body announced larger than
the limit is refused with 413 as soon as its headers arrive (not after it
was buffered), and a path that is not UTF-8 gets the API's JSON 400.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import unquote_to_bytes

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request, Site

from kvd.metrics import Metrics


def _error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}},
                      separators=(",", ":")).encode() + b"\n"


class _Discard:
    """A body sink that keeps nothing."""

    def write(self, data: bytes) -> None:
        pass

    def seek(self, *args: Any) -> None:
        pass

    def read(self, *args: Any) -> bytes:
        return b""

    def tell(self) -> int:
        return 0

    def close(self) -> None:
        pass


class KvdRequest(Request):
    """A request that does not buffer a body announced larger than the limit."""

    too_large: int | None = None
    #: The site's required header was missing: refused before the body is read.
    unauthenticated = False

    def gotLength(self, length: int | None) -> None:
        site = cast(KvdChannel, self.channel).site
        required = site.required_header
        if required is not None and not self.requestHeaders.hasHeader(required):
            self.unauthenticated = True
            self.content = _Discard()
            return
        limit = site.max_body_bytes
        if length is not None and length > limit:
            self.too_large = limit
            self.content = _Discard()
            return
        super().gotLength(length)


log = Logger()


class ConnectionLimit(WrappingFactory):
    """A listener's factory that takes at most ``limit`` connections at once;
    one more is closed as soon as it is accepted."""

    noisy = False

    def __init__(self, factory: Any, limit: int) -> None:
        super().__init__(factory)
        self.limit = limit

    def buildProtocol(self, addr: Any) -> Any:
        if len(self.protocols) >= self.limit:
            return None
        return super().buildProtocol(addr)


class KvdChannel(HTTPChannel):
    #: Set by ``Site.buildProtocol``.
    site: KvdSite
    """HTTP/1.1 that cuts off a client whose request headers take longer than the
    site's ``request_timeout`` to arrive (one byte a second keeps twisted.web's
    idle timeout from ever firing)."""

    _headers_deadline: IDelayedCall | None = None

    def dataReceived(self, data: bytes) -> None:
        if self.line_mode and self._headers_deadline is None \
                and self.site.request_timeout:
            self._headers_deadline = self.callLater(
                self.site.request_timeout, self._headers_too_slow)
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        self._cancel_deadline()
        super().allHeadersReceived()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_deadline()
        super().connectionLost(reason)

    def _cancel_deadline(self) -> None:
        if self._headers_deadline is not None and self._headers_deadline.active():
            self._headers_deadline.cancel()
        self._headers_deadline = None

    def _headers_too_slow(self) -> None:
        self._headers_deadline = None
        peer = self.transport.getPeer() if self.transport is not None else None
        log.info("Cut off {peer}: request headers not received within {timeout}s",
                 peer=getattr(peer, "host", "?"),
                 timeout=self.site.request_timeout)
        if self.transport is not None:
            self.transport.write(b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
                                 b"Content-Length: 0\r\n\r\n")
            self.transport.loseConnection()


class KvdSite(Site):
    """Feeds request metrics instead of writing access log lines (they cost more
    than the request), and knows the body limit.
    """

    noisy = False
    requestFactory = KvdRequest
    protocol = KvdChannel  # type: ignore[assignment]

    def __init__(self, resource: IResource, max_body_bytes: int,
                 metrics: Metrics | None = None, request_timeout: float = 10.0,
                 required_header: bytes | None = None,
                 on_refused: Callable[[IRequest, str], None] | None = None) -> None:
        # No body is ever a form: twisted.web would otherwise parse the
        # Content-Type of every POST with the email package (3.5% of a
        # follower's CPU on PREPAREs, by py-spy) and merge form fields into the
        # query arguments.
        super().__init__(resource, parsePOSTFormSubmission=False)
        #: A request without this header is refused (401) before its body is read,
        #: and told to ``on_refused`` (which logs it).
        self.required_header = required_header
        self.on_refused = on_refused
        self.max_body_bytes = max_body_bytes
        #: Seconds a client has to send a request's headers.
        self.request_timeout = request_timeout
        self.metrics = metrics
        self.displayTracebacks = False

    def getResourceFor(self, request: Any) -> Any:
        request.kvd_started = time.monotonic()
        return super().getResourceFor(request)

    def log(self, request: Any) -> None:
        if self.metrics is not None:
            self.metrics.observe_request(request)


class _Refusal(Resource):
    """An error answered before any route runs."""

    isLeaf = True

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__()
        self.status, self.code, self.message = status, code, message

    def render(self, request: IRequest) -> bytes:
        request.setResponseCode(self.status)
        request.setHeader(b"Content-Type", b"application/json")
        return _error_body(self.code, self.message)


class Root(Resource):
    """Refuses what must not reach a route, and hands the rest to one API (or,
    by the path's first segment, to one of ``others``: etcd's gateway serves
    ``/v3/``, ``/v3beta/`` and ``/version`` beside the client API)."""

    def __init__(self, api: IResource, others: dict[bytes, IResource] | None = None) -> None:
        super().__init__()
        self._api = api
        self._others = others or {}

    def getChildWithDefault(self, path: bytes, request: IRequest) -> IResource:
        if isinstance(request, KvdRequest) and request.unauthenticated:
            site = cast(KvdChannel, request.channel).site
            if site.on_refused is not None:
                site.on_refused(request, "no peer credentials")
            return _Refusal(401, "unauthorized", "no credentials")
        limit = getattr(request, "too_large", None)
        if limit is not None:
            return _Refusal(413, "too_large", f"body larger than {limit} bytes")
        try:
            unquote_to_bytes(request.path).decode("utf-8")
        except UnicodeDecodeError:
            return _Refusal(400, "bad_request", "the path is not valid UTF-8")
        # A Klein resource routes on the whole path: hand the segment back so
        # that it sees the path as it came.
        request.postpath.insert(0, request.prepath.pop())
        return self._others.get(path, self._api)

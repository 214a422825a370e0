"""
Node-to-node calls: msgpack over HTTP with treq, one dedicated connection pool.

Every call has a timeout over the whole exchange (connect, headers and body),
not just the headers. A call that could not connect certainly did not reach
the peer; any other failure may have.
"""

from __future__ import annotations

from typing import Any

import msgpack
import treq
from hyperlink import EncodedURL
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectError, ConnectionRefusedError, DNSLookupError
from twisted.internet.interfaces import IConsumer
from twisted.web.client import HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IPolicyForHTTPS
from zope.interface import implementer

from kvd.quietagent import quiet_agent
from kvd.replication.messages import BadMessage
from kvd.replication.peerauth import HEADER as AUTH_HEADER
from kvd.replication.peerauth import NoSecret, PeerAuth
from kvd.wal.record import LogEntry

PEER_PREFIX = "/peer/v1"
MSGPACK = b"application/msgpack"


class PeerError(Exception):
    """A peer answered with an error status."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"peer answered {status}: {body!r}")
        self.status = status
        self.body = body


class NotDelivered(Exception):
    """The call certainly did not reach the peer (it could not connect)."""


def encode(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def decode(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def entries_to_wire(entries: list[LogEntry]) -> list[list[Any]]:
    """Entries travel with their commands packed as they are in the WAL."""
    return [[e.epoch, e.index, e.packed] for e in entries]


def entries_from_wire(raw: list[list[Any]]) -> list[LogEntry]:
    """Entries from a peer, each one's commands decoded into a list of maps (else
    ``BadMessage``): an entry that cannot be read back must never reach a log,
    where it would sit undecodable and wedge the node."""
    entries = [LogEntry(int(epoch), int(index), packed=bytes(packed))
               for epoch, index, packed in raw]
    for entry in entries:
        _check_decodes(entry)
    return entries


def _check_decodes(entry: LogEntry) -> None:
    try:
        commands = entry.commands
    except Exception as e:
        raise BadMessage(f"entry {entry.index} does not decode ({e})") from None
    if not isinstance(commands, list) or not all(isinstance(c, dict) for c in commands):
        raise BadMessage(f"entry {entry.index} is not a list of commands")


@implementer(IBodyProducer)
class WholeBody:
    """A request body written in one piece as soon as it is asked for.

    treq sends bytes through Twisted's ``FileBodyProducer``, which writes from
    a cooperative task a reactor turn after the headers: every peer message
    went out as two TCP segments, and woke the peer twice.
    """

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:
        consumer.write(self._data)
        return succeed(None)

    def pauseProducing(self) -> None:
        """Nothing is left to pause: it was all written at once."""

    def resumeProducing(self) -> None:
        """Nothing is left to resume."""

    def stopProducing(self) -> None:
        """Nothing is left to stop."""


class PeerClient:
    """Calls to other nodes' peer API."""

    def __init__(self, reactor: Any, auth: PeerAuth, max_per_host: int = 16,
                 tls: IPolicyForHTTPS | None = None) -> None:
        self._reactor = reactor
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        # At least the fan-out concurrency: streams, reads and forwards at once.
        self.pool.maxPersistentPerHost = max_per_host
        self.pool.cachedConnectionTimeout = 60
        self._client = treq.client.HTTPClient(quiet_agent(reactor, self.pool, tls),
                                              data_to_body_producer=WholeBody)
        self._urls: dict[tuple[str, str], EncodedURL] = {}
        self._auth = auth

    def call(self, url: str, message: str, body: Any, timeout: float) -> Deferred[Any]:
        """POST ``body`` to ``url``'s peer endpoint ``message``; fire with the decoded answer."""
        path = f"{PEER_PREFIX}/{message}"
        data = encode(body)
        try:
            mac = self._auth.sign_request(path.encode(), data)
        except NoSecret as e:
            return fail(NotDelivered(str(e)))
        headers = Headers({b"Content-Type": [MSGPACK], AUTH_HEADER: [mac]})
        target = self._urls.get((url, message))
        if target is None:
            # Parsed once per peer and message: treq would parse the text every call.
            target = self._urls[(url, message)] = EncodedURL.from_text(f"{url}{path}")
        # A peer never redirects; following one would send a signed body elsewhere.
        d = self._client.post(target, data=data, headers=headers, allow_redirects=False)

        def read(response: Any) -> Deferred[Any]:
            content = response.content()

            def check(data: bytes) -> Any:
                proof = response.headers.getRawHeaders(AUTH_HEADER, [None])[0]
                if not self._auth.answer_ok(mac, data, proof):
                    # Not from a node that holds the secret: trust nothing in it, not
                    # even its status (a forged 503 would say "certainly not applied").
                    raise PeerError(502, f"an unauthenticated answer ({response.code})")
                try:
                    decoded = decode(data) if data else None
                except Exception:  # not msgpack: an error page from something else
                    decoded = data[:200]
                if response.code != 200:
                    raise PeerError(response.code, decoded)
                return decoded

            return content.addCallback(check)

        def not_delivered(failure: Any) -> Any:
            failure.trap(ConnectError, ConnectionRefusedError, DNSLookupError)
            raise NotDelivered(failure.getErrorMessage())

        d.addCallbacks(read, not_delivered)
        d.addTimeout(timeout, self._reactor)
        return d

    def close(self) -> Deferred[None]:
        return self.pool.closeCachedConnections()

"""KvdSite over a real HTTP channel: what twisted.web does with a request's body."""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.web.resource import Resource
from twisted.web.server import Request

from kvd.web.site import KvdSite


class ShowArguments(Resource):
    """Answers the names of the request's arguments."""

    isLeaf = True

    def render_POST(self, request: Request) -> bytes:
        return b",".join(sorted(request.args))


def test_a_form_encoded_body_is_not_read_as_query_arguments() -> None:
    """A body is JSON or msgpack, never a form: its fields must not reach the
    query arguments a route reads (and its Content-Type is not parsed)."""
    site = KvdSite(ShowArguments(), max_body_bytes=1024)
    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    body = b"consistency=stale&limit=1"
    channel.dataReceived(
        b"POST /?q=1 HTTP/1.1\r\nHost: kvd\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n" % len(body) + body)
    answer = transport.value()
    assert answer.startswith(b"HTTP/1.1 200"), answer
    assert answer.endswith(b"\r\n\r\nq"), answer
    channel.connectionLost(None)

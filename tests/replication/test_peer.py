"""The peer client's request body: written with its headers, not a turn later."""

from __future__ import annotations

from twisted.internet.testing import StringTransport

from kvd.replication.peer import WholeBody


def test_a_body_is_written_whole_when_it_is_asked_for() -> None:
    # FileBodyProducer (treq's default for bytes) would have written nothing yet:
    # it writes from a cooperative task, on a later reactor turn.
    consumer = StringTransport()
    body = WholeBody(b"\x81\xa1k\xa1v")
    assert body.length == 5
    done = body.startProducing(consumer)
    assert consumer.value() == b"\x81\xa1k\xa1v"
    assert done.called
    body.pauseProducing()
    body.resumeProducing()
    body.stopProducing()
    assert consumer.value() == b"\x81\xa1k\xa1v"

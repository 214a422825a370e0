"""
The schema of every peer message, checked before a handler sees it.

Senders build each message with its constructor below (``prepare``,
``snapshot_chunk`` ...), typed as a ``TypedDict``.

A peer message crosses a trust boundary: even with valid credentials (a bug,
a mixed-version cluster, a stolen secret) a malformed one must be a 400 with
nothing changed, never an exception half-way through a handler that has
already persisted a promise. ``check(name, message)`` returns the message
unchanged or raises ``BadMessage`` naming the first field that is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypedDict

#: Epochs, indexes and revisions are stored as unsigned 64-bit but must stay
#: below 2^63, so that "epoch + 1" never overflows an encoder (a forged
#: NEWEPOCH at 2^64 - 1 once made every later candidate fail).
MAX_INT = 2**63 - 2
MAX_ID = 128
MAX_URL = 512
MAX_ENTRIES = 4096
#: A PREPARE's entries add up to at most this many packed bytes, plus one entry.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: A leader's batch holds about this many bytes of commands, plus one command.
MAX_BATCH_BYTES = 4 * 1024 * 1024
#: A snapshot travels in chunks of at most this many bytes, one in flight.
SNAPSHOT_CHUNK_BYTES = 8 * 1024 * 1024
#: The largest snapshot a follower assembles in memory.
MAX_SNAPSHOT_BYTES = 64 * 1024**3
#: Room for a message's own fields around its entries or chunk.
ENVELOPE_BYTES = 1024 * 1024


def peer_body_limit(max_body_bytes: int) -> int:
    """The largest peer request body, for a cluster whose client bodies are bounded
    by ``max_body_bytes`` (give every node the same).

    A PREPARE: ``MAX_MESSAGE_BYTES`` of entries plus one entry, a batch of
    ``MAX_BATCH_BYTES`` plus one command (at most one client body); a forward:
    one client request's command; a snapshot chunk: ``SNAPSHOT_CHUNK_BYTES``.
    """
    one_entry = MAX_BATCH_BYTES + max_body_bytes + ENVELOPE_BYTES
    return max(MAX_MESSAGE_BYTES + one_entry, SNAPSHOT_CHUNK_BYTES) + ENVELOPE_BYTES


class BadMessage(Exception):
    """A peer message that does not match its schema."""


def _int(message: dict[str, Any], name: str, low: int = 0) -> None:
    value = message.get(name)
    if type(value) is not int or not low <= value <= MAX_INT:
        raise BadMessage(f"'{name}' must be an integer from {low} to {MAX_INT}")


def _str(message: dict[str, Any], name: str, limit: int = MAX_ID) -> None:
    value = message.get(name)
    if not isinstance(value, str) or not value or len(value) > limit:
        raise BadMessage(f"'{name}' must be a non-empty string of at most {limit} characters")


def _sender(message: dict[str, Any]) -> None:
    _int(message, "epoch")
    _str(message, "node_id")
    _str(message, "incarnation")
    _str(message, "url", MAX_URL)
    _str(message, "peer_url", MAX_URL)


def _entries(value: Any) -> None:
    if not isinstance(value, list) or len(value) > MAX_ENTRIES:
        raise BadMessage(f"'entries' must be a list of at most {MAX_ENTRIES} entries")
    previous = None
    for item in value:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[2], bytes)
                and all(type(x) is int and 0 <= x <= MAX_INT for x in item[:2])):
            raise BadMessage("each entry must be [epoch, index, packed commands]")
        if item[1] < 1 or (previous is not None and item[1] != previous + 1):
            raise BadMessage("entries must have contiguous indexes from 1 up")
        previous = item[1]


def _new_epoch(message: dict[str, Any]) -> None:
    _sender(message)


def _prepare(message: dict[str, Any]) -> None:
    _sender(message)
    prev = message.get("prev")
    if not (isinstance(prev, list) and len(prev) == 2
            and all(type(x) is int and 0 <= x <= MAX_INT for x in prev)):
        raise BadMessage("'prev' must be [epoch, index]")
    _entries(message.get("entries"))
    entries = message["entries"]
    if entries and entries[0][1] != prev[1] + 1:
        raise BadMessage("the first entry must follow 'prev'")
    epochs = [prev[0], *(e[0] for e in entries), message["epoch"]]
    if epochs != sorted(epochs):
        raise BadMessage("entry epochs must not decrease, from 'prev' up to the message's")
    _int(message, "commit")


def _snapshot(message: dict[str, Any]) -> None:
    _sender(message)
    _int(message, "snapshot_epoch")
    _int(message, "snapshot_index", 1)
    _int(message, "offset")
    _int(message, "total", 1)
    data = message.get("data")
    if not isinstance(data, bytes) or not 0 < len(data) <= SNAPSHOT_CHUNK_BYTES:
        raise BadMessage(f"'data' must be 1 to {SNAPSHOT_CHUNK_BYTES} bytes")
    if message["total"] > MAX_SNAPSHOT_BYTES:
        raise BadMessage(f"'total' must be at most {MAX_SNAPSHOT_BYTES}")
    if message["offset"] + len(data) > message["total"]:
        raise BadMessage("the chunk ends after 'total'")


def _fetch(message: dict[str, Any]) -> None:
    _int(message, "epoch")
    _str(message, "node_id")
    _str(message, "incarnation")
    _int(message, "from", 1)


def _empty(message: dict[str, Any]) -> None:
    pass


def _forward(message: dict[str, Any]) -> None:
    # The commands themselves are checked by kvd.commands.client_commands.
    if not isinstance(message.get("commands"), list):
        raise BadMessage("'commands' must be a list")


SCHEMAS: dict[str, Callable[[dict[str, Any]], None]] = {
    "newepoch": _new_epoch,
    "prepare": _prepare,
    "snapshot": _snapshot,
    "fetch": _fetch,
    "readindex": _empty,
    "forward": _forward,
    "testing/zookeeper-session": _empty,
}


def check(name: str, message: Any) -> dict[str, Any]:
    """``message`` if it is a well-formed ``name`` message; else ``BadMessage``."""
    if not isinstance(message, dict):
        raise BadMessage("a peer message must be a map")
    SCHEMAS[name](message)
    return message


# The messages, as their senders build them: one constructor per message.


class Sender(TypedDict):
    """The fields every message of a leader or candidate carries: who sends it, for
    which epoch, from which disk, and where to reach it."""

    epoch: int
    node_id: str
    url: str
    peer_url: str
    incarnation: str


class NewEpoch(Sender):
    """A candidate asks for a promise of ``epoch`` and each voter's log position."""


class Prepare(Sender):
    """Entries after ``prev`` ([epoch, index]) and the leader's commit index."""

    prev: list[int]
    entries: list[list[Any]]
    commit: int


class SnapshotChunk(Sender):
    """``data`` at ``offset`` of a snapshot of ``total`` bytes at (epoch, index)."""

    snapshot_epoch: int
    snapshot_index: int
    offset: int
    total: int
    data: bytes


#: A candidate copies the log of the voter with the most advanced one, from ``from`` on.
Fetch = TypedDict("Fetch", {"epoch": int, "node_id": str, "incarnation": str, "from": int})


class Forward(TypedDict):
    """A follower hands client commands to the leader."""

    commands: list[Any]


def sender(epoch: int, node_id: str, url: str, peer_url: str, incarnation: str) -> Sender:
    return {"epoch": epoch, "node_id": node_id, "url": url, "peer_url": peer_url,
            "incarnation": incarnation}


def new_epoch(by: Sender) -> NewEpoch:
    return {**by}


#: A follower's refusal of a sender its log does not name as a voter (rule 4).
NOT_A_VOTER = "sender is not a voter"


def prepare(by: Sender, prev: tuple[int, int], entries: list[list[Any]],
            commit: int) -> Prepare:
    return {**by, "prev": list(prev), "entries": entries, "commit": commit}


def snapshot_chunk(by: Sender, snapshot_epoch: int, snapshot_index: int, offset: int,
                   total: int, data: bytes) -> SnapshotChunk:
    return {**by, "snapshot_epoch": snapshot_epoch, "snapshot_index": snapshot_index,
            "offset": offset, "total": total, "data": data}


def fetch(epoch: int, node_id: str, incarnation: str, first: int) -> Fetch:
    return {"epoch": epoch, "node_id": node_id, "incarnation": incarnation, "from": first}


def forward(commands: list[Any]) -> Forward:
    return {"commands": commands}

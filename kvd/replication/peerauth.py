"""
Authentication of peer messages with the cluster secret.

Each request carries ``X-Kvd-Peer-Auth: <nonce>.<hex HMAC-SHA256>``, the MAC
over a fresh random nonce, its path and its body; each answer carries one
over the request's whole header and the answer's body. So a request cannot
be forged or altered, and an answer is good for its own request only: a
recorded answer (an old read index, a heartbeat's "ok") replayed to a later
request fails its check. A MAC, not a bearer token, because peer traffic may run without
TLS: a token would cross the wire in the clear, a MAC never reveals the
secret. A replayed *request* is accepted: it is one the node already
handled, and every peer message is idempotent or fenced (an old epoch is
refused, a PREPARE's entries are already held, a forward's request id is in
the idempotency window).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets

HEADER = b"X-Kvd-Peer-Auth"
#: Bytes of a generated secret.
SECRET_BYTES = 32


class NoSecret(Exception):
    """The cluster secret is not known yet (read from ZooKeeper at start)."""


def generate_secret() -> bytes:
    return secrets.token_hex(SECRET_BYTES).encode()


def read_secret_file(path: str) -> bytes:
    """The secret in ``path`` (surrounding whitespace ignored); at least 16 bytes."""
    with open(path, "rb") as f:
        secret = f.read().strip()
    if len(secret) < 16:
        raise ValueError(f"{path}: a peer secret must be at least 16 bytes")
    mode = os.stat(path).st_mode
    if mode & 0o077:
        raise ValueError(f"{path}: readable by others (mode {mode & 0o777:o}); chmod 600 it")
    return secret


class PeerAuth:
    """The cluster secret, and the MACs made and checked with it."""

    def __init__(self, secret: bytes | None = None) -> None:
        self.secret = secret

    def _mac(self, *parts: bytes) -> bytes:
        if self.secret is None:
            raise NoSecret("the cluster secret is not known yet")
        mac = hmac.new(self.secret, digestmod=hashlib.sha256)
        for part in parts:
            mac.update(len(part).to_bytes(8, "big"))
            mac.update(part)
        return mac.hexdigest().encode()

    def sign_request(self, path: bytes, body: bytes, nonce: bytes | None = None) -> bytes:
        """The request's header value: a nonce (fresh unless given) and the MAC."""
        nonce = secrets.token_hex(8).encode() if nonce is None else nonce
        return nonce + b"." + self._mac(b"request", nonce, path, body)

    def sign_answer(self, request_mac: bytes, body: bytes) -> bytes:
        return self._mac(b"answer", request_mac, body)

    def request_ok(self, path: bytes, body: bytes, supplied: bytes | None) -> bool:
        """Does ``supplied`` prove the request? Constant time in the MAC."""
        if supplied is None or self.secret is None or supplied.count(b".") != 1:
            return False
        nonce = supplied.split(b".", 1)[0]
        return hmac.compare_digest(self.sign_request(path, body, nonce), supplied)

    def answer_ok(self, request_mac: bytes, body: bytes, supplied: bytes | None) -> bool:
        if supplied is None or self.secret is None:
            return False
        return hmac.compare_digest(self.sign_answer(request_mac, body), supplied)

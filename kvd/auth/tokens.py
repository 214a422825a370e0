"""
Client tokens: signed with a key derived from the cluster secret, expiring.

Any node validates a token any node issued, without asking anyone: the
token names the user and the auth revision that last set the user's
password (so a new password or a deleted user voids it) and its expiry in
wall-clock seconds (a token crosses nodes, so its clock must too; keep the
nodes' clocks in step, as with any bearer token).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable

PREFIX = "kvd1"
#: Default lifetime of a token, seconds (``--token-ttl``).
DEFAULT_TTL = 300.0


class NoKey(Exception):
    """The cluster secret is not known yet, so tokens can be neither made nor checked."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """Issues and checks ``kvd1.<payload>.<mac>`` tokens."""

    def __init__(self, secret: Callable[[], bytes | None], ttl: float = DEFAULT_TTL,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self.ttl = ttl
        self._wall_clock = wall_clock

    def _key(self) -> bytes:
        secret = self._secret()
        if secret is None:
            raise NoKey("the cluster secret is not known yet")
        # A key of its own: a token's MAC must never double as a peer message's.
        return hmac.new(secret, b"kvd client token key", hashlib.sha256).digest()

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key(), payload.encode("ascii"), hashlib.sha256).digest())

    def issue(self, name: str, stamp: int) -> str:
        expires = int(self._wall_clock() + self.ttl)
        payload = _b64(json.dumps([name, stamp, expires], separators=(",", ":")).encode())
        return f"{PREFIX}.{payload}.{self._mac(payload)}"

    def check(self, token: str) -> tuple[str, int] | None:
        """The (user, stamp) a valid, unexpired token names; None for any other."""
        if not token.isascii():
            return None
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != PREFIX:
            return None
        payload, mac = parts[1], parts[2]
        if not hmac.compare_digest(self._mac(payload).encode(), mac.encode("ascii")):
            return None
        try:
            name, stamp, expires = json.loads(_unb64(payload))
        except (ValueError, TypeError):
            return None
        if not (isinstance(name, str) and type(stamp) is int and type(expires) is int):
            return None
        if expires <= self._wall_clock():
            return None
        return name, stamp

"""
Password hashes: scrypt (``hashlib.scrypt``), salted, parameters kept in the hash.

Hashing costs tens of milliseconds of CPU by design, so callers run these
functions in a thread, never on the reactor.
"""

from __future__ import annotations

import hashlib
import hmac
import os

#: log2(N), r, p: about 16 MiB and 50 ms per hash, as the scrypt paper advises.
LOG2_N, BLOCK, PARALLEL = 14, 8, 1
SALT_BYTES = 16
KEY_BYTES = 32
MAX_PASSWORD = 1024


def _derive(password: str, salt: bytes, log2_n: int, block: int, parallel: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=1 << log2_n, r=block,
                          p=parallel, dklen=KEY_BYTES, maxmem=64 * 1024 * 1024)


def hash_password(password: str) -> bytes:
    """``bytes([log2 N, r, p]) + salt + key``, to keep in the replicated state."""
    salt = os.urandom(SALT_BYTES)
    return bytes([LOG2_N, BLOCK, PARALLEL]) + salt + _derive(
        password, salt, LOG2_N, BLOCK, PARALLEL)


def password_matches(stored: bytes, password: str) -> bool:
    """Does ``password`` give ``stored``? False for a hash this module did not make."""
    if len(stored) != 3 + SALT_BYTES + KEY_BYTES:
        return False
    log2_n, block, parallel = stored[0], stored[1], stored[2]
    if not (10 <= log2_n <= 20 and 1 <= block <= 16 and 1 <= parallel <= 4):
        return False
    salt, key = stored[3:3 + SALT_BYTES], stored[3 + SALT_BYTES:]
    return hmac.compare_digest(_derive(password, salt, log2_n, block, parallel), key)

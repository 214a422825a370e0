"""Password hashes, tokens and the login limiter: each node's own tools."""

from __future__ import annotations

from kvd.auth.limiter import LoginLimiter
from kvd.auth.passwords import hash_password, password_matches
from kvd.auth.tokens import TokenSigner


def test_a_password_matches_its_hash_only() -> None:
    stored = hash_password("s3cret")
    assert password_matches(stored, "s3cret")
    assert not password_matches(stored, "s3creT")
    assert hash_password("s3cret") != stored  # salted
    assert not password_matches(b"short", "s3cret")


class Wall:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_names_its_user_until_it_expires() -> None:
    wall = Wall()
    signer = TokenSigner(lambda: b"a cluster secret of some length", ttl=300, wall_clock=wall)
    token = signer.issue("ann", 7)
    assert signer.check(token) == ("ann", 7)
    wall.now += 299
    assert signer.check(token) == ("ann", 7)
    wall.now += 2
    assert signer.check(token) is None


def test_a_token_from_another_secret_or_altered_is_refused() -> None:
    signer = TokenSigner(lambda: b"a cluster secret of some length")
    other = TokenSigner(lambda: b"another cluster's secret, long")
    token = signer.issue("ann", 1)
    assert other.check(token) is None
    head, payload, mac = token.split(".")
    forged = other.issue("root", 1).split(".")[1]
    assert signer.check(f"{head}.{forged}.{mac}") is None
    assert signer.check(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    for junk in ("", "kvd1", "kvd1..", "x.y.z", "kvd1.\u00e9.x", "kvd1.!!.!!"):
        assert signer.check(junk) is None


def test_failed_logins_lock_a_user_and_source_for_the_window() -> None:
    clock = Wall()
    limiter = LoginLimiter(clock, attempts=3, window=60)
    for _ in range(3):
        assert limiter.retry_after("ann", "10.0.0.1") is None
        limiter.failed("ann", "10.0.0.1")
    assert limiter.retry_after("ann", "10.0.0.1") == 60
    assert limiter.retry_after("ann", "10.0.0.2") is None
    assert limiter.retry_after("bob", "10.0.0.1") is None
    clock.now += 60
    assert limiter.retry_after("ann", "10.0.0.1") is None
    limiter.failed("ann", "10.0.0.1")
    limiter.succeeded("ann", "10.0.0.1")
    assert limiter._failures == {}

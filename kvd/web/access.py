"""
Who is asking, and may they: the checks client routes make once auth is on.

A request names its user by a token (``Authorization: Bearer T``, or the
bare token as etcd's gateway takes it). Without auth enabled every request
is anonymous and allowed, as with etcd.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest

from kvd import errors
from kvd.auth.state import AuthState
from kvd.auth.tokens import NoKey, TokenSigner


class ClientAccess:
    """Tokens in, a user name (or None: auth is off) out; 401 and 403 refusals."""

    def __init__(self, tokens: TokenSigner, metrics_auth: bool = False) -> None:
        self.tokens = tokens
        self.metrics_auth = metrics_auth

    def caller(self, request: IRequest, auth: AuthState) -> str | None:
        """The user a request speaks for; None when auth is off; else Unauthorized."""
        if not auth.enabled:
            return None
        header = request.getHeader(b"authorization")
        if not header:
            raise errors.Unauthorized("auth is enabled: log in with POST "
                                      "/api/v1/auth/authenticate and send the token")
        token = header[7:] if header[:7].lower() == b"bearer " else header
        try:
            checked = self.tokens.check(token.strip().decode("latin-1"))
        except NoKey:
            raise errors.NotReady("the cluster secret is not known yet") from None
        if checked is None or auth.stamp(checked[0]) != checked[1]:
            raise errors.Unauthorized("the token is invalid or expired; log in again")
        return checked[0]

    @staticmethod
    def permit_keys(auth: AuthState, user: str | None, access: str, keys: list[bytes]) -> None:
        if user is None:
            return
        for key in keys:
            if not auth.permits_key(user, access, key):
                raise errors.PermissionDenied(
                    f"user {user} may not {access} key {key.decode('utf-8', 'replace')}")

    @staticmethod
    def permit_range(auth: AuthState, user: str | None, access: str, start: bytes,
                     end: bytes | None) -> None:
        if user is not None and not auth.permits(user, access, start, end):
            shown = "the end" if end is None else end.decode("utf-8", "replace")
            raise errors.PermissionDenied(
                f"user {user} may not {access} every key from "
                f"{start.decode('utf-8', 'replace')!r} to {shown}")

    @staticmethod
    def permit_admin(auth: AuthState, user: str | None) -> None:
        if user is not None and not auth.is_root(user):
            raise errors.PermissionDenied(f"user {user} does not hold the root role")

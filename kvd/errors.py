"""
The errors a client can get, each with its HTTP status and a stable code.

Everything the API refuses is one of these; anything else reaching the API
layer is a bug, logged with its traceback and answered as a plain 500 body
without one.
"""

from __future__ import annotations

from typing import Any


class KvdError(Exception):
    """An error with a status, a code and a message for the client."""

    status = 500
    code = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def as_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.details}}


class BadRequest(KvdError):
    status = 400
    code = "bad_request"


class Unauthorized(KvdError):
    status = 401
    code = "unauthorized"


class PermissionDenied(KvdError):
    status = 403
    code = "permission_denied"


class TooLarge(KvdError):
    status = 413
    code = "too_large"


class NotFound(KvdError):
    status = 404
    code = "not_found"


class KeyNotFound(KvdError):
    status = 404
    code = "key_not_found"


class MethodNotAllowed(KvdError):
    status = 405
    code = "method_not_allowed"


class TooMany(KvdError):
    status = 429
    code = "too_many_requests"


class Conflict(KvdError):
    status = 409
    code = "conflict"


class Gone(KvdError):
    status = 410
    code = "compacted"


class NotReady(KvdError):
    """The request was certainly not applied and never will be."""

    status = 503
    code = "unavailable"


class OutcomeUnknown(KvdError):
    """The write was proposed but its fate is not known: it may still commit."""

    status = 504
    code = "outcome_unknown"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message, outcome="unknown", **details)

"""
The errors the server answers with (``ApiError``), each with its HTTP status
and a stable code.

Everything the API refuses is one of these; anything else reaching the API
layer is a bug, logged with its traceback and answered as a plain 500 body
without one. The Python client has its own ``kvd.client.KvdError`` and
``kvd.client.OutcomeUnknown`` for what a caller receives; the names differ so
that code importing both sides never mixes them up.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """An error with a status, a code and a message for the client."""

    status = 500
    code = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def as_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.details}}


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class PermissionDenied(ApiError):
    status = 403
    code = "permission_denied"


class TooLarge(ApiError):
    status = 413
    code = "too_large"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class KeyNotFound(ApiError):
    status = 404
    code = "key_not_found"


class MethodNotAllowed(ApiError):
    status = 405
    code = "method_not_allowed"


class TooMany(ApiError):
    status = 429
    code = "too_many_requests"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class Gone(ApiError):
    status = 410
    code = "compacted"


class NotReady(ApiError):
    """The request was certainly not applied and never will be."""

    status = 503
    code = "unavailable"


class InDoubt(ApiError):
    """The write was proposed but its fate is not known: it may still commit
    (a transaction "in doubt", in two-phase-commit terms). Answered as a 504."""

    status = 504
    code = "outcome_unknown"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message, outcome="unknown", **details)

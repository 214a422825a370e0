"""Checks of JSON and query values shared by the client API's routes."""

from __future__ import annotations

from typing import Any

from kvd import errors

#: Revisions, versions and counts are stored as signed 64-bit integers.
MAX_INTEGER = 2**63 - 1


def integer(value: Any, field: str, minimum: int = 0, maximum: int = MAX_INTEGER) -> int:
    """A JSON integer in range; ``5.0`` counts, as JSON Schema says, ``true`` does not."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise errors.BadRequest(f"'{field}' must be an integer from {minimum} to {maximum}")
    return value


def optional_integer(value: Any, field: str, minimum: int = 0,
                     maximum: int = MAX_INTEGER) -> int | None:
    return None if value is None else integer(value, field, minimum, maximum)

"""Decoding request bodies and query values, with errors that name the field."""

from __future__ import annotations

import re
from datetime import datetime
from typing import TypeVar

import msgspec

from streams.errors import BadRequest

T = TypeVar("T")

_PATH = re.compile(r" - at `\$\.?([^`]*)`$")
_NAMED = re.compile(r"^Object (?:missing required|contains unknown) field `([^`]*)`")


def decode_body(raw: bytes, type: type[T]) -> T:
    if not raw:
        raise BadRequest("request body is empty; send a JSON object")
    try:
        # JSON is UTF-8. msgspec does not check the bytes it keeps as `Raw`, and on strings it
        # raises UnicodeDecodeError, which is no DecodeError: both used to end as a 500.
        raw.decode()
    except UnicodeDecodeError as error:
        raise BadRequest(f"request body is not UTF-8 (invalid byte at {error.start})") from None
    try:
        return msgspec.json.decode(raw, type=type)
    except msgspec.DecodeError as error:
        raise refused(error) from None


def refused(error: msgspec.DecodeError) -> BadRequest:
    """The 400 for JSON msgspec refused: a `ValidationError` names the field at fault."""
    if isinstance(error, msgspec.ValidationError):
        return BadRequest(str(error), field=_field_of(str(error)))
    return BadRequest(f"malformed JSON: {error}")


def _field_of(message: str) -> str | None:
    """The field a msgspec message is about: "field `c` - at `$.a.b`" names `a.b.c`."""
    path, named = _PATH.search(message), _NAMED.match(message)
    parts = [match.group(1) for match in (path, named) if match and match.group(1)]
    return ".".join(parts) or None


# What `parse_time` accepts, for the OpenAPI document of a query parameter.
TIME = {"format": "date-time"}


def parse_time(text: str, field: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(
            f"{field} must be an ISO 8601 time, e.g. 2026-11-25T08:00:00Z", field=field
        ) from None
    if value.tzinfo is None:
        raise BadRequest(f"{field} needs a timezone (e.g. a trailing Z)", field=field)
    return value

"""Decoding JSON request bodies into typed structs, with errors that name the field."""

from __future__ import annotations

import re
from typing import TypeVar

import msgspec

from streams.errors import BadRequest

T = TypeVar("T")

_PATH = re.compile(r"at `\$\.?([^`]*)`")


def decode_body(raw: bytes, type: type[T]) -> T:
    if not raw:
        raise BadRequest("request body is empty; send a JSON object")
    try:
        return msgspec.json.decode(raw, type=type)
    except msgspec.ValidationError as error:
        match = _PATH.search(str(error))
        field = match.group(1) if match and match.group(1) else None
        if field is None and "Object missing required field" in str(error):
            field = str(error).split("`")[1]
        raise BadRequest(str(error), field=field) from None
    except msgspec.DecodeError as error:
        raise BadRequest(f"malformed JSON: {error}") from None

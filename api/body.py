"""Decoding request bodies and query values, with errors that name the field.

Every JSON body and action message goes through `decode_json`, which holds the limits of
`streams.limits` for all of them: nesting depth and no NUL in any string.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any, TypeVar, overload

import msgspec
import msgspec.inspect as schema

from streams.errors import BadRequest
from streams.limits import MAX_DEPTH, NUL, utc_problem

T = TypeVar("T")

_PATH = re.compile(r" - at `\$\.?([^`]*)`$")
# msgspec's messages for a field it names, and ours from `__post_init__` ("Field `x` ...").
_NAMED = re.compile(r"^(?:Object (?:missing required|contains unknown) field|Field) `([^`]*)`")
# The `\u0000` escape (NUL) in a JSON string: after an even run of backslashes.
_NUL_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},:]')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_QUOTE_OR_BRACKET = bytes(b for b in range(256) if b not in b'"[]{}')
_ONE_KIND = bytes.maketrans(b"{}", b"[]")
_SCANNED = 1024 * 1024


@overload
def decode_body(raw: bytes, type: type[T]) -> T: ...


@overload
def decode_body(raw: bytes, type: Any) -> Any: ...  # a union: `A | list[A]`


def decode_body(raw: bytes, type: Any) -> Any:
    if not raw:
        raise BadRequest("request body is empty; send a JSON object")
    try:
        # JSON is UTF-8. msgspec does not check the bytes it keeps as `Raw`, and on strings it
        # raises UnicodeDecodeError, which is no DecodeError: both used to end as a 500.
        raw.decode()
    except UnicodeDecodeError as error:
        raise BadRequest(f"request body is not UTF-8 (invalid byte at {error.start})") from None
    return decode_json(raw, type)


def decode_json(raw: bytes, type: Any) -> Any:
    """`raw` decoded as `type`, within the limits; a BadRequest naming the field otherwise."""
    try:
        value = _decoder(type).decode(raw)
    except msgspec.DecodeError as error:
        raise refused(error) from None
    except RecursionError:  # about 1,000 deep: msgspec's own limit
        raise _too_deep(raw, type) from None
    # Escaped backslashes out of the way, every backslash left starts an escape of one string.
    unescaped = raw.replace(b"\\\\", b"")
    if b"\\u0000" in unescaped:
        # PostgreSQL refuses NUL in text where SQLite stores it: refused before either.
        nul = _NUL_ESCAPE.search(raw)
        field = None if nul is None else _field_at(raw, type, offset=nul.end())
        raise BadRequest(f"{field or 'text'} must not contain NUL (\\u0000)", field=field)
    if _deeper_than(unescaped, MAX_DEPTH):
        raise _too_deep(raw, type)
    return value


# One decoder per body type: `msgspec.json.decode(raw, type=...)` works out a union's decoding
# anew on every call (2.6 µs for a publish body, where decoding it takes 0.2).
_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def _decoder(type: Any) -> msgspec.json.Decoder[Any]:
    decoder = _decoders.get(type)
    if decoder is None:
        decoder = _decoders[type] = msgspec.json.Decoder(type)
    return decoder


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
    problem = utc_problem(value)
    if problem is not None:
        raise BadRequest(f"{field} {problem}", field=field)
    return value


def check_utc_field(value: datetime | None, field: str) -> None:
    """In a body struct's `__post_init__`: a time whose UTC form is out of range is refused
    naming `field` (msgspec adds where in the body)."""
    problem = None if value is None else utc_problem(value)
    if problem is not None:
        raise ValueError(f"Field `{field}` {problem}")


def text_param(value: str | None, field: str) -> str | None:
    """A query or header value that reaches the database: no NUL, as in JSON bodies."""
    if value is not None and NUL in value:
        raise BadRequest(f"{field} must not contain NUL (\\u0000)", field=field)
    return value


# -- depth -----------------------------------------------------------------------------------


def _deeper_than(unescaped: bytes, limit: int) -> bool:
    """Whether well-formed JSON nests objects and arrays more than `limit` deep; `unescaped`
    is its text without escaped backslashes. Bytes at a time, never a loop per character: a
    bulk ingest body is megabytes."""
    brackets = unescaped.translate(_ONE_KIND, _NOT_BRACKET)
    if brackets.count(b"[") <= limit:  # brackets inside strings counted too: an upper bound
        return False
    # The quotes and brackets alone, in order (escaped quotes are no string's ends), `{}` as
    # `[]`: a list of events shrinks tenfold. A string with no bracket in it is then `""`, so
    # when removing those leaves no quote, what is left is the brackets outside strings; a
    # bracket inside a string leaves a quote, and the strings are taken out one by one.
    skeleton = unescaped.replace(b'\\"', b"").translate(_ONE_KIND, _NOT_QUOTE_OR_BRACKET)
    brackets = skeleton.replace(b'""', b"")
    if b'"' in brackets:
        brackets = b"".join(skeleton.split(b'"')[::2])
    for _ in range(limit):  # each pass removes the innermost level
        brackets = brackets.replace(b"[]", b"")
        if not brackets:
            return False
    return True


def _too_deep(raw: bytes, type: Any) -> BadRequest:
    field = _field_at(raw, type, depth=MAX_DEPTH)
    return BadRequest(
        f"{field or 'the body'} is nested too deep: JSON may nest objects and arrays at most "
        f"{MAX_DEPTH} levels",
        field=field,
    )


# -- naming the field of a refusal ------------------------------------------------------------


def _field_at(
    raw: bytes, type: Any, *, offset: int | None = None, depth: int | None = None
) -> str | None:
    """The field of `type` that holds byte `offset` of `raw`, or where nesting first passes
    `depth`: the path as far as the schema describes it (`events[2].data`, not the keys the
    producer chose inside `data`)."""
    info: schema.Type | None = schema.type_info(type)
    parts: list[str | int] = []
    for part in _path_at(raw, offset, depth):
        if info is None or not _described(info):  # None: a field the schema does not know
            break
        parts.append(part)
        info = _member(info, part)
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text or None


def _path_at(raw: bytes, offset: int | None, depth: int | None) -> list[str | int]:
    """The keys and indices leading to byte `offset`, or to the first container past `depth`.
    Only on a refusal: a plain scan, which needs `raw` well-formed up to that point. It reads
    at most `_SCANNED` bytes, so that a refused body costs about what a decoded one does; past
    that, the path is not known ([])."""
    path: list[str | int] = []  # per open container: its current key or index
    arrays: list[bool] = []
    key_next = False
    for match in _TOKEN.finditer(raw, 0, _SCANNED):
        token = match.group()
        if offset is not None and match.end() >= offset:
            return path
        if token in (b"{", b"["):
            if depth is not None and len(arrays) >= depth:
                return path
            arrays.append(token == b"[")
            path.append(0 if token == b"[" else "")
            key_next = token == b"{"
        elif token in (b"}", b"]"):
            if arrays:
                arrays.pop()
                path.pop()
            key_next = False
        elif token == b",":
            if arrays and arrays[-1]:
                path[-1] = int(path[-1]) + 1
            else:
                key_next = True
        elif token == b":":
            key_next = False
        elif key_next and path:
            try:
                path[-1] = json.loads(token)
            except ValueError:
                path[-1] = "?"
    return []


def _unwrap(info: schema.Type) -> schema.Type:
    while isinstance(info, schema.Metadata):
        info = info.type
    return info


def _described(info: schema.Type) -> bool:
    info = _unwrap(info)
    if isinstance(info, schema.UnionType):
        return any(_described(member) for member in info.types)
    return isinstance(info, (schema.StructType, schema.ListType, schema.TupleType))


def _member(info: schema.Type, part: str | int) -> schema.Type | None:
    info = _unwrap(info)
    if isinstance(info, schema.UnionType):
        members = (_member(member, part) for member in info.types)
        return next((member for member in members if member is not None), None)
    if isinstance(info, schema.StructType) and isinstance(part, str):
        return next((field.type for field in info.fields if field.encode_name == part), None)
    if isinstance(info, schema.ListType) and isinstance(part, int):
        return info.item_type
    return None

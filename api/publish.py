"""`POST /v1/publish`: services put events on channels, one per request or a list at once.

Two ways in, one behaviour. The application routes `POST /v1/publish` to `serve`, a lean ASGI
handler, before Litestar (api/app.py), as it does the stream: measured at saturation on one
core (docs/benchmarks.md, "The publish path"), a quarter of the core went to Litestar's
per-request machinery (middleware, dependency resolution, signature parsing, the response
object), more than publishing the event to Redis. `serve` does the same steps in the same order
with the same functions: the CSRF rules of cookie-authenticated requests (api/csrf.py), the
caller (api/auth.py) and its role, the body limit, decoding and validation (`accept`), the
publish rate, and problem responses through `api.problems.render`; the request wrapper
(api/requests.py) gives it its request id, access line and HTTP metrics like any request.
Litestar keeps the route (`route`): it is what the OpenAPI document describes and what the CSRF
tests walk, and it serves the paths only Litestar matches (`/v1/publish/`), through `accept` too.

A list publishes every event or none: each item is checked (a refusal names it, `[3].type`)
and the publish rate admits the whole count before anything reaches the engine, which then
takes the list in one round trip (`Engine.publish_many`).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, cast

import msgspec
from litestar import Request, Response, post
from litestar.connection import ASGIConnection
from litestar.enums import MediaType
from litestar.handlers import HTTPRouteHandler
from litestar.types import HTTPScope, Receive, Send

from api.body import decode_body
from api.csrf import check_content_type, check_origin, cookie_authenticated
from api.dependencies import require_role
from api.problems import render, send_problem
from api.requests import response_start
from api.runtime import Runtime
from api.settings import Settings
from api.transport import send_response
from streams.access import Principal
from streams.channels import CHANNEL, require_channel
from streams.cursor import encode_cursor
from streams.engine import Publication
from streams.errors import BadRequest, PayloadTooLarge, TooManyRequests
from streams.event import EVENT_TYPE, MAX_EVENT_TYPE
from streams.frames import CONTROL_TYPES

PATH = "/v1/publish"
# Sinal's own frames, and `message`: what `EventSource` calls a frame with no `event:` line.
RESERVED_TYPES = CONTROL_TYPES | {"message"}
# Events one request may carry, and the body a list may take (a single event's body may be
# as large as its payload allows, `body_limit`, if that is larger).
MAX_BATCH = 1000
MAX_BATCH_BYTES = 1024 * 1024
# Room for the envelope around the largest payload a publish may carry.
BODY_OVERHEAD = 16 * 1024
_JSON_HEADERS = (b"content-type", b"application/json")
_WHITESPACE = b" \t\r\n"
_encode = msgspec.json.Encoder().encode


class PublishRequest(msgspec.Struct, forbid_unknown_fields=True):
    # The checks below the decoding (better messages) are stated for the OpenAPI document.
    channel: Annotated[str, msgspec.Meta(extra_json_schema={"pattern": f"^({CHANNEL})$"})]
    type: Annotated[
        str,
        msgspec.Meta(
            extra_json_schema={
                "pattern": EVENT_TYPE.pattern,
                "maxLength": MAX_EVENT_TYPE,
                "not": {"enum": sorted(RESERVED_TYPES)},
            }
        ),
    ]
    data: msgspec.Raw = msgspec.field(default_factory=lambda: msgspec.Raw(b"null"))


# What the body is decoded as; the list's bounds are checked after, with messages of our own.
_Body = PublishRequest | list[PublishRequest]
# What the OpenAPI document says it is.
PublishBody = (
    PublishRequest
    | Annotated[list[PublishRequest], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]
)


class PublishResponse(msgspec.Struct):
    cursor: str
    ts: str


class BatchResponse(msgspec.Struct):
    """The answer to a list: each event's cursor and time, in the order published."""

    cursors: list[str]
    ts: list[str]


def body_limit(settings: Settings) -> int:
    """The largest body of one event."""
    return settings.max_payload_bytes + BODY_OVERHEAD


def batch_body_limit(settings: Settings) -> int:
    """The largest body of a list of events."""
    return max(MAX_BATCH_BYTES, body_limit(settings))


# -- the behaviour, whichever way the request came ---------------------------------------------


async def accept(runtime: Runtime, principal: Principal, raw: bytes) -> bytes:
    """Check the body, admit its events at the publish rate, publish them: the answer's JSON.
    The caller's role was checked, and the body read within `batch_body_limit`."""
    settings = runtime.settings
    first = raw[:1]
    if first and first in _WHITESPACE:
        first = raw.lstrip()[:1]
    if first == b"{" and len(raw) > body_limit(settings):
        raise PayloadTooLarge(
            f"the body is over {body_limit(settings)} bytes, the most one event may take "
            f"(its data: {settings.max_payload_bytes} bytes)"
        )
    body: PublishRequest | list[PublishRequest] = decode_body(raw, _Body)
    if isinstance(body, PublishRequest):
        item = checked(body, settings.max_payload_bytes)
        admit(runtime, principal, 1)
        event = await runtime.engine.publish(item.channel, item.type, item.data_json)
        return _encode(PublishResponse(encode_cursor([event.segment]), event.ts))
    if not body:
        raise BadRequest(
            f"the list is empty: send an event object, or a list of 1 to {MAX_BATCH} of them"
        )
    if len(body) > MAX_BATCH:
        raise PayloadTooLarge(f"the list holds {len(body)} events; at most {MAX_BATCH} a request")
    items = [checked(item, settings.max_payload_bytes, f"[{i}].") for i, item in enumerate(body)]
    admit(runtime, principal, len(items))
    events = await runtime.engine.publish_many(items)
    return _encode(
        BatchResponse([encode_cursor([e.segment]) for e in events], [e.ts for e in events])
    )


def checked(item: PublishRequest, max_payload: int, prefix: str = "") -> Publication:
    """The event `item` asks for; a refusal names its field after `prefix` (`[3].`)."""
    channel = require_channel(item.channel, f"{prefix}channel")
    check_event_type(item.type, f"{prefix}type")
    if len(item.data) > max_payload:
        raise PayloadTooLarge(
            f"{prefix}data is {len(item.data)} bytes; the limit is {max_payload}",
            field=f"{prefix}data",
        )
    # Whitespace between tokens goes: a raw line break in a pretty-printed payload would split
    # the SSE `data:` line. Only whitespace: the values stay byte for byte as published.
    return Publication(channel, item.type, msgspec.json.format(bytes(item.data), indent=-1))


def check_event_type(type: str, field: str = "type") -> None:
    # fullmatch: with `match`, the pattern's `$` let a trailing line break through.
    if len(type) > MAX_EVENT_TYPE or not EVENT_TYPE.fullmatch(type) or type in RESERVED_TYPES:
        raise BadRequest(
            f"{field} must be lowercase words separated by dots (e.g. 'notification.created'), "
            f"at most {MAX_EVENT_TYPE} characters, and not one of {sorted(RESERVED_TYPES)}",
            field=field,
        )


def admit(runtime: Runtime, principal: Principal, events: int) -> None:
    """The publish rate, a runtime limit per service principal: a list counts each event."""
    wait = runtime.admission.publish(principal.sub, events)
    if wait is not None:
        carried = f"; this request carries {events} events" if events > 1 else ""
        raise TooManyRequests(
            f"over this service's publish rate ({runtime.admission.limits.publish_rate:g} "
            f"events per second){carried}; retry after the time in Retry-After",
            retry_after_s=math.ceil(wait),
        )


# -- Litestar's route ----------------------------------------------------------------------------


def route(settings: Settings) -> HTTPRouteHandler:
    """The route in Litestar's table, with the body limit of a list (`accept` holds a single
    event to its own)."""
    return post(
        PATH,
        summary="Publish an event, or a list of events (service role)",
        tags=["streams"],
        status_code=201,
        request_max_body_size=batch_body_limit(settings),
    )(publish)


async def publish(
    request: Request[Any, Any, Any], runtime: Runtime, principal: Principal
) -> Response[bytes]:
    require_role(principal, "service")
    answer = await accept(runtime, principal, await request.body())
    return Response(answer, status_code=201, media_type=MediaType.JSON)


# -- the lean handler ----------------------------------------------------------------------------


class ClientGone(Exception):
    """The client left before its body arrived: there is nobody to answer."""


async def serve(scope: HTTPScope, receive: Receive, send: Send, runtime: Runtime) -> None:
    """`POST /v1/publish` as Litestar's route and middleware would serve it (module doc)."""
    try:
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:  # ASGI servers send lowercase names
            headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
        # Parsed as Litestar parses them, and only when there are any.
        cookies = ASGIConnection(scope).cookies if "cookie" in headers else {}
        if cookie_authenticated(headers, cookies):
            check_origin(headers, scope["scheme"], runtime.settings.allowed_origins)
            check_content_type(headers)
        principal = runtime.auth.authenticate(headers, cookies)
        require_role(principal, "service")
        raw = await read_body(receive, headers, batch_body_limit(runtime.settings))
        answer = await accept(runtime, principal, raw)
    except ClientGone:
        return
    except Exception as error:
        await send_problem(send, *render(error, f"POST {PATH}"))
        return
    length = (b"content-length", str(len(answer)).encode())
    await send_response(send, response_start(201, [_JSON_HEADERS, length]), answer)


async def read_body(receive: Receive, headers: dict[str, str], limit: int) -> bytes:
    """The request's body, refused (413) as soon as it is known to pass `limit` bytes: from
    its `Content-Length`, or while it arrives."""
    announced = headers.get("content-length")
    if announced is not None:
        try:
            size = int(announced)
        except ValueError:
            raise BadRequest(
                f"Content-Length is not a number: {announced[:40]!r}", field="Content-Length"
            ) from None
        if size > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = cast(bytes, message.get("body", b""))
        if chunk:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the body is over {limit} bytes, the most {PATH} takes")

"""`POST /v1/publish`: services put an event on a channel."""

from __future__ import annotations

import math
from typing import Annotated, Any

import msgspec
from litestar import Request, post

from api.body import decode_body
from api.dependencies import require_role
from api.runtime import Runtime
from streams.access import Principal
from streams.channels import CHANNEL, require_channel
from streams.cursor import encode_cursor
from streams.errors import BadRequest, PayloadTooLarge, TooManyRequests
from streams.event import EVENT_TYPE, MAX_EVENT_TYPE
from streams.frames import CONTROL_TYPES

# Sinal's own frames, and `message`: what `EventSource` calls a frame with no `event:` line.
RESERVED_TYPES = CONTROL_TYPES | {"message"}


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


class PublishResponse(msgspec.Struct):
    cursor: str
    ts: str


@post("/v1/publish", summary="Publish an event (service role)", tags=["streams"])
async def publish(
    request: Request[Any, Any, Any], runtime: Runtime, principal: Principal
) -> PublishResponse:
    require_role(principal, "service")
    wait = runtime.admission.publish(principal.sub, 1)
    if wait is not None:
        raise TooManyRequests(
            f"over this service's publish rate ({runtime.admission.limits.publish_rate:g} "
            "events per second); retry after the time in Retry-After",
            retry_after_s=math.ceil(wait),
        )
    body = decode_body(await request.body(), PublishRequest)
    channel = require_channel(body.channel)
    check_event_type(body.type)
    if len(body.data) > runtime.settings.max_payload_bytes:
        raise PayloadTooLarge(
            f"data is {len(body.data)} bytes; the limit is {runtime.settings.max_payload_bytes}",
            field="data",
        )
    # Whitespace between tokens goes: a raw line break in a pretty-printed payload would split
    # the SSE `data:` line. Only whitespace: the values stay byte for byte as published.
    data = msgspec.json.format(bytes(body.data), indent=-1)
    event = await runtime.engine.publish(channel, body.type, data)
    return PublishResponse(cursor=encode_cursor([event.segment]), ts=event.ts)


def check_event_type(type: str) -> None:
    # fullmatch: with `match`, the pattern's `$` let a trailing line break through.
    if len(type) > MAX_EVENT_TYPE or not EVENT_TYPE.fullmatch(type) or type in RESERVED_TYPES:
        raise BadRequest(
            "type must be lowercase words separated by dots (e.g. 'notification.created'), "
            f"at most {MAX_EVENT_TYPE} characters, and not one of {sorted(RESERVED_TYPES)}",
            field="type",
        )

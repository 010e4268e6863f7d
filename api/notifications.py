"""`/v1/notifications/…`: what a user's devices read of their notifications channel."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, get
from litestar.params import Parameter

from api.runtime import Runtime
from streams.access import authorized_channels
from streams.cursor import InvalidCursor, decode_cursor
from streams.errors import BadRequest
from streams.poll import poll

MAX_WAIT_S = 30.0


class PollResponse(msgspec.Struct):
    events: list[dict[str, Any]]
    resets: list[dict[str, Any]]
    next_cursor: str


@get(
    "/v1/notifications/poll",
    summary="Long-poll: events after a cursor, or the first to arrive within `wait` seconds",
    tags=["notifications"],
)
async def poll_notifications(
    request: Request[Any, Any, Any],
    runtime: Runtime,
    cursor: str | None = None,
    wait: Annotated[float, Parameter(ge=0, le=MAX_WAIT_S)] = 25.0,
    channel: Annotated[list[str] | None, Parameter(query="channel")] = None,
) -> PollResponse:
    """The same cursor as `/v1/stream`; without one, the reply is the current position."""
    principal = runtime.auth.authenticate(
        request.headers, request.cookies, request.query_params.get("ticket")
    )
    channels = await authorized_channels(
        runtime.policy, principal, channel or [], runtime.settings.max_channels
    )
    try:
        resume = decode_cursor(cursor) if cursor else None
    except InvalidCursor as error:
        raise BadRequest(f"cursor: {error}", field="cursor") from None
    reply = await poll(runtime.hub, channels, resume, wait_s=wait)
    return PollResponse(events=reply.events, resets=reply.resets, next_cursor=reply.next_cursor)

"""Long-polls, and long waits in request handlers, which end when the client leaves, the
server drains, or the caller's credential expires (plus `SINAL_AUTH_GRACE`).

An HTTP handler is not cancelled when its client disconnects; a long-poll would go on waiting,
holding its subscription and, for commands, claiming work nobody will receive.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from litestar import Request

from api.remote import remote_address
from streams import cursor as stream_cursor
from streams.access import Principal, authorized_channels
from streams.disconnect import DisconnectReason, deadline, reconnect_allowed
from streams.errors import BadRequest
from streams.frames import StreamReset
from streams.hub import Hub, Subscriber
from streams.poll import poll

if TYPE_CHECKING:
    from api.runtime import Runtime

T = TypeVar("T")
MAX_WAIT_S = 30.0


class Disconnect(msgspec.Struct):
    """Why the server answered early on its own initiative (streams/disconnect.py)."""

    reason: DisconnectReason
    reconnect: bool


class PollResponse(msgspec.Struct, omit_defaults=True):
    events: list[dict[str, Any]]
    resets: list[StreamReset]
    next_cursor: str
    disconnect: Disconnect | None = None


class PollHandle:
    """A long-poll in progress, as the registry sees it (streams/registry.py)."""

    __slots__ = ("cursor", "reason", "subscriber")

    def __init__(self, cursor: str | None) -> None:
        self.cursor = cursor
        self.subscriber: Subscriber | None = None
        self.reason: DisconnectReason | None = None

    def subscribed(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber
        if self.reason is not None:
            subscriber.close(self.reason)

    def disconnect(self, reason: DisconnectReason, retry_after: float | None = None) -> None:
        self.reason = self.reason or reason
        if self.subscriber is not None:
            self.subscriber.close(reason, retry_after)

    def ended_by(self) -> str | None:
        subscriber = self.subscriber
        if subscriber is not None and subscriber.close_reason == "slow":
            return "slow"
        return self.reason

    def figures(self) -> tuple[int, str | None, int]:
        # Nothing is sent until it answers: what waits in the buffer is what it will carry.
        subscriber = self.subscriber
        return 0, self.cursor, 0 if subscriber is None else len(subscriber.pending)


async def long_poll(
    request: Request[Any, Any, Any],
    runtime: Runtime,
    requested: list[str],
    cursor: str | None,
    wait: float,
    *,
    only_requested: bool = False,
) -> PollResponse:
    """Events of the caller's channels after `cursor` (the same cursor as `/v1/stream`), or the
    first to arrive within `wait` seconds; without a cursor, the current position at once.

    The channels are those a stream with `requested` would carry (the caller's notifications
    and `broadcast` included), or with `only_requested`, just `requested`, once allowed.
    """
    principal = runtime.auth.authenticate(
        request.headers, request.cookies, request.query_params.get("ticket")
    )
    channels = await authorized_channels(
        runtime.policy, principal, requested, runtime.settings.max_channels
    )
    if only_requested:
        channels = [channel for channel in channels if channel in requested]
    try:
        resume = stream_cursor.decode_cursor(cursor) if cursor else None
    except stream_cursor.InvalidCursor as error:
        raise BadRequest(f"cursor: {error}", field="cursor") from None
    wait = credential_wait(runtime, principal, wait)
    handle = PollHandle(cursor)
    remote = remote_address(
        request.scope.get("client"),
        request.headers.get("x-forwarded-for"),
        runtime.settings.trusted_proxies,
    )
    with runtime.registry.opened(
        principal,
        "longpoll",
        channels,
        handle,
        remote=remote,
        user_agent=request.headers.get("user-agent"),
    ):
        waited = poll(runtime.hub, channels, resume, wait_s=wait, subscribed=handle.subscribed)
        reply = await unless_gone(request, runtime.hub, waited)
    said = None
    if handle.reason is not None:
        said = Disconnect(handle.reason, reconnect_allowed(handle.reason))
    if reply is None:  # the client left, or the server is stopping: nothing was taken
        return PollResponse(events=[], resets=[], next_cursor=cursor or "", disconnect=said)
    return PollResponse(
        events=reply.events, resets=reply.resets, next_cursor=reply.next_cursor, disconnect=said
    )


def credential_wait(runtime: Runtime, principal: Principal, wait: float) -> float:
    """`wait`, cut short where the caller's credential expires sooner (grace included): a wait
    then answers with what it has, and the client's next request finds the token expired."""
    ends = deadline(principal.expires_at, runtime.settings.auth_grace_s)
    if ends is None:
        return wait
    return max(0.0, min(wait, ends - time.time()))


async def unless_gone(
    request: Request[Any, Any, Any], hub: Hub, wait: Coroutine[Any, Any, T]
) -> T | None:
    """The result of `wait`, or None if the client disconnects or the server starts draining
    first (`wait` is then cancelled)."""
    work = asyncio.ensure_future(wait)
    gone = asyncio.ensure_future(_disconnected(request))
    drained = asyncio.ensure_future(hub.wait_drained())
    try:
        await asyncio.wait({work, gone, drained}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (gone, drained):
            task.cancel()
    if work.done():
        return work.result()
    work.cancel()
    try:
        await work
    except asyncio.CancelledError:
        if asyncio.current_task().cancelling():  # type: ignore[union-attr]
            raise  # this handler itself is being cancelled
    return None


async def _disconnected(request: Request[Any, Any, Any]) -> None:
    """Returns when the client disconnects (the request body, if any, was already read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass

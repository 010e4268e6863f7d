"""`/v1/notifications/…`: create (services), history, unread count, state changes, long-poll.

Every change is published to the user's `notifications:<user>` channel with the new unread
count (`db.inbox`), so all of a user's tabs and devices converge. A user reaches only their own
notifications: another user's id answers 404, exactly like an id that does not exist.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.params import Parameter

from api.body import TIME, check_utc_field, decode_body, parse_time, text_param
from api.dependencies import require_role
from api.longpoll import MAX_WAIT_S, PollResponse, long_poll
from api.runtime import Runtime
from db import notifications
from db.inbox import Change, NotificationView
from db.notifications import MAX_LIMIT, STATES, Draft, State
from db.tables import Severity
from streams.access import Principal
from streams.channels import IDENTIFIER, is_valid_identifier
from streams.errors import BadRequest, NotFound
from streams.event import EVENT_TYPE

MAX_USERS = 1000
MAX_IDS = MAX_LIMIT
MAX_DATA_BYTES = 16 * 1024
MAX_IDEMPOTENCY_KEY = 255
TAGS = ["notifications"]


# Checked below the decoding, for messages of their own; stated here for the OpenAPI document.
User = Annotated[str, msgspec.Meta(extra_json_schema={"pattern": f"^{IDENTIFIER}$"})]
LINK = {"pattern": "^(https?://|/(?!/))"}  # see `safe_link`


class CreateRequest(msgspec.Struct, forbid_unknown_fields=True):
    """One notification for `user`, or the same one for each of `users`."""

    type: Annotated[
        str, msgspec.Meta(max_length=128, extra_json_schema={"pattern": EVENT_TYPE.pattern})
    ]
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    user: User | None = None
    users: (
        Annotated[list[User], msgspec.Meta(max_length=MAX_USERS, extra_json_schema={"minItems": 1})]
        | None
    ) = None
    body: Annotated[str, msgspec.Meta(max_length=8192)] = ""
    data: dict[str, Any] | None = None
    severity: Severity = Severity.info
    link: Annotated[str, msgspec.Meta(max_length=2048, extra_json_schema=LINK)] | None = None
    expires_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None

    def __post_init__(self) -> None:
        check_utc_field(self.expires_at, "expires_at")


class NotificationPage(msgspec.Struct):
    notifications: list[NotificationView]
    next_cursor: str | None  # None: this was the oldest page


class CreatedNotifications(msgspec.Struct):
    notifications: list[NotificationView]  # one per user, in the order given


class UnreadCount(msgspec.Struct):
    unread: int


class OneChanged(msgspec.Struct):
    notification: NotificationView
    unread: int


class IdsRequest(msgspec.Struct, forbid_unknown_fields=True):
    ids: Annotated[list[uuid.UUID], msgspec.Meta(min_length=1, max_length=MAX_IDS)]


class ManyChanged(msgspec.Struct):
    changed: list[str]
    unread: int

    @classmethod
    def of(cls, change: Change) -> ManyChanged:
        return cls([str(id) for id in change.ids], change.unread)


class ReadAllRequest(msgspec.Struct, forbid_unknown_fields=True):
    # The newest notification the client has shown: its `cursor`, or its `created` time.
    before: str | None = None


class ReadAllResponse(msgspec.Struct):
    marked: int
    unread: int


# -- producers -------------------------------------------------------------------------------


@post(
    "/v1/notifications",
    summary="Create a notification for one user or many (service, admin)",
    tags=TAGS,
    status_code=201,
)
async def create_notifications(
    request: Request[Any, Any, Any], runtime: Runtime, principal: Principal
) -> Response[CreatedNotifications]:
    """`Idempotency-Key` makes a retry return the first call's notifications (status 200,
    `Idempotent-Replayed: true`) instead of creating them again."""
    require_role(principal, "service", "admin")
    key = _idempotency_key(request.headers.get("idempotency-key"))
    body = decode_body(await request.body(), CreateRequest)
    users = _recipients(body)
    draft = Draft(
        type=_notification_type(body.type),
        title=body.title,
        body=body.body,
        data=body.data,
        severity=body.severity,
        link=safe_link(body.link),
        expires_at=body.expires_at,
    )
    if body.data is not None and len(msgspec.json.encode(body.data)) > MAX_DATA_BYTES:
        raise BadRequest(f"data is larger than {MAX_DATA_BYTES} bytes as JSON", field="data")
    results = await runtime.inbox.create(
        users, draft, producer=None if key is None else principal.sub, idempotency_key=key
    )
    replayed = not any(created for _, created in results)
    return Response(
        CreatedNotifications([NotificationView.of(record) for record, _ in results]),
        status_code=200 if replayed else 201,
        headers={"Idempotent-Replayed": "true"} if replayed else None,
    )


def _recipients(body: CreateRequest) -> list[str]:
    if (body.user is None) == (body.users is None):
        raise BadRequest("give exactly one of `user` and `users`", field="users")
    users = [body.user] if body.user is not None else body.users or []
    if not users:
        raise BadRequest("users is empty", field="users")
    for user in users:
        if not is_valid_identifier(user):
            raise BadRequest(
                f"user {user[:140]!r} is not 1-128 characters of A-Z a-z 0-9 _ @ . -",
                field="user" if body.user is not None else "users",
            )
    return users


def _notification_type(type: str) -> str:
    if not EVENT_TYPE.fullmatch(type):
        raise BadRequest(
            "type must be lowercase words separated by dots (e.g. 'execution.failed')",
            field="type",
        )
    return type


def safe_link(link: str | None) -> str | None:
    # Links are rendered as anchors in the notification center: no `javascript:` or `data:`.
    if link is None or link.startswith(("https://", "http://")):
        return link
    if link.startswith("/") and not link.startswith("//"):
        return link
    raise BadRequest("link must be an http(s) URL or a path starting with '/'", field="link")


def _idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not 1 <= len(value) <= MAX_IDEMPOTENCY_KEY or not value.isprintable() or not value.isascii():
        raise BadRequest(
            f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII characters",
            field="Idempotency-Key",
        )
    return value


# -- a user's own notifications --------------------------------------------------------------


@get("/v1/notifications", summary="History, newest first, cursor-paginated", tags=TAGS)
async def list_notifications(
    principal: Principal,
    # `state` is a name Litestar reserves for the app state.
    state_filter: Annotated[
        str | None, Parameter(query="state", schema_extra={"enum": list(STATES)})
    ] = None,
    type: str | None = None,
    severity: Severity | None = None,
    since: Annotated[str | None, Parameter(schema_extra=TIME)] = None,
    cursor: str | None = None,
    limit: Annotated[int, Parameter(ge=1, le=MAX_LIMIT)] = 50,
) -> NotificationPage:
    """Without `state`: everything not dismissed. `since` (inclusive) is an ISO 8601 time with
    a timezone; `cursor` is the previous page's `next_cursor`."""
    page = await notifications.list_for_user(
        principal.sub,
        state=_state(state_filter),
        type=text_param(type, "type"),
        severity=severity,
        since=None if since is None else parse_time(since, "since"),
        before_cursor=cursor,
        limit=limit,
    )
    return NotificationPage([NotificationView.of(r) for r in page.items], page.next_cursor)


@get("/v1/notifications/unread-count", summary="How many are unread", tags=TAGS)
async def unread_count(principal: Principal) -> UnreadCount:
    return UnreadCount(await notifications.unread_count(principal.sub))


@get("/v1/notifications/{id:uuid}", summary="One notification", tags=TAGS)
async def get_notification(principal: Principal, id: uuid.UUID) -> NotificationView:
    return NotificationView.of(await _own(principal, id))


@post("/v1/notifications/{id:uuid}/read", summary="Mark one read", tags=TAGS, status_code=200)
async def read_one(runtime: Runtime, principal: Principal, id: uuid.UUID) -> OneChanged:
    change = await runtime.inbox.mark_read(principal.sub, [id])
    return await _one_changed(principal, id, change.unread)


@post("/v1/notifications/{id:uuid}/unread", summary="Mark one unread", tags=TAGS, status_code=200)
async def unread_one(runtime: Runtime, principal: Principal, id: uuid.UUID) -> OneChanged:
    change = await runtime.inbox.mark_unread(principal.sub, [id])
    return await _one_changed(principal, id, change.unread)


@post("/v1/notifications/{id:uuid}/dismiss", summary="Dismiss one", tags=TAGS, status_code=200)
async def dismiss_one(runtime: Runtime, principal: Principal, id: uuid.UUID) -> OneChanged:
    change = await runtime.inbox.dismiss(principal.sub, [id])
    return await _one_changed(principal, id, change.unread)


@post("/v1/notifications/read", summary="Mark several read", tags=TAGS, status_code=200)
async def read_many(
    request: Request[Any, Any, Any], runtime: Runtime, principal: Principal
) -> ManyChanged:
    ids = decode_body(await request.body(), IdsRequest).ids
    return ManyChanged.of(await runtime.inbox.mark_read(principal.sub, ids))


@post("/v1/notifications/unread", summary="Mark several unread", tags=TAGS, status_code=200)
async def unread_many(
    request: Request[Any, Any, Any], runtime: Runtime, principal: Principal
) -> ManyChanged:
    ids = decode_body(await request.body(), IdsRequest).ids
    return ManyChanged.of(await runtime.inbox.mark_unread(principal.sub, ids))


@post("/v1/notifications/dismiss", summary="Dismiss several", tags=TAGS, status_code=200)
async def dismiss_many(
    request: Request[Any, Any, Any], runtime: Runtime, principal: Principal
) -> ManyChanged:
    ids = decode_body(await request.body(), IdsRequest).ids
    return ManyChanged.of(await runtime.inbox.dismiss(principal.sub, ids))


@post(
    "/v1/notifications/read-all", summary="Mark all read, up to a bound", tags=TAGS, status_code=200
)
async def read_all(
    request: Request[Any, Any, Any], runtime: Runtime, principal: Principal
) -> ReadAllResponse:
    """`before`: the newest notification the client has shown (its `cursor`, or its `created`
    time); one that arrived since stays unread. Without it, everything unread is marked."""
    raw = await request.body()
    before = decode_body(raw, ReadAllRequest).before if raw.strip() else None
    return await mark_all_read(runtime, principal, before)


async def mark_all_read(
    runtime: Runtime, principal: Principal, before: str | None
) -> ReadAllResponse:
    """Mark the caller's unread notifications read, up to `before` (a `cursor` or a time); also
    the action channel's `mark_all_read`."""
    before_time = before_cursor = None
    if before is not None:
        if before.startswith("v1."):
            before_cursor = before
        else:
            before_time = parse_time(before, "before")
    marked, unread = await runtime.inbox.read_all(
        principal.sub, before=before_time, before_cursor=before_cursor
    )
    return ReadAllResponse(marked, unread)


async def _own(principal: Principal, id: uuid.UUID) -> notifications.Record:
    record = await notifications.get_for_user(principal.sub, id)
    if record is None:
        raise NotFound(f"no notification {id}")
    return record


async def _one_changed(principal: Principal, id: uuid.UUID, unread: int) -> OneChanged:
    # Already in that state is fine (no event): the answer is the notification as it is.
    return OneChanged(NotificationView.of(await _own(principal, id)), unread)


def _state(text: str | None) -> State | None:
    if text is None:
        return None
    for state in STATES:
        if text == state:
            return state
    raise BadRequest(f"state must be one of {', '.join(STATES)}", field="state")


# -- long-poll -------------------------------------------------------------------------------


@get(
    "/v1/notifications/poll",
    summary="Long-poll: events after a cursor, or the first to arrive within `wait` seconds",
    tags=TAGS,
)
async def poll_notifications(
    request: Request[Any, Any, Any],
    runtime: Runtime,
    cursor: str | None = None,
    wait: Annotated[float, Parameter(ge=0, le=MAX_WAIT_S)] = 25.0,
    channel: Annotated[list[str] | None, Parameter(query="channel")] = None,
) -> PollResponse:
    """The same cursor as `/v1/stream`; without one, the reply is the current position."""
    return await long_poll(request, runtime, channel or [], cursor, wait)

"""The OpenAPI document at `/schema/openapi.json`: what Litestar generates, completed.

Litestar sees each handler's path, query and path parameters and its response body. It cannot
see what the handlers do by hand, so `complete` adds it to the generated document once, when
the app is created:

- request bodies: handlers decode them with `api.body.decode_body` (so that an error names the
  field), so their types are listed here (`BODIES`) and described by msgspec's JSON Schema,
  which carries the same patterns and limits the decoding enforces;
- credentials: the bearer JWT, the `sinal_token` cookie, and `?ticket=` where streams take it;
- errors: every 4xx and 5xx a route answers, as `application/problem+json` (`api.problems`);
  which apply to a route follows from what it takes (parameters, a body, a credential, a path
  id) plus the few it alone answers (`ERRORS`);
- `GET /v1/stream`, routed before Litestar (`api/sse.py`), and the `/v1/actions` WebSocket;
- the routes behind the admin guard (`api.admin.admin_only`), which Litestar does not see
  authenticate: their credentials and their 401 and 403;
- answers that handlers build as plain objects (the admin views, announcements): their
  members, from the view structs below (`VIEWS`, `ANSWERS`), which the tests hold to the
  objects the code really builds.

The served document is the one Litestar caches; completing it in place means every viewer
under `/schema` shows the same thing.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute, WebSocketRoute

from api import actions, admin, announcements, executions, notifications, publish, sse
from api.auth import COOKIE
from api.problems import PROBLEM_JSON
from api.series import SeriesPoint
from api.settings import Settings
from db.announcements import AnnouncementView
from streams.channels import ADMIN, IDENTIFIER
from streams.cursor import MAX_CURSOR_LENGTH

COMPONENTS = "#/components/schemas/{name}"
PROBLEM = "Problem"

# `admin` (the nodes' live counters) is for administrators only: 403 for anyone else.
CHANNEL_PATTERN = (
    rf"^(broadcast|notifications|notifications:{IDENTIFIER}|execution:{IDENTIFIER}|{ADMIN})$"
)

SECURITY_SCHEMES: dict[str, Any] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "The platform's JWT: `sub` (the user), `roles` (e.g. `admin`, "
        "`service`), `teams`, `exp`. It wins over the other credentials when present.",
    },
    "cookie": {
        "type": "apiKey",
        "in": "cookie",
        "name": COOKIE,
        "description": "The same JWT in the platform's HttpOnly cookie. An unsafe request "
        "(POST, PUT, PATCH, DELETE) with it must come from an allowed `Origin`.",
    },
    "ticket": {
        "type": "apiKey",
        "in": "query",
        "name": "ticket",
        "description": "A short-lived stream ticket from `POST /v1/auth/ticket`, for clients "
        "that cannot send headers (`EventSource`); accepted only on `GET /v1/stream`, the "
        "long-polls and the `/v1/actions` WebSocket.",
    },
}
USER: list[dict[str, list[str]]] = [{"bearer": []}, {"cookie": []}]
STREAMING = [*USER, {"ticket": []}]
# Routes that authenticate inside the handler (they accept a ticket too), not through the
# `principal` dependency.
TICKET_PATHS = frozenset({"/v1/notifications/poll", "/v1/executions/{id}/poll"})

DESCRIPTIONS = {
    400: "The request is malformed; `field` names the parameter or JSON path at fault.",
    401: "Credentials are missing, invalid or expired.",
    403: "The caller may not do this (a role, a team or a channel it lacks), or a "
    "cookie-authenticated unsafe request came from another origin.",
    404: "No such resource, or one the caller may not see.",
    409: "The request conflicts with the resource's state; extra members say what it expected.",
    413: "The body, or a value in it, is larger than the limit.",
    415: "The body is not `application/json`.",
    422: "Well-formed, but not acceptable (e.g. an `Idempotency-Key` reused for another body, "
    "a runtime limit out of its range).",
    429: "Too many requests (a runtime limit); retry after `Retry-After` seconds.",
    503: "The database or the engine is unavailable, the server is shutting down, or (the "
    "stream and the action WebSocket) new connections are over the handshake rate; retry "
    "shortly, or after `Retry-After` seconds when it is given.",
}


class Problem(msgspec.Struct):
    """An RFC 9457 problem document; more members may follow (e.g. `expected_seq`)."""

    type: str
    title: str
    status: Annotated[int, msgspec.Meta(ge=400, le=599)]
    detail: str
    field: str | msgspec.UnsetType = msgspec.UNSET  # absent when no one field is at fault


# -- the members of answers that handlers build as plain objects ------------------------------


class ConnectionView(msgspec.Struct):
    """One open connection (`streams.registry.Connection.view`)."""

    id: str  # `<node>-<n>`
    node: str
    user: str
    roles: list[str]
    transport: Literal["sse", "longpoll", "ws"]
    channels: list[str]
    connected_at: str
    remote: str | None
    user_agent: str | None
    delivered: int  # events (SSE, long-poll) or replies (WebSocket) sent so far
    cursor: str | None  # where the client would resume now; None for the WebSocket
    buffered: int  # items waiting to be written


class AuditEntryView(msgspec.Struct):
    """One audit entry (`db.audit.AuditEntry.view`)."""

    id: uuid.UUID
    at: datetime
    actor: str
    action: str
    target: str
    params: dict[str, Any]
    result: dict[str, Any]
    node: str
    request_id: str | None


class LimitsView(msgspec.Struct):
    """The runtime limits in force (`streams.admission.Limits.view`)."""

    actions_rate: float
    actions_burst: int
    streams_per_user: int  # 0: no limit
    handshakes_per_s: int  # 0: no limit
    publish_rate: float  # 0: no limit


class AnnouncedToAll(msgspec.Struct):
    audience: Literal["all"]
    announcement: AnnouncementView


class Recipients(msgspec.Struct):
    users: list[str]


class NotifiedUsers(msgspec.Struct):
    audience: Recipients
    notifications: int  # created now (a user's retry of the same announcement is not new)


class StatsView(msgspec.Struct):
    """`GET /v1/admin/stats`: this process's counters."""

    engine: str  # `memory`, `redis`, or `unreachable` while the engine does not answer
    node: str
    connections: int
    connections_by_transport: dict[str, int]
    connections_total: int
    action_sockets: int
    slow_consumer_closes: int
    events_in: int
    deliveries: int
    resets: int
    replay_reads: int
    replay_reads_saved: int
    engine_reconnects: int
    gaps_caught_up: int
    gaps_while_connected: int
    tasks: int
    outbox_pending: int
    outbox_relayed: int
    notifications_purged: int
    commands_pending: int | None  # None while the engine is unreachable


# The items of list members Litestar can only call objects: (component, member) -> view.
VIEWS: dict[tuple[str, str], Any] = {
    (admin.Connections.__name__, "connections"): ConnectionView,
    (admin.UserView.__name__, "connections"): ConnectionView,
    (admin.AuditPage.__name__, "entries"): AuditEntryView,
    (announcements.Announcements.__name__, "announcements"): AnnouncementView,
}
# Whole answers built as plain objects (or as JSON bytes): "METHOD path" -> (status, the views,
# one of which it is).
ANSWERS: dict[str, tuple[int, tuple[Any, ...]]] = {
    "POST /v1/publish": (201, (publish.PublishResponse, publish.BatchResponse)),
    "GET /v1/admin/limits": (200, (LimitsView,)),
    "PUT /v1/admin/limits": (200, (LimitsView,)),
    "POST /v1/admin/broadcast": (201, (AnnouncedToAll, NotifiedUsers)),
    "GET /v1/admin/stats": (200, (StatsView,)),
}


# Structs that travel as JSON arrays (`array_like`), which Litestar describes as objects:
# msgspec's own schema (`prefixItems`, each item titled) replaces Litestar's.
ARRAYS: list[Any] = [SeriesPoint]


@dataclass(frozen=True)
class Body:
    type: Any
    required: bool = True


# The body each route decodes, by "METHOD path" as in the document.
BODIES: dict[str, Body] = {
    "POST /v1/publish": Body(publish.PublishBody),
    "POST /v1/notifications": Body(notifications.CreateRequest),
    "POST /v1/notifications/read": Body(notifications.IdsRequest),
    "POST /v1/notifications/unread": Body(notifications.IdsRequest),
    "POST /v1/notifications/dismiss": Body(notifications.IdsRequest),
    "POST /v1/notifications/read-all": Body(notifications.ReadAllRequest, required=False),
    "POST /v1/executions": Body(executions.CreateRequest),
    "POST /v1/executions/{id}/events": Body(executions.EventsRequest),
    "POST /v1/executions/events": Body(executions.BulkRequest),
    "POST /v1/commands/ack": Body(executions.AckRequest),
    "POST /v1/admin/connections/{id}/disconnect": Body(admin.DisconnectOne, required=False),
    "POST /v1/admin/users/{user}/disconnect": Body(admin.DisconnectUser, required=False),
    "POST /v1/admin/broadcast": Body(admin.BroadcastRequest),
    "PUT /v1/admin/limits": Body(admin.LimitsChange),
}

# What a route answers beyond what follows from its shape (see `_statuses`).
ERRORS: dict[str, tuple[int, ...]] = {
    "GET /v1/notifications/poll": (403,),
    "GET /v1/executions": (403,),
    "GET /v1/executions/{id}/poll": (403,),
    "GET /v1/commands": (403,),
    "GET /v1/admin/connections": (404,),  # `node` names no running node
    "PUT /v1/admin/limits": (422,),
    "POST /v1/publish": (429,),  # `publish_rate`, a runtime limit
    "POST /v1/notifications": (422,),
    "POST /v1/executions": (409,),
    "POST /v1/executions/{id}/events": (409,),
    "POST /v1/executions/{id}/retry": (409,),
    "POST /v1/executions/{id}/cancel": (409,),
}
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "description": "A retry with the same key returns the first call's result (200).",
    "schema": {"type": "string", "minLength": 1, "maxLength": notifications.MAX_IDEMPOTENCY_KEY,
               "pattern": "^[ -~]+$"},
}  # fmt: skip
# Routes that answer 200 with `Idempotent-Replayed: true` when a retried create found the
# first, and the parameters that make it so (beyond the body's `id`).
REPLAYS: dict[str, list[dict[str, Any]]] = {
    "POST /v1/notifications": [IDEMPOTENCY_KEY],
    "POST /v1/executions": [],
}


def complete(app: Litestar, settings: Settings) -> None:
    """Complete the document Litestar generated for `app`, in place (see the module doc)."""
    document: dict[str, Any] = app.plugins.get("OpenAPIPlugin").provide_openapi_schema()
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    document["components"]["securitySchemes"] = SECURITY_SCHEMES
    _add_components(schemas, [Problem])
    for struct in ARRAYS:
        schemas.pop(struct.__name__, None)
    _add_components(schemas, ARRAYS)
    # A refused batch's `error` is the problem the single-execution endpoint would answer.
    refused = schemas[executions.RefusedBatch.__name__]
    refused["properties"]["error"] = {"$ref": COMPONENTS.format(name=PROBLEM)}

    bodies = dict(zip(BODIES, _add_components(schemas, [b.type for b in BODIES.values()]),
                      strict=True))  # fmt: skip
    # `{}` changes nothing and is refused (422).
    schemas[admin.LimitsChange.__name__]["minProperties"] = 1
    view_refs = dict(zip(VIEWS, _add_components(schemas, list(VIEWS.values())), strict=True))
    for (component, member), ref in view_refs.items():
        schemas[component]["properties"][member]["items"] = ref
    answers = {key: _add_components(schemas, list(views)) for key, (_, views) in ANSWERS.items()}
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        item = document["paths"].get(route.path_format)
        if item is None:
            continue  # not in the schema (pages, the schema itself)
        for handler in route.route_handlers:
            for method in handler.http_methods:
                operation = item.get(method.lower())
                if operation is not None:
                    key = f"{method} {route.path_format}"
                    _complete_operation(operation, key, handler, bodies.get(key), settings)
                    if key in answers:
                        _answer_schema(operation, ANSWERS[key][0], answers[key])

    _publish_forms(document, schemas, settings)
    document["paths"][sse.PATH] = _stream_path(settings)
    if any(isinstance(r, WebSocketRoute) and r.path == actions.PATH for r in app.routes):
        document["paths"][actions.PATH] = _actions_path()


def _publish_forms(document: dict[str, Any], schemas: dict[str, Any], settings: Settings) -> None:
    """`POST /v1/publish` takes an event object or a list of them: one of two, never both
    (msgspec says `anyOf`); and a single event's body has a limit of its own."""
    operation = document["paths"][publish.PATH]["post"]
    body = operation["requestBody"]["content"]["application/json"]
    forms = sorted(body["schema"].pop("anyOf"), key=lambda form: "$ref" not in form)
    body["schema"] = {"oneOf": forms, **body["schema"]}
    operation["description"] = (
        "One event (an object), answered with its `cursor` and `ts`; or a list of 1 to "
        f"{publish.MAX_BATCH} events, published in order, all or none, answered with each "
        "event's cursor and time in the same order. A refused item is named by its index "
        "(`field`: `[3].type`)."
    )
    too_large = operation["responses"]["413"]
    too_large["description"] += (
        f" One event object's body: at most {publish.body_limit(settings)} bytes; its `data` "
        f"at most {settings.max_payload_bytes} bytes (SINAL_MAX_PAYLOAD_BYTES); a list: at "
        f"most {publish.MAX_BATCH} events."
    )


def _add_components(schemas: dict[str, Any], types: list[Any]) -> list[dict[str, Any]]:
    """msgspec's JSON Schema for `types`, their components merged into `schemas`."""
    refs, components = msgspec.json.schema_components(types, ref_template=COMPONENTS)
    for name, schema in components.items():
        existing = schemas.setdefault(name, schema)
        if existing is not schema and existing.get("title") != schema.get("title"):
            raise ValueError(f"two OpenAPI components are named {name!r}")
    return list(refs)


def _answer_schema(operation: dict[str, Any], status: int, refs: list[dict[str, Any]]) -> None:
    content = operation["responses"][str(status)]["content"]["application/json"]
    content["schema"] = refs[0] if len(refs) == 1 else {"oneOf": refs}


def _complete_operation(
    operation: dict[str, Any],
    key: str,
    handler: HTTPRouteHandler,
    body: dict[str, Any] | None,
    settings: Settings,
) -> None:
    method, path = key.split(" ", 1)
    for parameter in operation.get("parameters", []):
        if (parameter["in"], parameter["name"]) == ("query", "channel"):
            parameter["schema"] = _channels(settings)
    signature = handler.parsed_fn_signature.parameters
    # The admin guard authenticates before the handler runs, whatever the handler takes.
    # (`resolve_guards` wraps each guard: the layers hold them as given.)
    guarded = any(admin.admin_only in (layer.guards or ()) for layer in handler.ownership_layers)
    authenticated = "principal" in signature or path in TICKET_PATHS or guarded
    if body is not None:
        operation["requestBody"] = {
            "required": BODIES[key].required,
            "content": {"application/json": {"schema": body}},
        }
    if authenticated:
        operation["security"] = STREAMING if path in TICKET_PATHS else USER
    else:
        operation["security"] = []  # open to anyone
    if key in REPLAYS:
        operation.setdefault("parameters", []).extend(REPLAYS[key])
        ok = operation["responses"].get("201")
        if ok is not None:
            replayed = copy.deepcopy(ok)
            replayed["description"] = "A retried request: the first one's result"
            replayed["headers"] = {"Idempotent-Replayed": {"schema": {"const": "true"}}}
            operation["responses"]["200"] = replayed
    statuses = _statuses(
        method,
        path,
        has_parameters=bool(operation.get("parameters")) or body is not None,
        has_body=body is not None,
        authenticated=authenticated,
        guarded=guarded,
        uses_runtime="runtime" in signature or "request" in signature,
    )
    for status in statuses:
        operation["responses"][str(status)] = _problem_response(status)
    limit = handler.resolve_request_max_body_size()
    if body is not None and limit is not None:
        too_large = operation["responses"]["413"]
        too_large["description"] += f" This route takes at most {limit} bytes of body."


def _statuses(
    method: str,
    path: str,
    *,
    has_parameters: bool,
    has_body: bool,
    authenticated: bool,
    guarded: bool,
    uses_runtime: bool,
) -> list[int]:
    statuses = set(ERRORS.get(f"{method} {path}", ()))
    if has_parameters:
        statuses.add(400)
    if authenticated:
        statuses.add(401)
        if method not in ("GET", "HEAD") or guarded:
            statuses.add(403)  # the origin check of cookie-authenticated requests; roles
    if "{" in path:
        statuses.add(404)
    if has_body:
        statuses.update((413, 415))
    if uses_runtime or authenticated:
        statuses.add(503)
    return sorted(statuses)


def _problem_response(status: int) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": DESCRIPTIONS[status],
        "content": {PROBLEM_JSON: {"schema": {"$ref": COMPONENTS.format(name=PROBLEM)}}},
    }
    if status == 401:
        response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    if status in (429, 503):
        response["headers"] = {
            "Retry-After": {"schema": {"type": "integer", "minimum": 0}, "required": False}
        }
    return response


def _problems(*statuses: int) -> dict[str, Any]:
    return {str(status): _problem_response(status) for status in statuses}


def _channels(settings: Settings) -> dict[str, Any]:
    """The `channel` query parameter of the stream and the long-polls (`subscription_channels`)."""
    return {
        "type": "array",
        "items": {"type": "string", "pattern": CHANNEL_PATTERN},
        "maxItems": settings.max_channels,
    }


def _stream_path(settings: Settings) -> dict[str, Any]:
    cursor = {"type": "string", "minLength": 1, "maxLength": MAX_CURSOR_LENGTH}
    return {
        "get": {
            "tags": ["streams"],
            "summary": "Server-Sent Events of the caller's channels, resumable by cursor",
            "description": (
                "`notifications` (the caller's own) and `broadcast` are always included. Each "
                "event's `id:` is a cursor; send it back as `Last-Event-ID` (or "
                "`last_event_id`) to resume with no loss and no duplicates. A position that "
                "cannot be honoured gets `event: reset`; the server ending the stream sends "
                "`event: disconnect` first. See docs/api.md."
            ),
            "operationId": "V1Stream",
            "security": STREAMING,
            "parameters": [
                {
                    "name": "channel",
                    "in": "query",
                    "description": "A channel to add (repeat the parameter for more).",
                    "style": "form",
                    "explode": True,
                    "schema": _channels(settings),
                },
                {
                    "name": "last_event_id",
                    "in": "query",
                    "description": "The cursor to resume after, for a client that cannot send "
                    "the header; the header wins when both are sent.",
                    "schema": cursor,
                },
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "description": "The cursor to resume after (EventSource sends it on "
                    "reconnect); one the server cannot read starts a fresh stream with "
                    "`event: reset`.",
                    "schema": {"type": "string"},
                },
            ],
            "responses": {
                "200": {
                    "description": "The event stream: `id:` (cursor), `event:` (type) and "
                    '`data:` (`{"channel", "type", "data", "ts"}`) per event; comment '
                    "heartbeats; a `retry:` hint. Over the process's handshake rate "
                    "(`handshakes_per_s`), a request that accepts `text/event-stream` (an "
                    "`EventSource`, which gives up on any other status) gets instead a stream "
                    "of only `retry:` (jittered) and `event: disconnect` with reason `limit` "
                    "and `retry_after`, with `Retry-After`; other clients get the 503.",
                    "headers": {
                        "Cache-Control": {"schema": {"const": "no-cache"}},
                        "X-Accel-Buffering": {"schema": {"const": "no"}},
                        "Retry-After": {
                            "description": "Only on the refusal over the handshake rate.",
                            "schema": {"type": "integer", "minimum": 0},
                            "required": False,
                        },
                    },
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **_problems(400, 401, 403, 429, 503),
            },
        }
    }


def _actions_path() -> dict[str, Any]:
    return {
        "get": {
            "tags": ["actions"],
            "summary": "The action WebSocket (an upgrade, not a REST call)",
            "description": (
                "OpenAPI cannot describe the messages of a WebSocket: this entry records the "
                "handshake only (a plain GET, with no upgrade, answers 405). Each JSON "
                'message `{"op", "ref", ...}` (`ping`, '
                "`mark_read`, `mark_unread`, `dismiss`, `mark_all_read`, `retry_execution`, "
                "`cancel_execution`) gets one reply with its `ref`; a cookie-authenticated "
                "handshake must come from an allowed `Origin`. Over the process's handshake "
                "rate the upgrade is refused with 503 and `Retry-After`. See docs/api.md."
            ),
            "operationId": "V1Actions",
            "security": STREAMING,
            "parameters": [
                {
                    "name": "Upgrade",
                    "in": "header",
                    "required": True,
                    "schema": {"const": "websocket"},
                },
                {
                    "name": "Connection",
                    "in": "header",
                    "required": True,
                    "schema": {"const": "Upgrade"},
                },
            ],
            "responses": {
                "101": {"description": "Switching to the WebSocket protocol."},
                **_problems(401, 403, 503),
            },
        }
    }

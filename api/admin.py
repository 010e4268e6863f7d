"""`/v1/admin/…`: the control plane for operators, one router behind one guard.

Questions about connections are asked of every node over the control bus and merged here
(`streams/cluster.py`, `api/control.py`): a node that does not answer within the survey timeout
is named in `unreachable_nodes` and the answer says `partial: true`. Every act (disconnect,
revoke, broadcast, limits) leaves one row in the audit log, written in the same transaction
as the act's own change where it has one. See docs/admin.md.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, Router, get, post, put
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.params import Parameter

from api import alerting, requests
from api.alerting import AlertView
from api.body import TIME, check_utc_field, decode_body, parse_time, text_param
from api.dependencies import require_role
from api.notifications import LINK, MAX_USERS, User, safe_link
from api.runtime import Runtime
from api.series import FIELDS, INTERVAL_S, SeriesPoint
from db import announcements, audit, notifications, outbox, revocations
from db import limits as stored_limits
from db.engine import write_transaction
from db.notifications import Draft
from db.tables import Severity
from streams.access import Principal
from streams.admission import stored
from streams.channels import IDENTIFIER, is_valid_identifier
from streams.cluster import Survey
from streams.errors import BadRequest, NotFound, Unavailable, Unprocessable
from streams.registry import MAX_LIST, TRANSPORTS, Transport, decode_key, encode_key, iso

TAGS = ["admin"]
MAX_REASON = 200
ANNOUNCEMENT_TYPE = "announcement"


async def admin_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """The router's guard: 401 without valid credentials, 403 without the admin role. An admin
    let in is recorded, once per process, as a recipient of the in-app alerts."""
    runtime: Runtime = connection.app.state.sinal
    principal = runtime.auth.authenticate(connection.headers, connection.cookies)
    require_role(principal, "admin")
    if is_valid_identifier(principal.sub):  # notifications go to such ids only
        await runtime.alerting.admin_seen(principal.sub)


# -- answers ---------------------------------------------------------------------------------


class Connections(msgspec.Struct, kw_only=True):
    connections: list[dict[str, Any]]
    next_cursor: str | None
    partial: bool
    unreachable_nodes: list[str]


class NodeView(msgspec.Struct):
    id: str
    name: str
    pid: int
    version: str
    started_at: str
    last_seen: str
    status: Literal["up", "unreachable"]
    connections: dict[str, int]


class Nodes(msgspec.Struct):
    nodes: list[NodeView]
    partial: bool
    unreachable_nodes: list[str]


class UserView(msgspec.Struct, kw_only=True):
    user: str
    connections: list[dict[str, Any]]
    unread: int
    revoked_before: str | None
    partial: bool
    unreachable_nodes: list[str]


class Closed(msgspec.Struct, kw_only=True, omit_defaults=True):
    closed: int
    partial: bool = False
    unreachable_nodes: list[str] = msgspec.field(default_factory=list)
    revoked_before: str | None = None


class NodeSeries(msgspec.Struct):
    id: str
    name: str
    points: list[SeriesPoint]  # oldest first; each an array in the order of `fields`


class SeriesView(msgspec.Struct, kw_only=True):
    interval_s: int
    fields: list[str]
    nodes: list[NodeSeries]
    partial: bool
    unreachable_nodes: list[str]


class AuditPage(msgspec.Struct):
    entries: list[dict[str, Any]]
    next_cursor: str | None


class Alerts(msgspec.Struct):
    alerts: list[AlertView]


# -- requests --------------------------------------------------------------------------------

Reason = Annotated[str, msgspec.Meta(max_length=MAX_REASON)]


class DisconnectOne(msgspec.Struct, forbid_unknown_fields=True):
    reason: Reason | None = None  # an operator's note, for the audit log


class DisconnectUser(msgspec.Struct, forbid_unknown_fields=True):
    revoke: bool = False
    reason: Reason | None = None


class Users(msgspec.Struct, forbid_unknown_fields=True):
    users: Annotated[list[User], msgspec.Meta(min_length=1, max_length=MAX_USERS)]


class BroadcastRequest(msgspec.Struct, forbid_unknown_fields=True):
    audience: Literal["all"] | Users
    title: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
    body: Annotated[str, msgspec.Meta(max_length=8192)] = ""
    severity: Severity = Severity.info
    link: Annotated[str, msgspec.Meta(max_length=2048, extra_json_schema=LINK)] | None = None
    expires_at: Annotated[datetime, msgspec.Meta(tz=True)] | None = None

    def __post_init__(self) -> None:
        check_utc_field(self.expires_at, "expires_at")


class LimitsChange(msgspec.Struct, forbid_unknown_fields=True):
    """Any subset of the limits, at least one: the OpenAPI document's view of the body of
    `PUT /v1/admin/limits` (`streams.admission.BOUNDS`; the handler checks the values one by
    one, with a 422 naming the field)."""

    actions_rate: Annotated[float, msgspec.Meta(ge=0.001, le=1e6)] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    actions_burst: Annotated[int, msgspec.Meta(ge=1, le=10**6)] | msgspec.UnsetType = msgspec.UNSET
    streams_per_user: Annotated[int, msgspec.Meta(ge=0, le=10**6)] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    handshakes_per_s: Annotated[int, msgspec.Meta(ge=0, le=10**7)] | msgspec.UnsetType = (
        msgspec.UNSET
    )
    publish_rate: Annotated[float, msgspec.Meta(ge=0, le=1e7)] | msgspec.UnsetType = msgspec.UNSET


# -- nodes and connections -------------------------------------------------------------------


@get("/nodes", summary="Every node, with its connections", tags=TAGS)
async def nodes(runtime: Runtime) -> Nodes:
    cluster = runtime.cluster
    known = cluster.nodes()
    survey = await cluster.survey({"kind": "node"})
    views = []
    for seen in known:
        info = seen.info
        answer = survey.answers.get(info.id)
        counts = answer["connections"] if answer and "connections" in answer else {}
        views.append(
            NodeView(
                id=info.id,
                name=info.name,
                pid=info.pid,
                version=info.version,
                started_at=iso(info.started_at),
                last_seen=iso(time.time() if answer is not None else seen.last_seen),
                status="up" if answer is not None else "unreachable",
                connections={t: int(counts.get(t, 0)) for t in TRANSPORTS},
            )
        )
    return Nodes(views, survey.partial, survey.unreachable)


@get("/series", summary="Every node's figures, second by second, for 15 minutes", tags=TAGS)
async def series(runtime: Runtime) -> SeriesView:
    """Each node's last 900 points (one a second), oldest first: connections by transport, and
    per second events published, received and delivered, delivery lag p50 and p99 (seconds,
    null when no delivery was sampled), resets by reason, REST requests and 5xx answers,
    handshakes and slow-consumer closes. A point is an array of numbers in the order of
    `fields`; the newest point of each node also comes live in its `admin.stats` event."""
    cluster = runtime.cluster
    survey = await cluster.survey({"kind": "series"})
    names = {seen.info.id: seen.info.name for seen in cluster.nodes()}
    views = []
    for node, answer in survey.answers.items():
        try:
            points = msgspec.convert(answer.get("points", []), list[SeriesPoint])
        except msgspec.ValidationError:
            points = []  # a node of another version, whose points read otherwise
        views.append(NodeSeries(node, names.get(node, node), points))
    # This node first, as in `GET /v1/admin/nodes`, then by name.
    views.sort(key=lambda view: (view.id != cluster.node_id, view.name, view.id))
    return SeriesView(
        interval_s=INTERVAL_S,
        fields=list(FIELDS),
        nodes=views,
        partial=survey.partial,
        unreachable_nodes=survey.unreachable,
    )


@get("/connections", summary="Connections on every node, filtered, by user", tags=TAGS)
async def list_connections(
    runtime: Runtime,
    user: str | None = None,
    q: Annotated[str | None, Parameter(description="a prefix of user ids")] = None,
    channel: str | None = None,
    transport: Transport | None = None,
    node: str | None = None,
    limit: Annotated[int, Parameter(ge=1, le=MAX_LIST)] = 100,
    cursor: str | None = None,
) -> Connections:
    """Ordered by user, then connection id; `cursor` is the previous page's `next_cursor`."""
    question: dict[str, Any] = {
        "kind": "connections",
        "user": text_param(user, "user"),
        "prefix": text_param(q, "q"),
        "channel": text_param(channel, "channel"),
        "transport": transport,
        "after": None if cursor is None else list(decode_key(cursor)),
        "limit": limit,
    }
    survey = await _survey(runtime, question, text_param(node, "node"))
    found, more = _merged(survey, limit)
    last = found[-1] if found else None
    return Connections(
        connections=found,
        next_cursor=encode_key((last["user"], last["id"])) if more and last else None,
        partial=survey.partial,
        unreachable_nodes=survey.unreachable,
    )


@get("/users/{user:str}", summary="One user: connections, unread count, revocation", tags=TAGS)
async def user_view(runtime: Runtime, user: str) -> UserView:
    user = _user(user)
    survey, unread, before = await asyncio.gather(
        runtime.cluster.survey({"kind": "connections", "user": user, "limit": MAX_LIST}),
        notifications.unread_count(user),
        revocations.revoked_before(runtime.database, user),
    )
    found, _ = _merged(survey, MAX_LIST)
    return UserView(
        user=user,
        connections=found,
        unread=unread,
        revoked_before=None if before is None else iso(before.timestamp()),
        partial=survey.partial,
        unreachable_nodes=survey.unreachable,
    )


@post(
    "/connections/{id:str}/disconnect",
    summary="End one connection, on whichever node holds it",
    tags=TAGS,
    status_code=200,
)
async def disconnect_connection(
    request: Request[Any, Any, Any], runtime: Runtime, principal: Principal, id: str
) -> Closed:
    """The client is told `kicked` and may reconnect; 404 when no node holds it."""
    body = await _optional_body(request, DisconnectOne)
    node, _, number = id.rpartition("-")
    if not number.isdigit() or node not in {seen.info.id for seen in runtime.cluster.nodes()}:
        raise NotFound("no such connection (its node is not running)", field="id")
    survey = await runtime.cluster.survey({"kind": "disconnect", "id": id}, to=node)
    closed = int(survey.answers.get(node, {}).get("closed", 0))
    if not closed and not survey.partial:
        raise NotFound("no such connection (it has ended)", field="id")
    result = Closed(closed=closed, partial=survey.partial, unreachable_nodes=survey.unreachable)
    async with write_transaction(runtime.database):
        await _audit(
            request,
            runtime,
            principal,
            "connection.disconnect",
            f"connection:{id}",
            {"reason": body.reason},
            result,
        )
    return result


@post(
    "/users/{user:str}/disconnect",
    summary="End every connection of a user, optionally revoking their tokens",
    tags=TAGS,
    status_code=200,
)
async def disconnect_user(
    request: Request[Any, Any, Any], runtime: Runtime, principal: Principal, user: str
) -> Closed:
    """With `revoke`, the user's tokens issued before now are refused on every node (401),
    tickets minted from them too, until they have all expired; their connections are told
    `revoked`. Without it they are told `kicked` and may reconnect at once."""
    user = _user(user)
    body = await _optional_body(request, DisconnectUser)
    params = {"revoke": body.revoke, "reason": body.reason}
    question: dict[str, Any] = {"kind": "disconnect", "user": user, "reason": "kicked"}
    revoked_at: str | None = None
    if body.revoke:
        now = datetime.now(UTC).replace(microsecond=0)  # whole seconds, as `iat` is
        lifetime = runtime.settings.max_token_lifetime_s
        async with write_transaction(runtime.database):
            before = await revocations.revoke(
                runtime.database,
                user,
                now,
                datetime.fromtimestamp(now.timestamp() + lifetime, UTC),
                principal.sub,
            )
            revoked_at = iso(before.timestamp())
            await _audit(
                request,
                runtime,
                principal,
                "user.disconnect",
                f"user:{user}",
                params,
                {"revoked_before": revoked_at},
            )
        question.update(reason="revoked", revoked_before=before.timestamp())
    survey = await runtime.cluster.survey(question)
    result = Closed(
        closed=sum(int(answer.get("closed", 0)) for answer in survey.answers.values()),
        partial=survey.partial,
        unreachable_nodes=survey.unreachable,
        revoked_before=revoked_at,
    )
    if not body.revoke:
        async with write_transaction(runtime.database):
            await _audit(
                request, runtime, principal, "user.disconnect", f"user:{user}", params, result
            )
    return result


# -- broadcast -------------------------------------------------------------------------------


@post("/broadcast", summary="An announcement to everyone, or notifications to users", tags=TAGS)
async def broadcast(
    request: Request[Any, Any, Any], runtime: Runtime, principal: Principal
) -> Response[dict[str, Any]]:
    """`audience: "all"`: stored as an announcement (the pages show it as a banner until it
    expires, to users who were offline too) and sent live on `broadcast`. A list of users:
    a stored notification of type `announcement` for each, like `POST /v1/notifications`."""
    body = decode_body(await request.body(), BroadcastRequest)
    link = safe_link(body.link)
    params: dict[str, Any] = {
        "audience": body.audience if isinstance(body.audience, str) else "users",
        "title": body.title,
        "severity": str(body.severity),
    }
    answer: dict[str, Any]
    async with write_transaction(runtime.database):
        if isinstance(body.audience, Users):
            users = [_user(user, "audience.users") for user in dict.fromkeys(body.audience.users)]
            draft = Draft(
                type=ANNOUNCEMENT_TYPE,
                title=body.title,
                body=body.body,
                severity=body.severity,
                link=link,
                expires_at=body.expires_at,
            )
            results = await runtime.inbox.create(users, draft)
            answer = {
                "audience": {"users": users},
                "notifications": sum(1 for _, created in results if created),
            }
            params["users"] = len(users)
        else:
            announcement = await announcements.create(
                runtime.database,
                title=body.title,
                body=body.body,
                severity=str(body.severity),
                link=link,
                expires_at=body.expires_at,
                by=principal.sub,
            )
            answer = {"audience": "all", "announcement": announcement.view()}
        await _audit(
            request,
            runtime,
            principal,
            "broadcast",
            f"broadcast:{params['audience']}",
            params,
            answer,
        )
    runtime.relay.wake()
    return Response(answer, status_code=201)


# -- runtime limits --------------------------------------------------------------------------


@get("/limits", summary="The runtime limits in force", tags=TAGS)
async def get_limits(runtime: Runtime) -> dict[str, Any]:
    return runtime.admission.limits.view()


@put("/limits", summary="Change runtime limits (any subset), on every node", tags=TAGS)
async def put_limits(
    request: Request[Any, Any, Any], runtime: Runtime, principal: Principal
) -> dict[str, Any]:
    """Stored, so they survive restarts; applied on every node within the survey timeout (a
    node that misses it reads them from the database within 10 s)."""
    raw = await request.body()
    if not raw:
        raise BadRequest("request body is empty; send a JSON object of limits")
    changes = decode_body(raw, dict[str, Any])  # checks UTF-8 first, as every body
    if not changes:
        raise Unprocessable("name at least one limit to change")
    async with write_transaction(runtime.database):
        # Only what an administrator changed is stored: the others keep following their
        # settings (SINAL_ACTIONS_RATE, ...) across restarts.
        overrides = await stored_limits.load(runtime.database) or {}
        limits = stored(overrides, runtime.control.defaults).changed(changes)
        checked = limits.view()
        overrides = {**overrides, **{name: checked[name] for name in changes}}
        await stored_limits.store(runtime.database, overrides)
        await _audit(request, runtime, principal, "limits.update", "limits", changes, limits.view())
    # Every node, this one included, applies them now; one that misses this reads them from
    # the database at its next sync.
    await runtime.cluster.survey({"kind": "limits", "limits": overrides})
    return limits.view()


# -- audit -----------------------------------------------------------------------------------


@get("/audit", summary="The audit log, newest first", tags=TAGS)
async def audit_log(
    runtime: Runtime,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: Annotated[str | None, Parameter(schema_extra=TIME)] = None,
    cursor: str | None = None,
    limit: Annotated[int, Parameter(ge=1, le=200)] = 50,
) -> AuditPage:
    entries, next_cursor = await audit.list_entries(
        runtime.database,
        actor=text_param(actor, "actor"),
        action=text_param(action, "action"),
        target=text_param(target, "target"),
        since=None if since is None else parse_time(since, "since"),
        cursor=text_param(cursor, "cursor"),
        limit=limit,
    )
    return AuditPage([entry.view() for entry in entries], next_cursor)


# -- alerts ----------------------------------------------------------------------------------


@get("/alerts", summary="In-app alerts: firing, and resolved in the last day", tags=TAGS)
async def list_alerts(runtime: Runtime) -> Alerts:
    """Firing ones first, newest first; each change of state is also an `admin.alert` event
    on the `admin` channel, with the same object."""
    return Alerts(await alerting.listed(runtime))


@get("/stats", summary="Live counters of this process", tags=TAGS)
async def stats(runtime: Runtime) -> dict[str, Any]:
    hub = runtime.hub.stats
    # While the engine is down is when these counters matter most (the outbox grows): what
    # needs the engine is null then, and the rest is answered all the same.
    engine: str = runtime.engine.name
    try:
        commands_pending: int | None = await runtime.commands.pending()
    except Unavailable:
        engine, commands_pending = "unreachable", None
    return {
        "engine": engine,
        "node": runtime.cluster.node_id,
        "connections": hub.connections,
        "connections_by_transport": runtime.registry.counts(),
        "connections_total": hub.connections_total,
        "action_sockets": runtime.actions.count,
        "slow_consumer_closes": hub.slow_consumer_closes,
        "events_in": hub.events_in,
        "deliveries": hub.deliveries,
        "resets": hub.resets,
        # Resume reads sent to the engine, and those a concurrent resume's read answered.
        "replay_reads": runtime.hub.reads.reads,
        "replay_reads_saved": runtime.hub.reads.saved,
        # The engine's live connection: re-established after a loss, and what it caught up
        # from the log after one, or after a live message went missing while it stayed up.
        "engine_reconnects": runtime.engine.reconnects,
        "gaps_caught_up": runtime.engine.gaps_caught_up,
        "gaps_while_connected": runtime.engine.gaps_while_connected,
        "tasks": len(asyncio.all_tasks()),
        # Events committed but not yet on the stream: grows while Redis is unreachable.
        "outbox_pending": await outbox.pending(runtime.database),
        "outbox_relayed": runtime.relay.relayed,
        "notifications_purged": runtime.purge.deleted,
        # Retry/cancel commands delivered to the execution service and not yet acknowledged.
        "commands_pending": commands_pending,
    }


# -- helpers ---------------------------------------------------------------------------------


async def _survey(runtime: Runtime, question: dict[str, Any], node: str | None) -> Survey:
    if node is None:
        return await runtime.cluster.survey(question)
    if node not in {seen.info.id for seen in runtime.cluster.nodes()}:
        raise NotFound("no such node", field="node")
    return await runtime.cluster.survey(question, to=node)


def _merged(survey: Survey, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """The first `limit` connections of every node's answer, in listing order, and whether
    more are left."""
    found: list[dict[str, Any]] = []
    more = False
    for answer in survey.answers.values():
        found += answer.get("connections", [])
        more = more or bool(answer.get("more"))
    found.sort(key=lambda view: (view["user"], view["id"]))
    return found[:limit], more or len(found) > limit


def _user(user: str, field: str = "user") -> str:
    if not is_valid_identifier(user):
        raise BadRequest(f"{field} must match {IDENTIFIER}", field=field)
    return user


async def _optional_body(request: Request[Any, Any, Any], type: type[Any]) -> Any:
    raw = await request.body()
    return decode_body(raw, type) if raw.strip() else type()


async def _audit(
    request: Request[Any, Any, Any],
    runtime: Runtime,
    principal: Principal,
    action: str,
    target: str,
    params: dict[str, Any],
    result: Any,
) -> None:
    await audit.record(
        runtime.database,
        actor=principal.sub,
        action=action,
        target=target,
        params=params,
        result=msgspec.to_builtins(result),
        node=runtime.cluster.node_id,
        request_id=request_id(request),
    )


def request_id(request: Request[Any, Any, Any]) -> str:
    """The request's id, the one its `X-Request-ID` response header carries (`api.requests`):
    the caller's own when it sent a sensible one."""
    exchange = requests.current()
    if exchange is not None:
        return exchange.request_id
    given = request.headers.get("x-request-id", "")  # an app called without `Requests`
    return given if requests.sensible_id(given.encode("latin-1")) else uuid.uuid4().hex


router = Router(
    path="/v1/admin",
    guards=[admin_only],
    route_handlers=[
        nodes,
        series,
        list_connections,
        user_view,
        disconnect_connection,
        disconnect_user,
        broadcast,
        get_limits,
        put_limits,
        audit_log,
        list_alerts,
        stats,
    ],
)

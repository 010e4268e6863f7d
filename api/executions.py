"""`/v1/executions/…`: ingest for the execution service, live and history for team members,
retry and cancel commands; `/v1/commands`: where the execution service takes those commands.

Who sees what: the members of an execution's team (the JWT `teams` claim), admins and services.
For anyone else an execution does not exist: its REST paths answer 404 exactly like an unknown
id, and its stream channel 403 whether it exists or not.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.params import Parameter

from api.body import TIME, decode_body, parse_time, text_param
from api.dependencies import require_role
from api.longpoll import MAX_WAIT_S, PollResponse, credential_wait, long_poll, unless_gone
from api.problems import problem_of
from api.runtime import Runtime
from db import executions
from db.executions import MAX_LIMIT, MAX_STEP, STATUSES, Applied, Execution, IngestEvent
from db.tracking import Command, ExecutionView, Spec
from streams.access import Principal
from streams.channels import IDENTIFIER, execution_channel
from streams.errors import BadRequest, Forbidden, NotFound
from streams.limits import MAX_INT64

TAGS = ["executions"]
MAX_BATCH = 500
MAX_BATCH_BYTES = 1024 * 1024
MAX_BULK_BATCHES = 1000
MAX_BULK_EVENTS = 5000
MAX_BULK_BYTES = 4 * 1024 * 1024
MAX_LOG_DATA_BYTES = 16 * 1024
MAX_LOG_PAGE = 1000
MAX_COMMANDS = 100
LEVELS = ("debug", "info", "warning", "error")

Identifier = Annotated[str, msgspec.Meta(pattern=f"^{IDENTIFIER}$")]


class CreateRequest(msgspec.Struct, forbid_unknown_fields=True):
    team: Identifier
    owner: Identifier
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    kind: Annotated[str, msgspec.Meta(max_length=128)] = ""
    total_steps: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | None = None
    # Chosen by the service so that a retried create answers with the first one (200).
    id: uuid.UUID | None = None


class EventsRequest(msgspec.Struct, forbid_unknown_fields=True):
    events: Annotated[list[IngestEvent], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class EventsResponse(msgspec.Struct):
    applied: int
    duplicates: int
    next_seq: int
    status: str

    @classmethod
    def of(cls, result: Applied) -> EventsResponse:
        after = result.execution
        return cls(len(result.events), result.duplicates, after.next_seq, after.status)


class Batch(msgspec.Struct, forbid_unknown_fields=True):
    execution: uuid.UUID
    events: Annotated[list[IngestEvent], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class BulkRequest(msgspec.Struct, forbid_unknown_fields=True):
    batches: Annotated[list[Batch], msgspec.Meta(min_length=1, max_length=MAX_BULK_BATCHES)]


class AppliedBatch(msgspec.Struct):
    execution: str
    applied: int
    duplicates: int
    next_seq: int
    status: str

    @classmethod
    def of(cls, result: Applied) -> AppliedBatch:
        after = result.execution
        return cls(str(after.id), len(result.events), result.duplicates, after.next_seq,
                   after.status)  # fmt: skip


class RefusedBatch(msgspec.Struct):
    execution: str
    error: dict[str, Any]  # the problem the single-execution endpoint would answer


@dataclass
class BulkResponse:
    results: list[AppliedBatch | RefusedBatch]  # one per batch, in order


class ExecutionPage(msgspec.Struct):
    executions: list[ExecutionView]
    next_cursor: str | None


class LogLineView(msgspec.Struct):
    seq: int
    time: datetime
    level: str
    step: int | None
    message: str
    data: Any


class LogPage(msgspec.Struct):
    logs: list[LogLineView]
    next_after: int | None  # `after` for the next page; None: no more lines for now


class RetryResponse(msgspec.Struct):
    command: Command
    execution: ExecutionView  # the new attempt, queued


class CancelResponse(msgspec.Struct):
    command: Command


class DeliveryView(msgspec.Struct):
    delivery: str  # what to acknowledge
    deliveries: int  # 1, then more each time it is delivered again
    command: msgspec.Raw


class CommandsResponse(msgspec.Struct):
    commands: list[DeliveryView]


class AckRequest(msgspec.Struct, forbid_unknown_fields=True):
    deliveries: Annotated[
        list[Annotated[str, msgspec.Meta(extra_json_schema={"pattern": r"^[0-9]+-[0-9]+$"})]],
        msgspec.Meta(min_length=1, max_length=MAX_COMMANDS),
    ]


class AckResponse(msgspec.Struct):
    acked: int


# -- ingest (the execution service) ----------------------------------------------------------


@post("/v1/executions", summary="Create an execution (service)", tags=TAGS, status_code=201)
async def create_execution(
    request: Request[Any, Any, Any], runtime: Runtime, principal: Principal
) -> Response[ExecutionView]:
    require_role(principal, "service")
    body = decode_body(await request.body(), CreateRequest)
    spec = Spec(body.team, body.owner, body.name, body.kind, body.total_steps, body.id)
    execution, created = await runtime.tracker.create(spec)
    return Response(
        ExecutionView.of(execution),
        status_code=201 if created else 200,
        headers=None if created else {"Idempotent-Replayed": "true"},
    )


@post(
    "/v1/executions/{id:uuid}/events",
    summary="Append a batch of sequenced events (service)",
    tags=TAGS,
    status_code=200,
    request_max_body_size=MAX_BATCH_BYTES,
)
async def append_events(
    request: Request[Any, Any, Any], runtime: Runtime, principal: Principal, id: uuid.UUID
) -> EventsResponse:
    """Events already applied (same `seq`) are ignored; a gap or a transition the execution
    cannot make refuses the whole batch with 409 and `expected_seq`, where to resend from."""
    require_role(principal, "service")
    batch = decode_body(await request.body(), EventsRequest).events
    _check_sizes(batch, "events")
    [result] = await runtime.tracker.ingest_many([(id, batch)])
    if isinstance(result, Exception):
        raise result
    return EventsResponse.of(result)


@post(
    "/v1/executions/events",
    summary="Append the batches of many executions at once (service)",
    tags=TAGS,
    status_code=200,
    request_max_body_size=MAX_BULK_BYTES,
)
async def append_many(
    request: Request[Any, Any, Any], runtime: Runtime, principal: Principal
) -> BulkResponse:
    """One request per flush for an execution service running many executions. Each
    execution's batch is applied or refused on its own: a refusal is that batch's `error`, the
    problem the single-execution endpoint would answer."""
    require_role(principal, "service")
    batches = decode_body(await request.body(), BulkRequest).batches
    seen: set[uuid.UUID] = set()
    for index, batch in enumerate(batches):
        if batch.execution in seen:
            raise BadRequest("an execution appears twice", field=f"batches[{index}].execution")
        seen.add(batch.execution)
        _check_sizes(batch.events, f"batches[{index}].events")
    if sum(len(batch.events) for batch in batches) > MAX_BULK_EVENTS:
        raise BadRequest(f"more than {MAX_BULK_EVENTS} events in all", field="batches")
    results = await runtime.tracker.ingest_many([(b.execution, b.events) for b in batches])
    return BulkResponse(
        [
            RefusedBatch(str(batch.execution), problem_of(result))
            if isinstance(result, Exception)
            else AppliedBatch.of(result)
            for batch, result in zip(batches, results, strict=True)
        ]
    )


def _check_sizes(events: list[IngestEvent], field: str) -> None:
    for index, event in enumerate(events):
        data = getattr(event, "data", None) or getattr(event, "details", None)
        if data is not None and len(msgspec.json.encode(data)) > MAX_LOG_DATA_BYTES:
            raise BadRequest(f"larger than {MAX_LOG_DATA_BYTES} bytes as JSON",
                             field=f"{field}[{index}]")  # fmt: skip


# -- reading (team members, admins, services) ------------------------------------------------


@get("/v1/executions", summary="Executions of the caller's teams, newest first", tags=TAGS)
async def list_executions(
    runtime: Runtime,
    principal: Principal,
    team: str | None = None,
    status: Annotated[str | None, Parameter(schema_extra={"enum": list(STATUSES)})] = None,
    owner: str | None = None,
    since: Annotated[str | None, Parameter(schema_extra=TIME)] = None,
    until: Annotated[str | None, Parameter(schema_extra=TIME)] = None,
    cursor: str | None = None,
    limit: Annotated[int, Parameter(ge=1, le=MAX_LIMIT)] = 50,
) -> ExecutionPage:
    """`since` (inclusive) and `until` (exclusive) bound the creation time (ISO 8601 with a
    timezone); `cursor` is the previous page's `next_cursor`."""
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}", field="status")
    page = await executions.list_executions(
        runtime.database,
        _teams(principal, text_param(team, "team")),
        status=status,
        owner=text_param(owner, "owner"),
        since=None if since is None else parse_time(since, "since"),
        until=None if until is None else parse_time(until, "until"),
        before_cursor=cursor,
        limit=limit,
    )
    return ExecutionPage([ExecutionView.of(e) for e in page.items], page.next_cursor)


def _teams(principal: Principal, team: str | None) -> list[str] | None:
    if principal.is_admin or principal.is_service:
        return None if team is None else [team]
    if team is None:
        return sorted(principal.teams)
    if team not in principal.teams:
        raise Forbidden(f"not a member of team {team[:128]!r}", field="team")
    return [team]


@get("/v1/executions/{id:uuid}", summary="One execution: status, progress, steps, error", tags=TAGS)
async def get_execution(runtime: Runtime, principal: Principal, id: uuid.UUID) -> ExecutionView:
    return ExecutionView.of(await _visible(runtime, principal, id))


@get("/v1/executions/{id:uuid}/logs", summary="Log lines in order, paginated", tags=TAGS)
async def execution_logs(
    runtime: Runtime,
    principal: Principal,
    id: uuid.UUID,
    level: Annotated[str | None, Parameter(schema_extra={"enum": list(LEVELS)})] = None,
    step: Annotated[int | None, Parameter(ge=1, le=MAX_STEP)] = None,
    after: Annotated[int, Parameter(ge=0, le=MAX_INT64)] = 0,
    limit: Annotated[int, Parameter(ge=1, le=MAX_LOG_PAGE)] = 100,
) -> LogPage:
    """`after` is the previous page's `next_after` (a `seq`); for a live tail, subscribe to
    the `execution:<id>` channel."""
    if level is not None and level not in LEVELS:
        raise BadRequest(f"level must be one of {', '.join(LEVELS)}", field="level")
    await _require_team(runtime, principal, id)
    lines = await executions.logs(
        runtime.database, id, level=level, step=step, after_seq=after, limit=limit
    )
    views = [LogLineView(x.seq, x.time, x.level, x.step, x.message, x.data) for x in lines]
    return LogPage(views, views[-1].seq if len(views) == limit else None)


@get(
    "/v1/executions/{id:uuid}/poll",
    summary="Long-poll the execution's events after a cursor",
    tags=TAGS,
)
async def poll_execution(
    request: Request[Any, Any, Any],
    runtime: Runtime,
    id: uuid.UUID,
    cursor: str | None = None,
    wait: Annotated[float, Parameter(ge=0, le=MAX_WAIT_S)] = 25.0,
) -> PollResponse:
    """The cursor of `/v1/stream?channel=execution:<id>` works here too, and the other way
    round."""
    channel = execution_channel(str(id))
    return await long_poll(request, runtime, [channel], cursor, wait, only_requested=True)


async def _visible(runtime: Runtime, principal: Principal, id: uuid.UUID) -> Execution:
    execution = await executions.get(runtime.database, id)
    if execution is None or not _may_read(principal, execution.team):
        raise NotFound(f"no execution {id}")
    return execution


async def _require_team(runtime: Runtime, principal: Principal, id: uuid.UUID) -> str:
    """The team of execution `id`, which `principal` may read; else 404, exactly as for an
    unknown id."""
    team = await executions.team_of(runtime.database, str(id))
    if team is None or not _may_read(principal, team):
        raise NotFound(f"no execution {id}")
    return team


async def _require_commander(runtime: Runtime, principal: Principal, id: uuid.UUID) -> None:
    """`principal` may command execution `id`. A reader who may not (a service) knows the
    execution exists: 403 says what it lacks. Anyone else gets the 404 of `_require_team`."""
    team = await _require_team(runtime, principal, id)
    if not (principal.is_admin or team in principal.teams):
        raise Forbidden(
            f"retry and cancel are for the members of team {team!r} and the 'admin' role; "
            "this token has neither"
        )


def _may_read(principal: Principal, team: str) -> bool:
    return principal.is_admin or principal.is_service or team in principal.teams


# -- commands (team members) -----------------------------------------------------------------


@post(
    "/v1/executions/{id:uuid}/retry", summary="Retry as a new attempt", tags=TAGS, status_code=202
)
async def retry_execution(runtime: Runtime, principal: Principal, id: uuid.UUID) -> RetryResponse:
    """Only a failed or cancelled execution; the new attempt is queued for the service."""
    return await retry(runtime, principal, id)


@post("/v1/executions/{id:uuid}/cancel", summary="Ask for cancellation", tags=TAGS, status_code=202)
async def cancel_execution(runtime: Runtime, principal: Principal, id: uuid.UUID) -> CancelResponse:
    """The execution is cancelled when the execution service reports it (`execution.status`)."""
    return await cancel(runtime, principal, id)


# The commands themselves, shared by REST and the action channel (`api/actions.py`).


async def retry(runtime: Runtime, principal: Principal, id: uuid.UUID) -> RetryResponse:
    await _require_commander(runtime, principal, id)
    command, new = await runtime.tracker.retry(id, principal.sub)
    return RetryResponse(command, ExecutionView.of(new))


async def cancel(runtime: Runtime, principal: Principal, id: uuid.UUID) -> CancelResponse:
    await _require_commander(runtime, principal, id)
    return CancelResponse(await runtime.tracker.cancel(id, principal.sub))


# -- the execution service takes commands ----------------------------------------------------


@get("/v1/commands", summary="Take retry and cancel commands (service)", tags=TAGS)
async def take_commands(
    request: Request[Any, Any, Any],
    runtime: Runtime,
    principal: Principal,
    consumer: Annotated[str, Parameter(pattern=f"^{IDENTIFIER}$")],
    wait: Annotated[float, Parameter(ge=0, le=MAX_WAIT_S)] = 25.0,
    limit: Annotated[int, Parameter(ge=1, le=MAX_COMMANDS)] = 10,
) -> CommandsResponse:
    """At least once: a command not acknowledged within `SINAL_COMMAND_ACK_TIMEOUT` seconds
    is delivered again, to this consumer or another. Handle them idempotently."""
    require_role(principal, "service")
    claim = runtime.commands.claim(
        consumer,
        limit=limit,
        wait_s=credential_wait(runtime, principal, wait),
        redeliver_after_s=runtime.settings.command_ack_timeout_s,
    )
    # A consumer that went away must not take commands it will never see (they would wait for
    # the ack timeout), and a stopping server must not wait for the long-poll to run out.
    deliveries = await unless_gone(request, runtime.hub, claim) or []
    return CommandsResponse(
        [DeliveryView(d.id, d.deliveries, msgspec.Raw(d.data_json)) for d in deliveries]
    )


@post(
    "/v1/commands/ack", summary="Acknowledge handled commands (service)", tags=TAGS, status_code=200
)
async def ack_commands(
    request: Request[Any, Any, Any], runtime: Runtime, principal: Principal
) -> AckResponse:
    require_role(principal, "service")
    body = decode_body(await request.body(), AckRequest)
    return AckResponse(await runtime.commands.ack(body.deliveries))


ROUTES = [
    create_execution,
    append_events,
    append_many,
    list_executions,
    get_execution,
    execution_logs,
    poll_execution,
    retry_execution,
    cancel_execution,
    take_commands,
    ack_commands,
]

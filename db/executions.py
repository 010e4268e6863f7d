"""Executions: their state, steps and log lines, changed only by sequenced ingest events.

The execution service numbers the events of each execution 1, 2, 3, … (`seq`). `apply` takes a
batch: events already applied are ignored (a retry), the next ones are applied in order, and a
batch that skips a number, or asks for a transition the execution cannot make, is refused whole
with what was expected, so the producer can resend from there.

Status transitions: queued → running | failed | cancelled; running → succeeded | failed |
cancelled; succeeded, failed and cancelled are final. Progress and step events on a queued
execution start it. A finished execution never runs again: a retry is a new execution (next
attempt) linked to the one it retries.

Every function takes the database engine; writes run in one write transaction, with the
execution's row locked on PostgreSQL (SQLite admits one writer anyway).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from piccolo.engine.postgres import PostgresEngine
from piccolo.querystring import QueryString

from db.engine import Database, write_transaction
from db.notifications import decode_cursor, encode_cursor, new_id
from streams.errors import Conflict, NotFound
from streams.limits import MAX_INT64, utc_problem

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
StepStatus = Literal["running", "succeeded", "failed", "skipped"]
Outcome = Literal["succeeded", "failed", "skipped"]  # of a step
LogLevel = Literal["debug", "info", "warning", "error"]
FINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
NEXT_STATUS: Mapping[str, frozenset[str]] = {
    "queued": frozenset({"running", "failed", "cancelled"}),
    "running": frozenset({"succeeded", "failed", "cancelled"}),
}
MAX_LIMIT = 200

# `next_seq` (the last seq + 1) is a PostgreSQL bigint.
Seq = Annotated[int, msgspec.Meta(ge=1, le=MAX_INT64 - 1)]
MAX_STEP = 100_000
StepNumber = Annotated[int, msgspec.Meta(ge=1, le=MAX_STEP)]
Text = Annotated[str, msgspec.Meta(max_length=4096)]
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


# -- the ingest protocol ---------------------------------------------------------------------


class Progress(msgspec.Struct, tag="progress", forbid_unknown_fields=True):
    seq: Seq
    progress: Annotated[int, msgspec.Meta(ge=0, le=100)]


class StepStarted(msgspec.Struct, tag="step_started", forbid_unknown_fields=True):
    seq: Seq
    step: StepNumber
    name: Name
    total_steps: StepNumber | None = None


class StepFinished(msgspec.Struct, tag="step_finished", forbid_unknown_fields=True):
    seq: Seq
    step: StepNumber
    outcome: Outcome = "succeeded"


class Log(msgspec.Struct, tag="log", forbid_unknown_fields=True):
    seq: Seq
    message: Text
    level: LogLevel = "info"
    step: StepNumber | None = None
    data: dict[str, Any] | None = None
    time: Annotated[datetime, msgspec.Meta(tz=True)] | None = None

    def __post_init__(self) -> None:
        problem = None if self.time is None else utc_problem(self.time)
        if problem is not None:
            raise ValueError(f"Field `time` {problem}")  # msgspec adds where


class StatusChange(msgspec.Struct, tag="status", forbid_unknown_fields=True):
    seq: Seq
    status: Literal["running", "succeeded", "failed", "cancelled"]


class Failure(msgspec.Struct, tag="error", forbid_unknown_fields=True):
    """The execution failed: with what code and message, at which step, and any details."""

    seq: Seq
    code: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    message: Text
    step: StepNumber | None = None
    details: dict[str, Any] | None = None


IngestEvent = Progress | StepStarted | StepFinished | Log | StatusChange | Failure


# -- errors ----------------------------------------------------------------------------------


class ExecutionNotFound(NotFound):
    def __init__(self, id: uuid.UUID) -> None:
        super().__init__(f"no execution {id}")


class SequenceGap(Conflict):
    """A batch skipped a sequence number; `expected` is the next one to send."""

    def __init__(self, expected: int, got: int, *, status: str) -> None:
        super().__init__(
            f"sequence gap: expected seq {expected}, got {got}; nothing was applied",
            field="events",
            extra={"expected_seq": expected, "execution_status": status},
        )
        self.expected, self.got, self.execution_status = expected, got, status


class InvalidTransition(Conflict):
    """The execution cannot do what an event or a command asks in its state. For an event,
    `seq` is that event's, and `expected` the seq the execution still expects (nothing of the
    batch was applied)."""

    def __init__(
        self, message: str, *, status: str, seq: int | None = None, expected: int | None = None
    ) -> None:
        super().__init__(
            message,
            field=None if seq is None else "events",
            extra={"seq": seq, "execution_status": status, "expected_seq": expected},
        )
        # Not `status`: that is the HTTP status of every SinalError.
        self.execution_status, self.seq, self.expected = status, seq, expected


class AlreadyRetried(InvalidTransition):
    """The execution has been retried already, by `attempt`: that one is retried next."""

    def __init__(self, status: str, attempt: uuid.UUID) -> None:
        super().__init__(
            f"this execution was already retried by {attempt}; retry that attempt if it fails",
            status=status,
        )
        self.attempt = attempt
        self.extra["retry_execution"] = str(attempt)


# -- records ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    number: int
    name: str
    status: str
    started_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class Execution:
    id: uuid.UUID
    team: str
    owner: str
    name: str
    kind: str
    status: str
    progress: int
    step: int | None
    step_name: str | None
    total_steps: int | None
    attempt: int
    retry_of: uuid.UUID | None
    error_code: str | None
    error_message: str | None
    error_step: int | None
    error_details: Any
    created: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated: datetime
    next_seq: int
    steps: tuple[Step, ...] = field(default=())

    @property
    def cursor(self) -> str:
        return encode_cursor(self.created, self.id)


@dataclass(frozen=True, slots=True)
class LogLine:
    seq: int
    time: datetime
    level: str
    step: int | None
    message: str
    data: Any


@dataclass(frozen=True, slots=True)
class Applied:
    """What a batch did: the events applied (duplicates left out), the execution before and
    after, and the steps its end closed (still running when it finished) with their outcome."""

    before: Execution
    execution: Execution
    events: list[IngestEvent]
    duplicates: int
    closed_steps: list[int] = field(default_factory=list)
    closed_outcome: Outcome | None = None

    @property
    def finished(self) -> bool:
        """Whether this batch ended the execution."""
        return self.execution.status in FINAL and self.before.status not in FINAL


_COLUMNS = (
    "id, team, owner, name, kind, status, progress, step, step_name, total_steps, attempt, "
    "retry_of, error_code, error_message, error_step, error_details, created, started_at, "
    "finished_at, updated, next_seq"
)


# -- queries ---------------------------------------------------------------------------------


async def create(
    database: Database,
    *,
    team: str,
    owner: str,
    name: str,
    kind: str = "",
    total_steps: int | None = None,
    retry_of: Execution | None = None,
    id: uuid.UUID | None = None,
    now: datetime | None = None,
) -> Execution:
    created = now or datetime.now(UTC)
    execution = Execution(
        id=id or new_id(created), team=team, owner=owner, name=name, kind=kind, status="queued",
        progress=0, step=None, step_name=None, total_steps=total_steps,
        attempt=1 if retry_of is None else retry_of.attempt + 1,
        retry_of=None if retry_of is None else retry_of.id, error_code=None, error_message=None,
        error_step=None, error_details=None, created=created, started_at=None, finished_at=None,
        updated=created, next_seq=1,
    )  # fmt: skip
    await _run(database, f"INSERT INTO execution ({_COLUMNS}) VALUES ({_marks(21)})",
               *_row(execution))  # fmt: skip
    return execution


async def retry(database: Database, id: uuid.UUID, *, now: datetime | None = None) -> Execution:
    """A new attempt of a failed or cancelled execution, linked to it."""
    async with write_transaction(database):
        old = await locked(database, id)
        if old.status not in ("failed", "cancelled"):
            raise InvalidTransition(
                f"only a failed or cancelled execution can be retried; this one is {old.status}",
                status=old.status,
            )
        # One attempt per execution: two people clicking retry start one, not two. Both hold
        # the old row's lock in turn, so the second sees the first's attempt.
        rows = await _run(database, "SELECT id FROM execution WHERE retry_of = {} LIMIT 1", id)
        if rows:
            attempt = rows[0]["id"]
            raise AlreadyRetried(old.status, attempt if isinstance(attempt, uuid.UUID)
                                 else uuid.UUID(attempt))  # fmt: skip
        new = await create(
            database, team=old.team, owner=old.owner, name=old.name, kind=old.kind,
            total_steps=old.total_steps, retry_of=old, now=now,
        )  # fmt: skip
    return new


async def get(database: Database, id: uuid.UUID) -> Execution | None:
    rows = await _run(database, f"SELECT {_COLUMNS} FROM execution WHERE id = {{}}", id)
    if not rows:
        return None
    steps = await _run(
        database,
        "SELECT number, name, status, started_at, finished_at FROM execution_step "
        "WHERE execution_id = {} ORDER BY number",
        id,
    )
    return replace(_execution(rows[0]), steps=tuple(Step(**row) for row in steps))


async def team_of(database: Database, id: str) -> str | None:
    """The team of execution `id` (any text: a channel name's), None if there is none."""
    try:
        key = uuid.UUID(id)
    except ValueError:
        return None
    rows = await _run(database, "SELECT team FROM execution WHERE id = {}", key)
    return str(rows[0]["team"]) if rows else None


@dataclass(frozen=True, slots=True)
class ExecutionPage:
    items: list[Execution]
    next_cursor: str | None


async def list_executions(
    database: Database,
    teams: Sequence[str] | None,
    *,
    status: str | None = None,
    owner: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_cursor: str | None = None,
    limit: int = 50,
) -> ExecutionPage:
    """Executions of `teams` (None: of every team), newest first, keyset-paginated on
    (created, id)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
    if teams is not None and not teams:
        return ExecutionPage([], None)
    where = ["1 = 1"] if teams is None else [f"team IN ({_marks(len(teams))})"]
    args: list[Any] = [] if teams is None else list(teams)
    for clause, value in (
        ("status = {}", status),
        ("owner = {}", owner),
        ("created >= {}", since),
        ("created < {}", until),
    ):
        if value is not None:
            where.append(clause)
            args.append(value)
    if before_cursor is not None:
        created, id = decode_cursor(before_cursor)
        where.append("(created < {} OR (created = {} AND id < {}))")
        args += [created, created, id]
    rows = await _run(
        database,
        f"SELECT {_COLUMNS} FROM execution WHERE {' AND '.join(where)} "
        f"ORDER BY created DESC, id DESC LIMIT {{}}",
        *args,
        limit + 1,
    )
    items = [_execution(row) for row in rows[:limit]]
    return ExecutionPage(items, items[-1].cursor if len(rows) > limit else None)


async def logs(
    database: Database,
    id: uuid.UUID,
    *,
    level: str | None = None,
    step: int | None = None,
    after_seq: int = 0,
    limit: int = 100,
) -> list[LogLine]:
    """Log lines of an execution in order, after `after_seq` (a page's last `seq`)."""
    if not 1 <= limit <= MAX_LIMIT * 5:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT * 5}")
    where, args = ["execution_id = {}", "seq > {}"], [id, after_seq]
    if level is not None:
        where.append("level = {}")
        args.append(level)
    if step is not None:
        where.append("step = {}")
        args.append(step)
    rows = await _run(
        database,
        f"SELECT seq, time, level, step, message, data FROM execution_log "
        f"WHERE {' AND '.join(where)} ORDER BY seq LIMIT {{}}",
        *args,
        limit,
    )
    return [LogLine(**{**row, "data": _json(row["data"])}) for row in rows]


# -- ingest ----------------------------------------------------------------------------------


async def apply(
    database: Database,
    id: uuid.UUID,
    events: Sequence[IngestEvent],
    *,
    now: datetime | None = None,
) -> Applied:
    """Apply a batch of sequenced events to execution `id`, all or nothing."""
    [result] = await apply_many(database, [(id, events)], now=now)
    if isinstance(result, Exception):
        raise result
    return result


Refusal = ExecutionNotFound | SequenceGap | InvalidTransition


async def apply_many(
    database: Database,
    batches: Sequence[tuple[uuid.UUID, Sequence[IngestEvent]]],
    *,
    now: datetime | None = None,
) -> list[Applied | Refusal]:
    """Apply each execution's batch, all or nothing per execution, in one transaction: what
    each batch did, or why it was refused (the others are applied all the same).

    The executions' rows are locked together (in id order, so two callers never wait for each
    other in a cycle), and on PostgreSQL every batch is written by the same few statements
    whatever their number: an execution service reports many executions in one request.
    """
    now = now or datetime.now(UTC)
    async with write_transaction(database):
        found = {e.id: e for e in await _locked_many(database, [id for id, _ in batches])}
        results: list[Applied | Refusal] = []
        plans: list[_State] = []
        for id, events in batches:
            execution = found.get(id)
            if execution is None:
                results.append(ExecutionNotFound(id))
                continue
            try:
                state, applied, duplicates = _plan(execution, events, now)
            except (SequenceGap, InvalidTransition) as refusal:
                results.append(refusal)
                continue
            after = state.execution(now) if applied else execution
            results.append(Applied(execution, after, applied, duplicates))
            if applied:
                state.after = after
                plans.append(state)
        await _store_many(database, plans, now)
        for index, result in enumerate(results):
            if isinstance(result, Applied) and result.finished:
                outcome = CLOSED_STEP[result.execution.status]
                closed = await _close_steps(database, result.execution.id, outcome, now)
                results[index] = replace(result, closed_steps=closed, closed_outcome=outcome)
    return results


def _plan(
    execution: Execution, events: Sequence[IngestEvent], now: datetime
) -> tuple[_State, list[IngestEvent], int]:
    """What `events` do to `execution`; raises SequenceGap or InvalidTransition."""
    state = _State(execution)
    applied: list[IngestEvent] = []
    duplicates = 0
    for event in events:
        if event.seq < state.next_seq:
            duplicates += 1
            continue
        if event.seq > state.next_seq:
            raise SequenceGap(state.next_seq, event.seq, status=state.status)
        try:
            state.apply(event, now)
        except InvalidTransition as error:
            raise InvalidTransition(
                f"{error.detail}; nothing was applied",
                status=error.execution_status,
                seq=error.seq,
                expected=execution.next_seq,
            ) from None
        applied.append(event)
    return state, applied, duplicates


# A step still running when its execution ends takes the execution's outcome.
CLOSED_STEP: Mapping[str, Outcome] = {
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "skipped",
}


async def _close_steps(database: Database, id: uuid.UUID, outcome: str, now: datetime) -> list[int]:
    rows = await _run(
        database,
        "UPDATE execution_step SET status = {}, finished_at = {} "
        "WHERE execution_id = {} AND status = 'running' RETURNING number",
        outcome,
        now,
        id,
    )
    return sorted(int(row["number"]) for row in rows)


class _State:
    """An execution being changed by a batch: the columns, the steps touched, the logs."""

    def __init__(self, execution: Execution) -> None:
        self.base = execution
        self.values: dict[str, Any] = {}  # the columns this batch changes
        self.status = execution.status
        self.next_seq = execution.next_seq
        self.steps: dict[int, dict[str, Any]] = {}
        self.logs: list[tuple[Any, ...]] = []
        self.after: Execution | None = None  # the execution once the whole batch is applied

    def apply(self, event: IngestEvent, now: datetime) -> None:
        self.next_seq = event.seq + 1
        self.values["next_seq"] = self.next_seq
        if isinstance(event, Log):
            self.logs.append((self.base.id, event.seq, event.time or now, event.level,
                              event.step, event.message, json.dumps(event.data or {})))  # fmt: skip
            return
        if self.status in FINAL:
            raise InvalidTransition(
                f"the execution is {self.status}: it takes no more "
                f"{event.__struct_config__.tag} events (a retry is a new execution)",
                status=self.status,
                seq=event.seq,
            )
        if isinstance(event, StatusChange):
            self._move(event.status, event.seq, now)
        elif isinstance(event, Failure):
            self.values.update(error_code=event.code, error_message=event.message,
                               error_step=event.step, error_details=event.details)  # fmt: skip
            self._move("failed", event.seq, now)
        else:
            self._start(now)
            if isinstance(event, Progress):
                self.values["progress"] = event.progress
            elif isinstance(event, StepStarted):
                self.values.update(step=event.step, step_name=event.name)
                if event.total_steps is not None:
                    self.values["total_steps"] = event.total_steps
                self.steps[event.step] = {"name": event.name, "status": "running",
                                          "started_at": now, "finished_at": None}  # fmt: skip
            elif isinstance(event, StepFinished):
                step = self.steps.setdefault(event.step, {"name": "", "started_at": None})
                step.update(status=event.outcome, finished_at=now)

    def _start(self, now: datetime) -> None:
        if self.status == "queued":
            self._move("running", None, now)

    def _move(self, status: str, seq: int | None, now: datetime) -> None:
        if status == self.status:
            return
        if status not in NEXT_STATUS.get(self.status, ()):
            raise InvalidTransition(
                f"cannot go from {self.status} to {status}; from {self.status}: "
                f"{', '.join(sorted(NEXT_STATUS.get(self.status, ()))) or 'nothing (final)'}",
                status=self.status,
                seq=seq,
            )
        self.status = self.values["status"] = status
        if status == "running":
            self.values["started_at"] = now
        if status in FINAL:
            self.values["finished_at"] = now
            if status == "succeeded":
                self.values["progress"] = 100

    def execution(self, now: datetime) -> Execution:
        return replace(self.base, **self.values, updated=now)


async def _store_many(database: Database, plans: list[_State], now: datetime) -> None:
    if not plans:
        return
    if not isinstance(database, PostgresEngine):
        for state in plans:  # SQLite: embedded, one process; plain statements suffice
            await _store(database, state, now)
        return
    rows = [_row(state.after or state.execution(now)) for state in plans]
    columns = list(zip(*rows, strict=True))
    index = {name: i for i, name in enumerate(_COLUMN_NAMES)}
    await _run(database, _BULK_UPDATE, *(list(columns[index[name]]) for name in _UPDATED))
    steps = [
        (state.base.id, number, step.get("name", "") if step.get("started_at") else "",
         step["status"], step.get("started_at"), step["finished_at"])
        for state in plans
        for number, step in state.steps.items()
    ]  # fmt: skip
    if steps:
        await _run(database, _BULK_STEPS, *(list(column) for column in zip(*steps, strict=True)))
    logs = [row for state in plans for row in state.logs]
    if logs:
        await _run(database, _BULK_LOGS, *(list(column) for column in zip(*logs, strict=True)))


# PostgreSQL: every batch's changes in three statements, each taking one array per column.
_UPDATED = (
    "id", "status", "progress", "step", "step_name", "total_steps", "error_code",
    "error_message", "error_step", "error_details", "started_at", "finished_at", "updated",
    "next_seq",
)  # fmt: skip
_BULK_UPDATE = """
UPDATE execution AS e SET status = u.status, progress = u.progress, step = u.step,
    step_name = u.step_name, total_steps = u.total_steps, error_code = u.error_code,
    error_message = u.error_message, error_step = u.error_step,
    error_details = u.error_details::json, started_at = u.started_at,
    finished_at = u.finished_at, updated = u.updated, next_seq = u.next_seq
FROM unnest({}::uuid[], {}::text[], {}::int[], {}::int[], {}::text[], {}::int[], {}::text[],
            {}::text[], {}::int[], {}::text[], {}::timestamptz[], {}::timestamptz[],
            {}::timestamptz[], {}::bigint[])
     AS u(id, status, progress, step, step_name, total_steps, error_code, error_message,
          error_step, error_details, started_at, finished_at, updated, next_seq)
WHERE e.id = u.id
"""
# A step started in the batch is (re)written whole; one only finished keeps its name and start.
_BULK_STEPS = """
INSERT INTO execution_step (execution_id, number, name, status, started_at, finished_at)
SELECT * FROM unnest({}::uuid[], {}::int[], {}::text[], {}::text[], {}::timestamptz[],
                     {}::timestamptz[])
ON CONFLICT (execution_id, number) DO UPDATE SET
    name = CASE WHEN excluded.started_at IS NULL THEN execution_step.name
                ELSE excluded.name END,
    status = excluded.status,
    started_at = COALESCE(excluded.started_at, execution_step.started_at),
    finished_at = excluded.finished_at
"""
_BULK_LOGS = """
INSERT INTO execution_log (execution_id, seq, time, level, step, message, data)
SELECT l.execution_id, l.seq, l.time, l.level, l.step, l.message, l.data::json
FROM unnest({}::uuid[], {}::bigint[], {}::timestamptz[], {}::text[], {}::int[], {}::text[],
            {}::text[]) AS l(execution_id, seq, time, level, step, message, data)
"""


async def _store(database: Database, state: _State, now: datetime) -> None:
    values = {**state.values, "updated": now}
    if "error_details" in values:
        details = values["error_details"]
        values["error_details"] = None if details is None else json.dumps(details)
    sets = ", ".join(f"{column} = {{}}" for column in values)
    await _run(database, f"UPDATE execution SET {sets} WHERE id = {{}}", *values.values(),
               state.base.id)  # fmt: skip
    for number, step in state.steps.items():
        if step.get("started_at") is not None:  # started in this batch: (re)create the row
            await _run(
                database,
                "INSERT INTO execution_step (execution_id, number, name, status, started_at, "
                "finished_at) VALUES ({}, {}, {}, {}, {}, {}) ON CONFLICT (execution_id, number) "
                "DO UPDATE SET name = excluded.name, status = excluded.status, "
                "started_at = excluded.started_at, finished_at = excluded.finished_at",
                state.base.id, number, step["name"], step["status"], step["started_at"],
                step["finished_at"],
            )  # fmt: skip
        else:  # finished in this batch, started in an earlier one (or never announced)
            await _run(
                database,
                "INSERT INTO execution_step (execution_id, number, name, status, finished_at) "
                "VALUES ({}, {}, '', {}, {}) ON CONFLICT (execution_id, number) "
                "DO UPDATE SET status = excluded.status, finished_at = excluded.finished_at",
                state.base.id, number, step["status"], step["finished_at"],
            )  # fmt: skip
    if state.logs:
        rows = ", ".join(f"({_marks(7)})" for _ in state.logs)
        await _run(
            database,
            "INSERT INTO execution_log (execution_id, seq, time, level, step, message, data) "
            f"VALUES {rows}",
            *(value for row in state.logs for value in row),
        )


async def _locked_many(database: Database, ids: Sequence[uuid.UUID]) -> list[Execution]:
    """Executions `ids` that exist, locked in id order (PostgreSQL)."""
    if not ids:
        return []
    lock = " FOR UPDATE" if isinstance(database, PostgresEngine) else ""
    rows = await _run(
        database,
        f"SELECT {_COLUMNS} FROM execution WHERE id IN ({_marks(len(ids))}) ORDER BY id{lock}",
        *sorted(set(ids)),
    )
    return [_execution(row) for row in rows]


async def locked(database: Database, id: uuid.UUID) -> Execution:
    """Execution `id`, its row locked until the caller's transaction ends (PostgreSQL)."""
    lock = " FOR UPDATE" if isinstance(database, PostgresEngine) else ""
    rows = await _run(database, f"SELECT {_COLUMNS} FROM execution WHERE id = {{}}{lock}", id)
    if not rows:
        raise ExecutionNotFound(id)
    return _execution(rows[0])


async def _run(database: Database, sql: str, *args: Any) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = await database.run_querystring(QueryString(sql, *args))
    return rows


def _marks(count: int) -> str:
    return ", ".join("{}" for _ in range(count))


_COLUMN_NAMES = tuple(name.strip() for name in _COLUMNS.split(","))


def _row(execution: Execution) -> tuple[Any, ...]:
    values = [getattr(execution, name) for name in _COLUMN_NAMES]
    index = _COLUMN_NAMES.index("error_details")
    values[index] = None if values[index] is None else json.dumps(values[index])
    return tuple(values)


def _execution(row: Mapping[str, Any]) -> Execution:
    values = dict(row)
    for name in ("id", "retry_of"):
        if isinstance(values[name], str):
            values[name] = uuid.UUID(values[name])
    values["error_details"] = _json(values["error_details"])
    return Execution(**values)


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value

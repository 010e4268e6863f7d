"""Execution changes, each committed with the events that tell its watchers.

`db.executions` keeps the state; this module is the write side of the executions API. Every
change runs in one write transaction that also writes its `execution.*` events to the outbox
(`db.outbox`) for the `execution:<id>` channel, so a watcher never sees an event for a change
that was rolled back, nor misses one that committed.

Order on a channel: the relay publishes a channel's events in outbox id order, so a channel's
writers take turns. Everything written to `execution:<id>` is written holding that execution's
row lock (`executions.locked`); commands also go to the one `commands` channel the execution
service consumes, under a transaction-scoped advisory lock (SQLite admits one writer anyway).

Progress ticks are coalesced: within a batch only the last one is published, and at most one
per `progress_interval_s` per execution. A tick held back is published when its interval ends,
read from the database then (the latest value wins), unless the execution finished meanwhile.
Step, log, status and error events are never held back or dropped.

Completion and failure also notify the execution's owner (`db.inbox`), in the same
transaction, with a link to the execution.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, cast

import msgspec
from msgspec import Meta
from piccolo.engine.postgres import PostgresEngine
from piccolo.querystring import QueryString

from db import executions
from db.engine import DATABASE_ERRORS, Database, note_database_error, write_transaction
from db.executions import (
    CLOSED_STEP,
    FINAL,
    Applied,
    Execution,
    Failure,
    IngestEvent,
    Log,
    LogLevel,
    Outcome,
    Progress,
    Status,
    StatusChange,
    StepFinished,
    StepStarted,
    StepStatus,
)
from db.inbox import Inbox
from db.notifications import Draft
from db.outbox import OutboxEvent, Relay, enqueue
from db.times import Time
from streams.channels import COMMANDS, execution_channel
from streams.errors import Conflict, PayloadTooLarge
from streams.tasks import finish_or_cancel

log = logging.getLogger("sinal.executions")

# Any fixed number, distinct from the migration and relay locks: writers of `commands` take turns.
_COMMANDS_LOCK = 0x5167_6E61_6C02
# The producer name of the notifications this module creates (their idempotency scope).
NOTIFIER = "sinal.executions"


# -- what the API and the events show -------------------------------------------------------

CommandKind = Literal["retry", "cancel"]

ExecutionId = Annotated[str, Meta(description="The execution's id.")]
Seq = Annotated[
    int, Meta(description="The number of the ingest event that made this change (1, 2, 3, ...).")
]
StepNumber = Annotated[int, Meta(description="The step's number, from 1.")]
Progress0To100 = Annotated[int, Meta(description="Percent done, 0 to 100.")]


class ErrorView(msgspec.Struct):
    """Why an execution failed."""

    code: Annotated[str, Meta(description="A code of the execution service's (`E_OOM`).")]
    message: Annotated[str, Meta(description="What happened, for people.")]
    step: Annotated[int | None, Meta(description="The step it failed in, if any.")]
    details: Annotated[Any, Meta(description="The service's details (a JSON object), or null.")]


class StepView(msgspec.Struct):
    """One step of an execution."""

    number: StepNumber
    name: Annotated[str, Meta(description="The step's name.")]
    status: Annotated[StepStatus, Meta(description="`running`, then how it ended.")]
    started_at: Annotated[Time | None, Meta(description="When it started.")]
    finished_at: Annotated[Time | None, Meta(description="When it finished; null: not yet.")]


class ExecutionView(msgspec.Struct):
    """An execution, as the API and the events show it."""

    id: ExecutionId
    team: Annotated[str, Meta(description="The team that owns it; its members watch it.")]
    owner: Annotated[str, Meta(description="The user who started it; notified when it ends.")]
    name: Annotated[str, Meta(description="Its name, for people.")]
    kind: Annotated[str, Meta(description="Its kind, for the execution service; may be empty.")]
    status: Annotated[
        Status, Meta(description="`queued`, then `running`, then how it ended (final).")
    ]
    progress: Progress0To100
    step: Annotated[int | None, Meta(description="The number of the step running, or the last.")]
    step_name: Annotated[str | None, Meta(description="That step's name.")]
    total_steps: Annotated[int | None, Meta(description="How many steps it has, when known.")]
    attempt: Annotated[int, Meta(description="1 for the first run, 2 for its retry, ...")]
    retry_of: Annotated[str | None, Meta(description="The execution this one retries.")]
    error: Annotated[ErrorView | None, Meta(description="Why it failed; null unless failed.")]
    created: Annotated[Time, Meta(description="When it was created.")]
    started_at: Annotated[Time | None, Meta(description="When it started running.")]
    finished_at: Annotated[Time | None, Meta(description="When it finished.")]
    updated: Annotated[Time, Meta(description="When it last changed.")]
    next_seq: Annotated[
        int,
        Meta(
            description="The seq the execution service sends next: where a producer resumes "
            "after a restart."
        ),
    ]
    steps: Annotated[list[StepView], Meta(description="Its steps so far, in order.")]
    cursor: Annotated[str, Meta(description="Its position in the list (a page boundary).")]

    @classmethod
    def of(cls, e: Execution) -> ExecutionView:
        error = None
        if e.error_code is not None:
            error = ErrorView(e.error_code, e.error_message or "", e.error_step, e.error_details)
        # The statuses come from rows that only this module's writes (checked values) make.
        return cls(
            id=str(e.id), team=e.team, owner=e.owner, name=e.name, kind=e.kind,
            status=cast(Status, e.status), progress=e.progress, step=e.step,
            step_name=e.step_name, total_steps=e.total_steps, attempt=e.attempt,
            retry_of=None if e.retry_of is None else str(e.retry_of),
            error=error, created=e.created, started_at=e.started_at, finished_at=e.finished_at,
            updated=e.updated, next_seq=e.next_seq,
            steps=[StepView(s.number, s.name, cast(StepStatus, s.status), s.started_at,
                            s.finished_at)
                   for s in e.steps],
            cursor=e.cursor,
        )  # fmt: skip


class Command(msgspec.Struct):
    """A request of a team member for the execution service: retry or cancel."""

    id: str
    command: CommandKind
    execution: str
    team: str
    by: str
    retry_execution: str | None  # a retry's new attempt, queued, for the service to run
    created: datetime


# The `execution.*` events; each names its execution, and the ingest events their `seq`.


class ExecutionCreated(msgspec.Struct):
    """`execution.created`: a new execution, or a retry's new attempt (queued)."""

    execution: Annotated[ExecutionView, Meta(description="The new execution.")]


class ExecutionProgress(msgspec.Struct):
    """`execution.progress`: the execution's progress now (ticks are coalesced: at most one
    per `SINAL_PROGRESS_INTERVAL_MS`, the latest value always arrives)."""

    execution: ExecutionId
    seq: Annotated[int, Meta(description="The last ingest event applied when it was read.")]
    progress: Progress0To100


class ExecutionStepStarted(msgspec.Struct):
    """`execution.step_started`: a step began."""

    execution: ExecutionId
    seq: Seq
    step: StepNumber
    name: Annotated[str, Meta(description="The step's name.")]
    total_steps: Annotated[int | None, Meta(description="How many steps, when known.")]


class ExecutionStepFinished(msgspec.Struct):
    """`execution.step_finished`: a step ended; also each step still running when the
    execution ends, just before its final `execution.status`."""

    execution: ExecutionId
    seq: Seq
    step: StepNumber
    outcome: Annotated[
        Outcome,
        Meta(description="`skipped`: it was still running when the execution was cancelled."),
    ]


class ExecutionLog(msgspec.Struct):
    """`execution.log`: a log line of the execution."""

    execution: ExecutionId
    seq: Seq
    time: Annotated[Time, Meta(description="When it was logged: the service's time, else Sinal's.")]
    level: Annotated[LogLevel, Meta(description="The line's level.")]
    step: Annotated[int | None, Meta(description="The step it belongs to, if any.")]
    message: Annotated[str, Meta(description="The line.")]
    data: Annotated[dict[str, Any], Meta(description="Structured data of the line; may be empty.")]


class ExecutionStatus(msgspec.Struct):
    """`execution.status`: the execution's status changed, including a start implied by a
    progress or step event and the `failed` that follows an error."""

    execution: ExecutionId
    seq: Seq
    status: Annotated[Status, Meta(description="The new status.")]
    progress: Annotated[int, Meta(description="Percent done after the change.")]
    started_at: Annotated[Time | None, Meta(description="When it started running.")]
    finished_at: Annotated[Time | None, Meta(description="When it finished, once final.")]


class ExecutionError(msgspec.Struct):
    """`execution.error`: the execution failed; an `execution.status` `failed` follows."""

    execution: ExecutionId
    seq: Seq
    code: Annotated[str, Meta(description="A code of the execution service's (`E_OOM`).")]
    message: Annotated[str, Meta(description="What happened, for people.")]
    step: Annotated[int | None, Meta(description="The step it failed in, if any.")]
    details: Annotated[Any, Meta(description="The service's details (a JSON object), or null.")]


class ExecutionCommand(msgspec.Struct):
    """`execution.command`: a team member asked to retry or cancel the execution."""

    execution: ExecutionId
    command: Annotated[CommandKind, Meta(description="What was asked.")]
    id: Annotated[str, Meta(description="The command's id.")]
    by: Annotated[str, Meta(description="Who asked.")]
    retry_execution: Annotated[
        str | None, Meta(description="For a retry: the new attempt's id (see `execution.created`).")
    ]
    created: Annotated[Time, Meta(description="When it was asked.")]


class ExecutionConflict(Conflict):
    """An execution with this id exists and differs from the one asked for."""

    def __init__(self, id: uuid.UUID) -> None:
        super().__init__(
            f"execution {id} exists with another team, owner, name or kind", field="id"
        )


@dataclass(frozen=True, slots=True)
class Spec:
    """What the execution service asks for when it creates an execution."""

    team: str
    owner: str
    name: str
    kind: str = ""
    total_steps: int | None = None
    id: uuid.UUID | None = None  # chosen by the caller: a retried create is then idempotent


_encode = msgspec.json.Encoder().encode


class Tracker:
    """The writes of the executions API. Reads go straight to `db.executions`.

    Owns the task that publishes held-back progress ticks: `start()` and `stop()` from the
    app's lifespan.
    """

    def __init__(
        self,
        database: Database,
        relay: Relay,
        inbox: Inbox,
        *,
        max_event_bytes: int,
        progress_interval_s: float = 0.1,
    ) -> None:
        self.database = database
        self.relay = relay
        self.inbox = inbox
        self.max_event_bytes = max_event_bytes
        self.throttle = ProgressThrottle(progress_interval_s)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._publish_held_back(), name="sinal-progress")

    async def stop(self, timeout_s: float = 5.0) -> None:
        if self._task is not None:
            await finish_or_cancel(self._task, self._stopping, timeout_s)
            self._task = None

    # -- writes ------------------------------------------------------------------------------

    async def create(self, spec: Spec) -> tuple[Execution, bool]:
        """The new execution and True; or, for an `id` already created with the same spec, that
        execution and False (a retried create). Raises ExecutionConflict when it differs."""
        if spec.id is not None:
            existing = await executions.get(self.database, spec.id)
            if existing is not None:
                return _replayed(existing, spec), False
        try:
            async with write_transaction(self.database):
                execution = await executions.create(
                    self.database, team=spec.team, owner=spec.owner, name=spec.name,
                    kind=spec.kind, total_steps=spec.total_steps, id=spec.id,
                )  # fmt: skip
                await enqueue(self.database, [self._created(execution)])
        except DATABASE_ERRORS as error:
            if spec.id is None or "unique" not in str(error).lower():
                raise
            # A concurrent retry of the same create committed first.
            existing = await executions.get(self.database, spec.id)
            if existing is None:
                raise
            return _replayed(existing, spec), False
        self.relay.wake()
        return execution, True

    async def ingest_many(
        self, batches: Sequence[tuple[uuid.UUID, Sequence[IngestEvent]]]
    ) -> list[Applied | executions.Refusal]:
        """`executions.apply_many`, publishing what each batch did (see the module docstring),
        in one transaction."""
        outgoing: list[OutboxEvent] = []
        async with write_transaction(self.database):
            results = await executions.apply_many(self.database, batches)
            for result in results:
                if isinstance(result, Exception):
                    continue
                outgoing += self._ingest_events(result)
                if result.finished:
                    self.throttle.forget(result.execution.id)
                    await self._notify_owner(result.execution)
            await enqueue(self.database, outgoing)
        if outgoing:
            self.relay.wake()
        if self.throttle.has_pending():
            self.throttle.changed.set()  # the publisher task looks at the new due time
        return results

    async def retry(self, id: uuid.UUID, by: str) -> tuple[Command, Execution]:
        """A new attempt of a failed or cancelled execution, and the command that asks the
        execution service to run it. Raises InvalidTransition for any other execution."""
        async with write_transaction(self.database):
            await self._take_commands_turn()
            new = await executions.retry(self.database, id)
            old = await executions.locked(self.database, id)
            command = await self._command(old, "retry", by, retry_execution=new.id)
            await enqueue(self.database, [self._created(new)])
        self.relay.wake()
        return command, new

    async def cancel(self, id: uuid.UUID, by: str) -> Command:
        """Ask the execution service to cancel: the execution is cancelled when the service
        reports it. Raises InvalidTransition when it has already finished."""
        async with write_transaction(self.database):
            await self._take_commands_turn()
            execution = await executions.locked(self.database, id)
            if execution.status in FINAL:
                raise executions.InvalidTransition(
                    f"the execution is {execution.status}: there is nothing to cancel",
                    status=execution.status,
                )
            command = await self._command(execution, "cancel", by)
        self.relay.wake()
        return command

    # -- events ------------------------------------------------------------------------------

    def _ingest_events(self, applied: Applied) -> list[OutboxEvent]:
        after = applied.execution
        channel = execution_channel(str(after.id))
        id = str(after.id)
        last_progress = max(
            (i for i, e in enumerate(applied.events) if isinstance(e, Progress)), default=-1
        )
        status = applied.before.status
        outgoing: list[OutboxEvent] = []
        progressed = False

        def status_event(new: Status, seq: int) -> None:
            nonlocal status
            if new != status:
                status = new
                if new in FINAL:  # the steps its end closed, then the end
                    outcome = applied.closed_outcome or CLOSED_STEP[new]
                    for step in applied.closed_steps:
                        closed = ExecutionStepFinished(id, seq, step, outcome)
                        outgoing.append(self._event(channel, "execution.step_finished", closed))
                outgoing.append(self._event(channel, "execution.status", ExecutionStatus(
                    id, seq, new, after.progress, after.started_at, after.finished_at,
                )))  # fmt: skip

        for index, event in enumerate(applied.events):
            if isinstance(event, Log):
                outgoing.append(self._event(channel, "execution.log", ExecutionLog(
                    id, event.seq, event.time or after.updated, event.level, event.step,
                    event.message, event.data or {},
                )))  # fmt: skip
                continue
            if isinstance(event, StatusChange):
                status_event(event.status, event.seq)
                continue
            if isinstance(event, Failure):
                outgoing.append(self._event(channel, "execution.error", ExecutionError(
                    id, event.seq, event.code, event.message, event.step, event.details,
                )))  # fmt: skip
                status_event("failed", event.seq)
                continue
            status_event("running", event.seq)  # progress and steps start a queued execution
            if isinstance(event, Progress):
                # The latest value wins: earlier ticks of the batch are never published, and
                # the last one only if the execution's interval allows; else later (see above).
                if index == last_progress and self.throttle.admit(after.id):
                    progressed = True
                    outgoing.append(
                        self._event(
                            channel,
                            "execution.progress",
                            ExecutionProgress(id, event.seq, event.progress),
                        )
                    )
            elif isinstance(event, StepStarted):
                outgoing.append(self._event(channel, "execution.step_started", ExecutionStepStarted(
                    id, event.seq, event.step, event.name, after.total_steps,
                )))  # fmt: skip
            elif isinstance(event, StepFinished):
                outgoing.append(self._event(channel, "execution.step_finished",
                                            ExecutionStepFinished(id, event.seq, event.step,
                                                              event.outcome)))  # fmt: skip
        if not progressed and after.status not in FINAL and self.throttle.catch_up(after.id):
            # A tick held back earlier: the current value, now that the interval has ended.
            latest = ExecutionProgress(id, after.next_seq - 1, after.progress)
            outgoing.append(self._event(channel, "execution.progress", latest))
        return outgoing

    def _created(self, execution: Execution) -> OutboxEvent:
        return self._event(
            execution_channel(str(execution.id)),
            "execution.created",
            ExecutionCreated(ExecutionView.of(execution)),
        )

    def _event(self, channel: str, type: str, payload: msgspec.Struct) -> OutboxEvent:
        data = _encode(payload)
        if len(data) > self.max_event_bytes:
            raise PayloadTooLarge(
                f"the {type} event is {len(data)} bytes; the limit is {self.max_event_bytes} "
                "(SINAL_MAX_PAYLOAD_BYTES)",
            )
        return OutboxEvent(channel, type, data)

    async def _command(
        self,
        execution: Execution,
        kind: CommandKind,
        by: str,
        *,
        retry_execution: uuid.UUID | None = None,
    ) -> Command:
        created = datetime.now(UTC)
        command = Command(
            id=str(uuid.uuid4()),
            command=kind,
            execution=str(execution.id),
            team=execution.team,
            by=by,
            retry_execution=None if retry_execution is None else str(retry_execution),
            created=created,
        )
        await self.database.run_querystring(
            QueryString(
                "INSERT INTO execution_command (id, execution_id, command, by_user, "
                "retry_execution, created) VALUES ({}, {}, {}, {}, {}, {})",
                uuid.UUID(command.id), execution.id, kind, by, retry_execution, created,
            )
        )  # fmt: skip
        watched = ExecutionCommand(
            command.execution, kind, command.id, by, command.retry_execution, created
        )
        await enqueue(
            self.database,
            [
                self._event(execution_channel(command.execution), "execution.command", watched),
                self._event(COMMANDS, "execution.command", command),
            ],
        )
        return command

    async def _take_commands_turn(self) -> None:
        if isinstance(self.database, PostgresEngine):
            await self.database.run_querystring(
                QueryString("SELECT pg_advisory_xact_lock({})", _COMMANDS_LOCK)
            )

    async def _notify_owner(self, execution: Execution) -> None:
        """Tell the owner the execution finished, once (the key is the execution and status)."""
        title, severity, body = {
            "succeeded": (f"{execution.name} succeeded", "success", ""),
            "failed": (
                f"{execution.name} failed",
                "error",
                f"{execution.error_code}: {execution.error_message}"
                if execution.error_code
                else "",
            ),
            "cancelled": (f"{execution.name} was cancelled", "warning", ""),
        }[execution.status]
        draft = Draft(
            type=f"execution.{execution.status}",
            title=title[:512],
            body=body[:8192],
            data={
                "execution": str(execution.id),
                "team": execution.team,
                "status": execution.status,
                "attempt": execution.attempt,
                "error_code": execution.error_code,
            },
            severity=severity,
            link=f"/executions/{execution.id}",
        )
        await self.inbox.create(
            [execution.owner],
            draft,
            producer=NOTIFIER,
            idempotency_key=f"{execution.id}:{execution.status}",
        )

    # -- held-back progress ------------------------------------------------------------------

    async def _publish_held_back(self) -> None:
        throttle = self.throttle
        while not self._stopping.is_set():
            due_in = throttle.due_in()
            throttle.changed.clear()
            if due_in is None or due_in > 0:
                waits = [
                    asyncio.ensure_future(throttle.changed.wait()),
                    asyncio.ensure_future(self._stopping.wait()),
                ]
                try:
                    await asyncio.wait(waits, timeout=due_in, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for wait in waits:
                        wait.cancel()
                continue
            due = throttle.take_due()
            try:
                await self._publish_progress(due)
            except DATABASE_ERRORS as error:
                note_database_error()
                log.warning("held-back progress not published, will retry: %s", error)
                throttle.hold(due)
                await asyncio.sleep(throttle.interval_s)

    async def _publish_progress(self, ids: list[uuid.UUID]) -> None:
        """The current progress of running executions `ids`, read under their row locks so
        it is ordered with the ingest of the same executions."""
        if not ids:
            return
        marks = ", ".join("{}" for _ in ids)
        lock = " FOR UPDATE" if isinstance(self.database, PostgresEngine) else ""
        async with write_transaction(self.database):
            rows = await self.database.run_querystring(
                QueryString(
                    f"SELECT id, status, progress, next_seq FROM execution WHERE id IN ({marks}) "
                    f"ORDER BY id{lock}",
                    *sorted(ids),
                )
            )
            outgoing = [
                self._event(
                    execution_channel(str(row["id"])),
                    "execution.progress",
                    ExecutionProgress(
                        str(row["id"]), int(row["next_seq"]) - 1, int(row["progress"])
                    ),
                )
                for row in rows
                if row["status"] not in FINAL
            ]
            await enqueue(self.database, outgoing)
        if outgoing:
            self.relay.wake()


class ProgressThrottle:
    """At most one published progress tick per execution per `interval_s`.

    A tick held back goes out with the execution's next batch once its interval has ended
    (`catch_up`): a busy execution reports again within milliseconds, and its batch's
    transaction already holds the row lock the event needs. Only an execution that went quiet
    is left to the publisher task, `grace_s` after its interval ended (`take_due`).
    """

    # Beyond this many executions remembered, forget the ones quiet for an interval.
    PRUNE_AT = 10_000

    def __init__(self, interval_s: float, grace_s: float | None = None) -> None:
        self.interval_s = interval_s
        self.grace_s = interval_s if grace_s is None else grace_s
        self.changed = asyncio.Event()
        self._last: dict[uuid.UUID, float] = {}  # when each execution's last tick went out
        self._held: dict[uuid.UUID, float] = {}  # held back: when it is due

    def admit(self, id: uuid.UUID, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        last = self._last.get(id)
        if last is None or now - last >= self.interval_s:
            self._held.pop(id, None)
            self._last[id] = now
            if len(self._last) > self.PRUNE_AT:
                self._prune(now)
            return True
        self._held.setdefault(id, last + self.interval_s)
        return False

    def catch_up(self, id: uuid.UUID, now: float | None = None) -> bool:
        """Whether a tick of `id` held back is due now; if so it counts as published."""
        at = self._held.get(id)
        if at is None:
            return False
        now = time.monotonic() if now is None else now
        if at > now:
            return False
        del self._held[id]
        self._last[id] = now
        return True

    def forget(self, id: uuid.UUID) -> None:
        """The execution finished: its status event carries the final progress."""
        self._last.pop(id, None)
        self._held.pop(id, None)

    def has_pending(self) -> bool:
        return bool(self._held)

    def remembered(self) -> int:
        """How many executions the throttle keeps state for."""
        return len(self._last)

    def due_in(self, now: float | None = None) -> float | None:
        if not self._held:
            return None
        now = time.monotonic() if now is None else now
        return max(0.0, min(self._held.values()) + self.grace_s - now)

    def take_due(self, now: float | None = None) -> list[uuid.UUID]:
        """Executions whose held-back tick no batch has carried, `grace_s` after it was due."""
        now = time.monotonic() if now is None else now
        due = [id for id, at in self._held.items() if at + self.grace_s <= now]
        for id in due:
            del self._held[id]
            self._last[id] = now
        return due

    def hold(self, ids: list[uuid.UUID]) -> None:
        """Publishing `ids` failed: they are due again after an interval (and the grace)."""
        at = time.monotonic() + self.interval_s
        for id in ids:
            self._held.setdefault(id, at)

    def _prune(self, now: float) -> None:
        quiet = [id for id, at in self._last.items()
                 if now - at >= self.interval_s and id not in self._held]  # fmt: skip
        for id in quiet:
            del self._last[id]


def _replayed(existing: Execution, spec: Spec) -> Execution:
    asked = (spec.team, spec.owner, spec.name, spec.kind)
    if (existing.team, existing.owner, existing.name, existing.kind) != asked:
        raise ExecutionConflict(existing.id)
    return existing

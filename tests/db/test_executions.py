"""Executions on SQLite and PostgreSQL: sequenced ingest, transitions, steps, logs, lists."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import anyio
import msgspec
import pytest

from db import executions
from db.engine import Database
from db.executions import (
    AlreadyRetried,
    ExecutionNotFound,
    Failure,
    IngestEvent,
    InvalidTransition,
    Log,
    Progress,
    SequenceGap,
    StatusChange,
    StepFinished,
    StepStarted,
)
from db.tables import Notification

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def db(database: str) -> Database:
    engine: Database = Notification._meta.db
    return engine


async def new(
    db: Database,
    team: str = "red",
    *,
    kind: str = "",
    total_steps: int | None = None,
    now: datetime | None = None,
) -> executions.Execution:
    return await executions.create(
        db, team=team, owner="alice", name="nightly build", kind=kind, total_steps=total_steps,
        now=now,
    )  # fmt: skip


async def test_a_run_from_queued_to_succeeded(db: Database) -> None:
    execution = await new(db, kind="build", total_steps=2)
    assert (execution.status, execution.next_seq, execution.attempt) == ("queued", 1, 1)
    applied = await executions.apply(
        db,
        execution.id,
        [
            StepStarted(seq=1, step=1, name="compile"),  # starts the execution
            Progress(seq=2, progress=40),
            Log(seq=3, message="compiled 120 files", step=1, data={"files": 120}),
            StepFinished(seq=4, step=1),
            StepStarted(seq=5, step=2, name="test"),
            StepFinished(seq=6, step=2, outcome="skipped"),
            StatusChange(seq=7, status="succeeded"),
        ],
        now=T0,
    )
    assert len(applied.events) == 7
    stored = await executions.get(db, execution.id)
    assert stored is not None
    assert (stored.status, stored.progress, stored.step, stored.step_name) == (
        "succeeded", 100, 2, "test",
    )  # fmt: skip
    assert (stored.started_at, stored.finished_at, stored.next_seq) == (T0, T0, 8)
    assert [(s.number, s.name, s.status) for s in stored.steps] == [
        (1, "compile", "succeeded"),
        (2, "test", "skipped"),
    ]
    [line] = await executions.logs(db, execution.id)
    assert (line.seq, line.level, line.step, line.message, line.data) == (
        3, "info", 1, "compiled 120 files", {"files": 120},
    )  # fmt: skip
    assert (applied.execution.status, applied.execution.next_seq) == ("succeeded", 8)


async def test_a_retried_batch_applies_only_what_is_new(db: Database) -> None:
    execution = await new(db)
    batch: list[IngestEvent] = [StatusChange(seq=1, status="running"), Progress(seq=2, progress=5)]
    await executions.apply(db, execution.id, batch)
    again = await executions.apply(db, execution.id, [*batch, Progress(seq=3, progress=9)])
    assert (again.duplicates, [e.seq for e in again.events]) == (2, [3])
    assert again.execution.progress == 9
    nothing = await executions.apply(db, execution.id, batch)
    assert (nothing.duplicates, nothing.events, nothing.execution.next_seq) == (2, [], 4)


async def test_a_gap_refuses_the_whole_batch_and_says_what_comes_next(db: Database) -> None:
    execution = await new(db)
    with pytest.raises(SequenceGap) as gap:
        await executions.apply(
            db, execution.id, [StatusChange(seq=1, status="running"), Progress(seq=3, progress=1)]
        )
    assert (gap.value.expected, gap.value.got) == (2, 3)
    stored = await executions.get(db, execution.id)
    assert stored is not None
    assert (stored.status, stored.next_seq) == ("queued", 1)  # nothing of the batch stayed


@pytest.mark.parametrize(
    ("events", "status"),
    [
        ([StatusChange(seq=1, status="succeeded")], "queued"),  # never ran
        ([StatusChange(seq=1, status="cancelled"), Progress(seq=2, progress=3)], "cancelled"),
        (
            [
                StatusChange(seq=1, status="running"),
                StatusChange(seq=2, status="failed"),
                StatusChange(seq=3, status="running"),
            ],
            "failed",
        ),
    ],
)
async def test_invalid_transitions_are_refused(
    db: Database, events: list[IngestEvent], status: str
) -> None:
    execution = await new(db)
    with pytest.raises(InvalidTransition) as refused:
        await executions.apply(db, execution.id, events)
    assert refused.value.execution_status == status
    assert refused.value.seq == events[-1].seq


async def test_an_error_fails_the_execution_with_its_details_and_logs_still_come(
    db: Database,
) -> None:
    execution = await new(db)
    await executions.apply(
        db,
        execution.id,
        [
            StepStarted(seq=1, step=3, name="deploy", total_steps=4),
            Failure(
                seq=2,
                code="E_TIMEOUT",
                message="deploy timed out after 300 s",
                step=3,
                details={"host": "web-2", "attempts": 3},
            ),
            Log(seq=3, level="error", message="rolled back", step=3),  # logs trail a failure
        ],
        now=T0,
    )
    stored = await executions.get(db, execution.id)
    assert stored is not None
    assert (stored.status, stored.error_code, stored.error_step, stored.total_steps) == (
        "failed", "E_TIMEOUT", 3, 4,
    )  # fmt: skip
    assert stored.error_details == {"host": "web-2", "attempts": 3}
    assert stored.finished_at == T0
    assert [line.message for line in await executions.logs(db, execution.id, level="error")] == [
        "rolled back"
    ]


async def test_a_retry_is_a_new_attempt_linked_to_the_old(db: Database) -> None:
    execution = await new(db, kind="deploy", total_steps=4)
    with pytest.raises(InvalidTransition):
        await executions.retry(db, execution.id)  # queued: nothing to retry
    await executions.apply(db, execution.id, [Failure(seq=1, code="E", message="boom")])
    second = await executions.retry(db, execution.id)
    assert (second.attempt, second.retry_of, second.status) == (2, execution.id, "queued")
    assert (second.team, second.kind, second.total_steps) == ("red", "deploy", 4)
    stored = await executions.get(db, second.id)
    assert stored is not None
    assert stored.retry_of == execution.id
    with pytest.raises(AlreadyRetried) as again:  # one attempt per execution
        await executions.retry(db, execution.id)
    assert again.value.attempt == second.id
    with pytest.raises(ExecutionNotFound):
        await executions.retry(db, uuid.uuid4())
    with pytest.raises(ExecutionNotFound):
        await executions.apply(db, uuid.uuid4(), [Progress(seq=1, progress=1)])


async def test_concurrent_batches_of_one_execution_apply_in_turn(db: Database) -> None:
    """Two producers racing with the same events: each event is applied exactly once."""
    execution = await new(db)
    events: list[IngestEvent] = [Log(seq=n, message=f"line {n}") for n in range(1, 41)]
    totals: list[int] = []

    async def send(batch: list[IngestEvent]) -> None:
        for start in range(0, len(batch), 10):
            applied = await executions.apply(db, execution.id, batch[: start + 10])
            totals.append(len(applied.events))

    async with anyio.create_task_group() as group:
        group.start_soon(send, events)
        group.start_soon(send, events)
    assert sum(totals) == 40
    lines = await executions.logs(db, execution.id, limit=100)
    assert [line.seq for line in lines] == list(range(1, 41))


async def test_logs_filter_and_page(db: Database) -> None:
    execution = await new(db)
    events: list[IngestEvent] = [
        Log(seq=n, message=f"m{n}", level="warning" if n % 3 == 0 else "info", step=n % 2 + 1)
        for n in range(1, 11)
    ]
    await executions.apply(db, execution.id, events)
    first = await executions.logs(db, execution.id, limit=4)
    rest = await executions.logs(db, execution.id, after_seq=first[-1].seq, limit=100)
    assert [line.seq for line in first + rest] == list(range(1, 11))
    assert [line.seq for line in await executions.logs(db, execution.id, level="warning")] == [
        3, 6, 9,
    ]  # fmt: skip
    assert [line.seq for line in await executions.logs(db, execution.id, step=1)] == [
        2,
        4,
        6,
        8,
        10,
    ]


async def test_lists_filter_by_team_status_owner_and_time_and_page_stably(db: Database) -> None:
    made = [await new(db, now=T0 + timedelta(minutes=i)) for i in range(5)]
    other_team = await new(db, team="blue", now=T0)
    await executions.apply(db, made[1].id, [StatusChange(seq=1, status="running")])
    page = await executions.list_executions(db, ["red"], limit=2)
    seen = [e.id for e in page.items]
    while page.next_cursor:
        await new(db, now=T0 + timedelta(hours=1))  # newer arrivals do not shift pages
        page = await executions.list_executions(
            db, ["red"], limit=2, before_cursor=page.next_cursor
        )
        seen += [e.id for e in page.items]
    assert seen == [e.id for e in reversed(made)]
    running = await executions.list_executions(db, ["red", "blue"], status="running")
    assert [e.id for e in running.items] == [made[1].id]
    window = await executions.list_executions(
        db, ["red"], since=T0 + timedelta(minutes=1), until=T0 + timedelta(minutes=3)
    )
    assert [e.id for e in window.items] == [made[2].id, made[1].id]
    assert (await executions.list_executions(db, ["blue"])).items[0].id == other_team.id
    assert (await executions.list_executions(db, [])).items == []
    assert (await executions.list_executions(db, ["red"], owner="bob")).items == []


def test_the_ingest_protocol_is_a_tagged_union() -> None:
    decoded = msgspec.json.decode(
        b'[{"type": "progress", "seq": 1, "progress": 50},'
        b' {"type": "error", "seq": 2, "code": "E", "message": "m", "details": {"x": 1}}]',
        type=list[IngestEvent],
    )
    assert decoded == [
        Progress(seq=1, progress=50),
        Failure(seq=2, code="E", message="m", details={"x": 1}),
    ]
    for bad in (
        b'[{"type": "progress", "seq": 0, "progress": 5}]',
        b'[{"type": "progress", "seq": 1, "progress": 101}]',
        b'[{"type": "teleport", "seq": 1}]',
        b'[{"type": "log", "seq": 1, "message": "m", "colour": "red"}]',
    ):
        with pytest.raises(msgspec.ValidationError):
            msgspec.json.decode(bad, type=list[IngestEvent])

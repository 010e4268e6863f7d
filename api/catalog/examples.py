"""One example of each event's `data`, built from the server's own types (so the type checker
and the tests hold them to the schemas), for the catalog's renderings."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from api.control import NodeStats
from api.series import SeriesPoint
from db.announcements import AnnouncementView, Broadcast
from db.inbox import (
    NotificationCreated,
    NotificationsChanged,
    NotificationsReadAll,
    NotificationView,
)
from db.notifications import encode_cursor
from db.tables import Severity
from db.tracking import (
    ExecutionCommand,
    ExecutionCreated,
    ExecutionError,
    ExecutionLog,
    ExecutionProgress,
    ExecutionStatus,
    ExecutionStepFinished,
    ExecutionStepStarted,
    ExecutionView,
)
from streams.disconnect import disconnect_data
from streams.frames import StreamReady, StreamReset

USER = "alice"
EXECUTION_ID = "01a21214-e1ac-7f4e-9c1b-3d5e8f2a6b70"
RETRY_ID = "01a21214-f087-7a31-8e2d-6c4b9a1f0e53"
NOTIFICATION_ID = "01a23360-e879-73ab-84db-df49172e850d"
# The moment of the examples' events (their `ts`), milliseconds since the epoch.
MS = 1_796_158_318_729
_NOW = datetime(2026, 12, 1, 20, 51, 58, 729_412, tzinfo=UTC)


def at(offset_ms: int = 0) -> datetime:
    return _NOW + timedelta(milliseconds=offset_ms)


READY = StreamReady([f"notifications:{USER}", "broadcast", f"execution:{EXECUTION_ID}"])
RESET = StreamReset([f"notifications:{USER}"], "trimmed")
DISCONNECT = disconnect_data("expired")

NOTIFICATION = NotificationView(
    id=NOTIFICATION_ID,
    user=USER,
    type="report.ready",
    title="Report ready",
    body="Your November report is ready.",
    data={"report": "2026-11"},
    severity=Severity.info,
    link="/reports/2026-11",
    created=at(-16),
    read_at=None,
    dismissed_at=None,
    expires_at=None,
    state="unread",
    cursor=encode_cursor(at(-16), uuid.UUID(NOTIFICATION_ID)),
)
NOTIFICATION_CREATED = NotificationCreated(NOTIFICATION, unread=4)
NOTIFICATION_READ = NotificationsChanged([NOTIFICATION_ID], unread=3)
NOTIFICATION_UNREAD = NotificationsChanged([NOTIFICATION_ID], unread=4)
NOTIFICATION_DISMISSED = NotificationsChanged([NOTIFICATION_ID], unread=3)
NOTIFICATION_READ_ALL = NotificationsReadAll(marked=3, before=NOTIFICATION.cursor, unread=0)

BROADCAST = Broadcast(
    AnnouncementView(
        id=uuid.UUID("01a23361-0c2e-7d10-9f3a-5b8e2c4d6a19"),
        title="Maintenance tonight",
        body="Sinal restarts at 22:00 UTC; pages reconnect by themselves.",
        severity=Severity.warning,
        link=None,
        created=at(-12),
        expires_at=at(3_600_000),
    )
)

EXECUTION = ExecutionView(
    id=EXECUTION_ID,
    team="ml",
    owner=USER,
    name="train model",
    kind="training",
    status="queued",
    progress=0,
    step=None,
    step_name=None,
    total_steps=2,
    attempt=1,
    retry_of=None,
    error=None,
    created=at(-20),
    started_at=None,
    finished_at=None,
    updated=at(-20),
    next_seq=1,
    steps=[],
    cursor=encode_cursor(at(-20), uuid.UUID(EXECUTION_ID)),
)
EXECUTION_CREATED = ExecutionCreated(EXECUTION)
EXECUTION_STATUS = ExecutionStatus(EXECUTION_ID, 6, "failed", 40, at(-5_000), at(-3))
EXECUTION_PROGRESS = ExecutionProgress(EXECUTION_ID, 2, 40)
EXECUTION_STEP_STARTED = ExecutionStepStarted(EXECUTION_ID, 1, 1, "fetch", 2)
EXECUTION_STEP_FINISHED = ExecutionStepFinished(EXECUTION_ID, 4, 1, "succeeded")
EXECUTION_LOG = ExecutionLog(
    EXECUTION_ID, 3, at(-2_000), "info", 1, "fetched 1200 rows", {"rows": 1200}
)
EXECUTION_ERROR = ExecutionError(EXECUTION_ID, 6, "E_OOM", "out of memory", 2, {"exit_code": 137})
EXECUTION_COMMAND = ExecutionCommand(
    EXECUTION_ID, "retry", "cb65d417-4b7b-482d-aa80-4904051a1d73", USER, RETRY_ID, at(-1)
)
ADMIN_STATS = NodeStats(
    node="72dc16fe4801",
    name="sinal-1",
    at="2026-12-01T20:51:58.729Z",
    connections={"sse": 1210, "longpoll": 35, "ws": 804},
    events_in=18_204,
    deliveries=96_410,
    resets=3,
    slow_consumer_closes=0,
    outbox_pending=0,
    point=SeriesPoint(
        1796201518,
        1210,
        35,
        804,
        40.0,
        40.0,
        2162.0,
        0.0031,
        0.0224,
        0.0,
        0.0,
        0.0,
        96.0,
        0.0,
        3.0,
        0.0,
    ),
)

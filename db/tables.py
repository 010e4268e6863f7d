"""Piccolo tables. The schema itself is created by the migrations in `db/migrations/`.

Tables are bound to an engine at run time with `db.engine.bind(engine)`: Piccolo keeps one
engine per table class, and Sinal never reads `piccolo_conf.py` or the environment for it.
"""

from __future__ import annotations

import enum

from piccolo.columns import JSON, UUID, Timestamptz, Varchar
from piccolo.columns.defaults.timestamptz import TimestamptzNow
from piccolo.table import Table


class Severity(enum.StrEnum):
    """How prominently the pages show a notification or an announcement."""

    info = "info"
    success = "success"
    warning = "warning"
    error = "error"


class Notification(Table, tablename="notification"):
    """One notification for one user.

    `id` is a UUID, time-ordered (UUIDv7 layout, see `db.notifications.new_id`): it appears in
    public URLs without leaking volume or inviting enumeration, the producer side can know it
    before the insert (outbox rows, batch creates), and its time ordering keeps PostgreSQL's
    B-tree inserts local, which a random UUIDv4 would not.

    The column is `user_id`, not `user`: `user` is reserved in PostgreSQL.
    """

    id = UUID(primary_key=True)
    user_id = Varchar(length=128, index=False)
    type = Varchar(length=128)
    title = Varchar(length=512)
    body = Varchar(length=8192, default="")
    data = JSON(default="{}")
    severity = Varchar(length=16, choices=Severity, default=Severity.info)
    link = Varchar(length=2048, null=True, default=None)
    created = Timestamptz(default=TimestamptzNow())
    read_at = Timestamptz(null=True, default=None)
    dismissed_at = Timestamptz(null=True, default=None)
    expires_at = Timestamptz(null=True, default=None)
    # Unique per (producer, idempotency_key); both NULL for creates without a key.
    producer = Varchar(length=128, null=True, default=None)
    idempotency_key = Varchar(length=255, null=True, default=None)


TABLES: tuple[type[Table], ...] = (Notification,)

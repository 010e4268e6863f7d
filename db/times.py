"""Times as both databases keep them: timezone-aware, stored in UTC.

SQLite stores a time as UTC text and compares it as text, so a naive time would be taken for
UTC without a word; every time a query writes or compares is checked here first.
(`db.notifications` has its own copy of `aware`, older than this module.)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import msgspec

# A time in a view or an event: timezone-aware, so that its JSON Schema says `date-time` (RFC
# 3339) and decoding one (the tests) insists on the offset. Encoding is unchanged.
Time = Annotated[datetime, msgspec.Meta(tz=True)]


def aware(value: datetime, name: str) -> datetime:
    """`value`, or ValueError naming `name` if it has no timezone."""
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value


def now_or(now: datetime | None) -> datetime:
    """`now` (checked), or the current time; microseconds kept, as PostgreSQL keeps them."""
    return datetime.now(UTC) if now is None else aware(now, "now")

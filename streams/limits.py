"""What Sinal accepts of any input, whatever the route or the database behind it.

Each limit is one the stores would otherwise enforce differently, or not at all, and then as a
500: PostgreSQL refuses NUL in text and integers past a column's width where SQLite takes both,
times whose UTC form falls outside years 1-9999 overflow before they reach either, and JSON
nested about 1,000 deep exhausts the decoder's recursion.
"""

from __future__ import annotations

from datetime import UTC, datetime

MAX_DEPTH = 64  # JSON nesting (objects and arrays) of a request body or an action message
MAX_INT32 = 2**31 - 1  # PostgreSQL `integer` columns: step numbers, progress, total steps
MAX_INT64 = 2**63 - 1  # PostgreSQL `bigint` columns: sequence numbers
NUL = "\x00"


def utc_problem(value: datetime) -> str | None:
    """Why `value` cannot be stored, or None: it needs a timezone and a UTC form."""
    if value.tzinfo is None:
        return "needs a timezone (e.g. a trailing Z)"
    try:
        value.astimezone(UTC)
    except OverflowError:
        return "is outside years 1-9999 once converted to UTC"
    return None

"""Why the server ends a connection on its own initiative, and how each transport says so.

One vocabulary for every transport (docs/api.md, "Disconnects"): an SSE stream gets
`event: disconnect` with `{"reason", "reconnect"[, "retry_after"]}` and no `id:` line, so the
cursor does not move; the action WebSocket closes with the code of the reason; a long-poll
simply answers early. The reasons:

- `shutdown`: the process is stopping; reconnect (elsewhere).
- `expired`: the credential that opened the connection expired (plus the grace); get a fresh
  token or ticket, then reconnect with the cursor.
- `kicked`: an administrator ended the connection; reconnecting is allowed.
- `revoked`: the user's tokens were revoked; do not reconnect with the same token.
- `limit`: a runtime limit; reconnect after `retry_after` seconds.

Expiry costs one timer per connection (`close_at`), never a task: a task per idle stream is
memory and wake-ups the hot path does not need.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any, Literal, get_args

DisconnectReason = Literal["shutdown", "expired", "kicked", "revoked", "limit"]
REASONS: frozenset[str] = frozenset(get_args(DisconnectReason))

# The action WebSocket's close code for each reason. 1001 (going away, RFC 6455) for shutdown,
# as every WebSocket client already understands it; the others in the range RFC 6455 leaves to
# applications (4000-4999).
CLOSE_CODES: dict[DisconnectReason, int] = {
    "shutdown": 1001,
    "expired": 4001,
    "kicked": 4002,
    "revoked": 4003,
    "limit": 4004,
}
# The close frame's reason text: the reason's word, which clients may match on.
CLOSE_TEXTS: dict[DisconnectReason, str] = {
    "shutdown": "server shutting down",
    "expired": "expired",
    "kicked": "kicked",
    "revoked": "revoked",
    "limit": "limit",
}


def reconnect_allowed(reason: DisconnectReason) -> bool:
    """Whether a client may reconnect as it is (`revoked`: not with the same token)."""
    return reason != "revoked"


def disconnect_data(reason: DisconnectReason, retry_after: float | None = None) -> dict[str, Any]:
    """The `data` of an SSE `disconnect` event."""
    data: dict[str, Any] = {"reason": reason, "reconnect": reconnect_allowed(reason)}
    if reason == "limit":
        data["retry_after"] = math.ceil(retry_after or 0)
    return data


def close_text(reason: DisconnectReason, retry_after: float | None = None) -> str:
    """The WebSocket close reason: the word, and for `limit` the seconds to wait."""
    if reason == "limit":
        return f"limit retry_after={math.ceil(retry_after or 0)}"
    return CLOSE_TEXTS[reason]


def deadline(expires_at: float | None, grace_s: float) -> float | None:
    """When a connection opened with a credential expiring at `expires_at` (seconds since the
    epoch) must end; None for a credential without expiry."""
    return None if expires_at is None else expires_at + grace_s


def close_at(
    loop: asyncio.AbstractEventLoop, when: float | None, callback: Callable[[], object]
) -> asyncio.TimerHandle | None:
    """Call `callback` at `when` (seconds since the epoch, wall clock, as JWT `exp` is); the
    caller cancels the handle when the connection ends first."""
    if when is None:
        return None
    return loop.call_later(max(0.0, when - time.time()), callback)

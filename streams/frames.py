"""What Sinal itself says on a stream, about the stream: the `data` of its control frames.

These frames are not events of a channel: they carry no envelope, and publishers may not use
their types (`api/publish.py`). The `disconnect` frame's data is `streams.disconnect`'s, with
the rest of that vocabulary.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from streams.engine import ResetReason

CONTROL_TYPES = frozenset({"ready", "reset", "disconnect"})


class StreamReady(msgspec.Struct):
    """The stream is open: the replay of what was missed, then live events, follow."""

    channels: Annotated[
        list[str],
        msgspec.Meta(
            description="The channels this stream carries, in cursor order: the user's "
            "notifications, `broadcast`, then the others asked for."
        ),
    ]


class StreamReset(msgspec.Struct):
    """Events of these channels may have been missed: their position could not be honoured,
    and they continue from now. Re-read their state over REST."""

    channels: Annotated[list[str], msgspec.Meta(description="The channels reset.")]
    reason: Annotated[
        ResetReason,
        msgspec.Meta(
            description="`trimmed`: events after the position are no longer retained; "
            "`epoch`: the channel's stream was recreated (Redis lost its data); `invalid`: "
            "the cursor did not name the channel, or could not be read."
        ),
    ]

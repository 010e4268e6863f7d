"""The event envelope and its SSE wire format.

An event is encoded once, when it enters the process; every connection that delivers it reuses
the same `frame` bytes and adds only its own `id:` line (its cursor). Encoding is pure: a function
from data to bytes, tested on its own.
"""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from sse_starlette.event import ServerSentEvent

StreamId = tuple[int, int]
"""A position inside one stream: Redis Streams' `<milliseconds>-<sequence>`, parsed."""
MAX_ID_PART = 2**64 - 1

EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
MAX_EVENT_TYPE = 64
# One line ending throughout: the hot path prepends `id: …\n` to frames encoded here.
SEP = "\n"

_json = msgspec.json.Encoder()


# The hot path builds these bytes by hand (`envelope_json`), splicing in the payload as
# published; this type describes them (the event catalog, api/catalog/), and the tests hold the
# two equal.
class Envelope(msgspec.Struct):
    """The `data:` of an event frame: the event as published, and where and when."""

    channel: Annotated[str, msgspec.Meta(description="The channel the event was published on.")]
    type: Annotated[str, msgspec.Meta(description="The event type, as on the `event:` line.")]
    data: Annotated[Any, msgspec.Meta(description="The payload, as published.")]
    ts: Annotated[
        str,
        msgspec.Meta(
            description="When the event was appended to its channel, ISO 8601 UTC with "
            "milliseconds; it never goes backwards within a channel.",
            extra_json_schema={"format": "date-time"},
        ),
    ]


def parse_stream_id(text: str) -> StreamId:
    """Parse `"1700000000000-3"`; raises ValueError on anything else."""
    ms, _, seq = text.partition("-")
    if not (ms.isascii() and ms.isdigit() and seq.isascii() and seq.isdigit()) or len(text) > 41:
        raise ValueError(f"not a stream id: {text!r}")
    return _in_range(int(ms), int(seq), text)


def parse_stream_id_bytes(text: bytes) -> StreamId:
    """`parse_stream_id` of the bytes Redis sends (a publish's reply, a live message), as
    strict, without decoding them first: three times per event published and delivered.
    (`bytes.isdigit` is ASCII digits only.)"""
    ms, _, seq = text.partition(b"-")
    if not (ms.isdigit() and seq.isdigit()) or len(text) > 41:
        raise ValueError(f"not a stream id: {text!r}")
    return _in_range(int(ms), int(seq), text)


def _in_range(ms: int, seq: int, text: str | bytes) -> StreamId:
    if ms > MAX_ID_PART or seq > MAX_ID_PART:
        raise ValueError(f"stream id out of range: {text!r}")  # Redis ids are two 64-bit parts
    return ms, seq


def format_stream_id(sid: StreamId) -> str:
    return f"{sid[0]}-{sid[1]}"


# The last second formatted, and its text: events come many to a second.
_second: tuple[int | None, str] = (None, "")


def iso_ms(ms: int) -> str:
    """Milliseconds since the epoch as an ISO 8601 UTC timestamp.

    Twice per publish (the frame, the answer's `ts`): the second's text is kept, which takes
    this from ~4.5 µs to under 1 (and the milliseconds are exact, with no float between).
    """
    global _second
    second, milli = divmod(ms, 1000)
    cached, text = _second
    if second != cached:
        text = datetime.fromtimestamp(second, tz=UTC).isoformat()[: -len("+00:00")]
        _second = (second, text)
    return f"{text}.{milli:03d}Z"


class Event:
    """One published event at its position in its channel's stream.

    `data_json` is the payload exactly as published (JSON bytes); it is never re-encoded.
    """

    __slots__ = ("channel", "data_json", "epoch", "frame", "offset", "segment", "type")

    def __init__(
        self, channel: str, type: str, data_json: bytes, epoch: str, offset: StreamId
    ) -> None:
        self.channel = channel
        self.type = type
        self.data_json = data_json
        self.epoch = epoch
        self.offset = offset
        self.frame = encode_event_frame(self)
        # This event's position as a cursor segment, so delivering it costs each connection a join.
        self.segment = encode_segment(channel, epoch, offset)

    @property
    def ts(self) -> str:
        return iso_ms(self.offset[0])

    def envelope(self) -> dict[str, Any]:
        """The envelope as a Python object (long-poll replies, tests)."""
        return {
            "channel": self.channel,
            "type": self.type,
            "data": msgspec.json.decode(self.data_json),
            "ts": self.ts,
        }

    def __repr__(self) -> str:
        return f"Event({self.channel!r}, {self.type!r}, {format_stream_id(self.offset)})"


class Placed(Event):
    """An event as its publisher gets it back from the Redis engine: where it was placed, its
    frame encoded only if asked. The publishing process never delivers this copy (its reader
    gets the event back from Redis, and that one is delivered), and a frame nobody writes was
    a tenth of a batched publish's cost (py-spy, docs/benchmarks.md)."""

    __slots__ = ()

    def __init__(
        self, channel: str, type: str, data_json: bytes, epoch: str, offset: StreamId
    ) -> None:
        self.channel = channel
        self.type = type
        self.data_json = data_json
        self.epoch = epoch
        self.offset = offset
        self.segment = encode_segment(channel, epoch, offset)

    # A property over the slot: read-only, and computed each time, for the rare reader.
    @property
    def frame(self) -> bytes:  # type: ignore[override]
        return encode_event_frame(self)


def encode_segment(channel: str, epoch: str, offset: StreamId) -> str:
    raw = f"{channel}\n{epoch}\n{offset[0]}-{offset[1]}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def envelope_json(channel: str, type: str, data_json: bytes, ts: str) -> bytes:
    # Built by hand so the payload bytes are spliced in as published, not decoded and re-encoded.
    return b"".join(
        (
            b'{"channel":',
            _json.encode(channel),
            b',"type":',
            _json.encode(type),
            b',"data":',
            data_json,
            b',"ts":',
            _json.encode(ts),
            b"}",
        )
    )


def encode_event_frame(event: Event) -> bytes:
    """`event:` and `data:` lines of an SSE frame, blank line included; no `id:` line.

    Once per event delivered, so joined by hand where that is exactly what the encoder would
    write: an event type is one line (`EVENT_TYPE`), and the envelope is one line unless the
    payload carries a raw line break (a published payload loses its whitespace between tokens,
    and JSON strings escape theirs). Anything else goes through the encoder, which splits lines.
    """
    data = envelope_json(event.channel, event.type, event.data_json, event.ts)
    if b"\n" in data or b"\r" in data:
        return ServerSentEvent(data=data.decode(), event=event.type, sep=SEP).encode()
    return b"".join((b"event: ", event.type.encode(), b"\ndata: ", data, b"\n\n"))


def encode_control(event: str, data: msgspec.Struct, cursor: str | None = None) -> bytes:
    """A frame Sinal itself sends (`streams.frames`), with its `id:` when one is given."""
    text = _json.encode(data).decode()
    return ServerSentEvent(data=text, event=event, id=cursor, sep=SEP).encode()


def encode_comment(text: str) -> bytes:
    return ServerSentEvent(comment=text, sep=SEP).encode()


def encode_retry(retry_ms: int) -> bytes:
    return ServerSentEvent(retry=retry_ms, sep=SEP).encode()


def id_line(cursor: str) -> bytes:
    return b"id: " + cursor.encode() + b"\n"

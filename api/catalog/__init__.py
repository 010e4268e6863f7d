"""The event catalog: every Server-Sent Event Sinal sends, on which channel, with which `data`.

Each entry names the msgspec Struct the server encodes that event's `data` from, so the
payload schemas (msgspec's JSON Schema of those very types) cannot drift from what is sent.
From this one catalog come:

- the AsyncAPI 3.0 document served at `/schema/asyncapi.json` (`api.catalog.asyncapi`);
- `docs/events.md` (`api.catalog.markdown`);
- `web/types/events.d.ts`, the TypeScript types of the events (`api.catalog.typescript`).

`python -m api.catalog --markdown | --typescript | --asyncapi` prints each; the tests hold the
committed files equal to that output, and check the events of a real server against the
schemas.

Two kinds of event: a channel's events come in an envelope (`streams.event.Envelope`:
`{"channel", "type", "data", "ts"}`); the frames about the stream itself (`ready`, `reset`,
`disconnect`, `streams.frames`) carry their data bare. Services may publish events of their
own types (`POST /v1/publish`) with any `data`; the catalog holds the events Sinal itself sends.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from api.catalog import examples
from api.control import NodeStats
from db.announcements import Broadcast
from db.inbox import NotificationCreated, NotificationsChanged, NotificationsReadAll
from db.tracking import (
    ExecutionCommand,
    ExecutionCreated,
    ExecutionError,
    ExecutionLog,
    ExecutionProgress,
    ExecutionStatus,
    ExecutionStepFinished,
    ExecutionStepStarted,
)
from streams.channels import IDENTIFIER
from streams.cursor import encode_cursor
from streams.disconnect import StreamDisconnect
from streams.event import Envelope, Event, encode_control, encode_segment, id_line, iso_ms
from streams.frames import CONTROL_TYPES, StreamReady, StreamReset

SCHEMAS = "#/components/schemas/{name}"
Payload = type[msgspec.Struct]


@dataclass(frozen=True)
class Channel:
    """A family of channels: `notifications:{user}` is every user's."""

    key: str  # its name in the AsyncAPI document
    address: str | None  # None: the stream itself, not a channel
    title: str
    description: str
    example: str  # a channel of the family, for the examples
    parameters: dict[str, str] = field(default_factory=dict)  # {name: meaning}

    @property
    def pattern(self) -> str | None:
        """A regular expression of the channel names of the family."""
        if self.address is None:
            return None
        address = self.address
        for name in self.parameters:
            address = address.replace(f"{{{name}}}", IDENTIFIER)
        return f"^{address}$"


@dataclass(frozen=True)
class EventSpec:
    type: str
    channel: Channel
    payload: Payload  # the type of `data`, as the server encodes it
    sent: str  # when it is sent (Markdown)
    example: msgspec.Struct

    @property
    def control(self) -> bool:
        """A frame about the stream itself: no envelope, its data bare."""
        return self.channel is STREAM


STREAM = Channel(
    "stream",
    None,
    "The stream itself",
    "Frames Sinal sends about the connection rather than a channel: their `data` is not in an "
    "envelope, and publishers cannot use their types. `ready` and `reset` carry an `id:` (the "
    "cursor); `disconnect` does not.",
    "",
)
NOTIFICATIONS = Channel(
    "notifications",
    "notifications:{user}",
    "A user's notifications",
    "The changes of one user's notifications, each with the user's unread count after it, so "
    "that every tab and device converges without asking. Only that user may subscribe (plain "
    '`notifications` means "mine"); every stream of theirs carries it.',
    f"notifications:{examples.USER}",
    {"user": "The user's id (the JWT's `sub`)."},
)
BROADCAST = Channel(
    "broadcast",
    "broadcast",
    "Announcements to everyone",
    "Administrators' announcements. Every stream carries it.",
    "broadcast",
)
EXECUTION = Channel(
    "execution",
    "execution:{id}",
    "One execution's progress",
    "The live state of one execution: status, progress, steps, log lines, errors and the "
    "commands its team sends. Members of the execution's team may subscribe, and callers with "
    "the `admin` or `service` role. Events arrive in `seq` order.",
    f"execution:{examples.EXECUTION_ID}",
    {"id": "The execution's id."},
)
ADMIN = Channel(
    "admin",
    "admin",
    "Live counters for administrators",
    "Every node's counters, once a second per node while an administrator watches (the admin "
    "page). Administrators only; only Sinal publishes on it.",
    "admin",
)
CHANNELS = (STREAM, NOTIFICATIONS, BROADCAST, EXECUTION, ADMIN)

EVENTS: tuple[EventSpec, ...] = (
    EventSpec(
        "ready",
        STREAM,
        StreamReady,
        "Once, when the stream opens (after any `reset`): the channels it carries. Its `id:` is "
        "the starting cursor; the replay of what was missed and the live events follow.",
        examples.READY,
    ),
    EventSpec(
        "reset",
        STREAM,
        StreamReset,
        "When the position asked for in some channels cannot be honoured (history trimmed, "
        "the stream recreated, a cursor that does not cover them): before `ready` at the "
        "handshake, or in the middle of the stream. The channels continue from now: re-read "
        "their state over REST. Its `id:` is the cursor after the reset.",
        examples.RESET,
    ),
    EventSpec(
        "disconnect",
        STREAM,
        StreamDisconnect,
        "The last frame when the server ends the stream on its own initiative (shutdown, the "
        "credential's expiry, an administrator, a runtime limit), with no `id:`: the cursor "
        "does not move. Not sent when the client leaves or reads too slowly.",
        examples.DISCONNECT,
    ),
    EventSpec(
        "notification.created",
        NOTIFICATIONS,
        NotificationCreated,
        "A notification was created for the user (`POST /v1/notifications`, an execution that "
        "ended, an administrator's announcement to chosen users).",
        examples.NOTIFICATION_CREATED,
    ),
    EventSpec(
        "notification.read",
        NOTIFICATIONS,
        NotificationsChanged,
        "Notifications were marked read, on any of the user's devices.",
        examples.NOTIFICATION_READ,
    ),
    EventSpec(
        "notification.unread",
        NOTIFICATIONS,
        NotificationsChanged,
        "Notifications were marked unread again.",
        examples.NOTIFICATION_UNREAD,
    ),
    EventSpec(
        "notification.dismissed",
        NOTIFICATIONS,
        NotificationsChanged,
        "Notifications were dismissed: they leave the list and the unread count.",
        examples.NOTIFICATION_DISMISSED,
    ),
    EventSpec(
        "notification.read_all",
        NOTIFICATIONS,
        NotificationsReadAll,
        "The user marked all read (`POST /v1/notifications/read-all`), up to a bound; sent only "
        "when at least one changed.",
        examples.NOTIFICATION_READ_ALL,
    ),
    EventSpec(
        "broadcast",
        BROADCAST,
        Broadcast,
        "An administrator announced something to everyone (`POST /v1/admin/broadcast` with "
        '`"audience": "all"`). A client that connects later finds the announcements in force at '
        "`GET /v1/announcements`.",
        examples.BROADCAST,
    ),
    EventSpec(
        "execution.created",
        EXECUTION,
        ExecutionCreated,
        "An execution was created (`POST /v1/executions`), or a retry created its next attempt "
        "(on the channel of the new attempt; the old one gets `execution.command`).",
        examples.EXECUTION_CREATED,
    ),
    EventSpec(
        "execution.status",
        EXECUTION,
        ExecutionStatus,
        "The execution's status changed: it started (a status event, or implied by progress or "
        "a step), or finished (`succeeded`, `failed`, `cancelled`).",
        examples.EXECUTION_STATUS,
    ),
    EventSpec(
        "execution.progress",
        EXECUTION,
        ExecutionProgress,
        "The execution's progress moved. Coalesced: within a batch only the last value, and at "
        "most one per `SINAL_PROGRESS_INTERVAL_MS` (default 100 ms) per execution; a value held "
        "back is sent when the interval ends, so the latest always arrives.",
        examples.EXECUTION_PROGRESS,
    ),
    EventSpec(
        "execution.step_started",
        EXECUTION,
        ExecutionStepStarted,
        "A step of the execution started.",
        examples.EXECUTION_STEP_STARTED,
    ),
    EventSpec(
        "execution.step_finished",
        EXECUTION,
        ExecutionStepFinished,
        "A step finished; when the execution ends with steps still running, one for each of "
        "them just before the final `execution.status`.",
        examples.EXECUTION_STEP_FINISHED,
    ),
    EventSpec(
        "execution.log",
        EXECUTION,
        ExecutionLog,
        "The execution service logged a line.",
        examples.EXECUTION_LOG,
    ),
    EventSpec(
        "execution.error",
        EXECUTION,
        ExecutionError,
        "The execution failed with an error; `execution.status` `failed` follows.",
        examples.EXECUTION_ERROR,
    ),
    EventSpec(
        "execution.command",
        EXECUTION,
        ExecutionCommand,
        "A team member asked to retry or cancel the execution (`POST /v1/executions/{id}/retry` "
        "or `/cancel`, or the action WebSocket); the execution service receives the command.",
        examples.EXECUTION_COMMAND,
    ),
    EventSpec(
        "admin.stats",
        ADMIN,
        NodeStats,
        "Once a second from every node, while an administrator watches the `admin` channel.",
        examples.ADMIN_STATS,
    ),
)
BY_TYPE = {event.type: event for event in EVENTS}
if len(BY_TYPE) != len(EVENTS) or {e.type for e in EVENTS if e.control} != CONTROL_TYPES:
    raise RuntimeError("the catalog names an event twice, or misses a control frame")


def payload_types() -> list[type[msgspec.Struct]]:
    """Every type whose schema the catalog holds: the envelope, then each event's data."""
    types: list[type[msgspec.Struct]] = [Envelope]
    types += [event.payload for event in EVENTS if event.payload not in types]
    return types


def example_frame(event: EventSpec) -> str:
    """The example of `event` as a stream sends it, encoded as the server encodes it."""
    stream = list(examples.READY.channels)
    if event.control:
        cursor = None if event.type == "disconnect" else _cursor(stream)
        return encode_control(event.type, event.example, cursor).decode()
    channel = event.channel.example
    if channel not in stream:
        stream.append(channel)
    sent = Event(channel, event.type, msgspec.json.encode(event.example), _EPOCH, (examples.MS, 0))
    return (id_line(_cursor(stream, sent)) + sent.frame).decode()


def example_payload(event: EventSpec) -> Any:
    """The `data:` of the example frame, as JSON values."""
    if event.control:
        return msgspec.to_builtins(event.example)
    envelope = Envelope(event.channel.example, event.type, event.example, iso_ms(examples.MS))
    return msgspec.to_builtins(envelope)


_EPOCH = "a1ae4be9"


def _cursor(channels: list[str], last: Event | None = None) -> str:
    """The cursor of a stream of `channels` that has seen nothing but `last`."""
    return encode_cursor(
        [
            last.segment if last is not None and last.channel == channel
            else encode_segment(channel, _EPOCH, (0, 0))
            for channel in channels
        ]
    )  # fmt: skip


def schemas(ref_template: str = SCHEMAS) -> dict[str, Any]:
    """The JSON Schema of every payload type and of the types they hold, by name."""
    _, components = msgspec.json.schema_components(payload_types(), ref_template=ref_template)
    for name in components:
        if "." in name:  # msgspec qualifies names that two types share
            raise RuntimeError(f"two payload types are named {name.rsplit('.', 1)[-1]!r}")
    tidy: dict[str, Any] = _tidy(components)
    return tidy


def schema_name(payload: type[msgspec.Struct]) -> str:
    return payload.__name__


def fields(schema: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """The properties of an object schema: (name, schema, required)."""
    required = set(schema.get("required", ()))
    for name, member in schema.get("properties", {}).items():
        yield name, member, name in required


def paragraphs(text: str) -> list[str]:
    """A docstring's paragraphs, each on one line."""
    return [" ".join(p.split()) for p in inspect.cleandoc(text).split("\n\n") if p.strip()]


def _tidy(value: Any) -> Any:
    """Docstrings as plain text: indentation and line breaks within a paragraph go."""
    if isinstance(value, dict):
        tidied = {key: _tidy(member) for key, member in value.items()}
        if isinstance(value.get("description"), str):
            tidied["description"] = "\n\n".join(paragraphs(value["description"]))
        return tidied
    if isinstance(value, list):
        return [_tidy(member) for member in value]
    return value

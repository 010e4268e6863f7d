"""The catalog as an AsyncAPI 3.0 document, served at `/schema/asyncapi.json`.

One channel per family of channels (`notifications:{user}`, `execution:{id}`, `broadcast`,
`admin`) and one for the frames about the stream itself; one message per event type, whose
payload is what the frame's `data:` line holds: for a channel's event the envelope, its `type`
fixed and its `data` the event's own schema; for a control frame its data, bare. The schemas are
msgspec's, of the types the server encodes (`api.catalog`).
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec
from litestar import Response, get
from litestar.datastructures import CacheControlHeader

from api.catalog import (
    CHANNELS,
    EVENTS,
    SCHEMAS,
    Channel,
    EventSpec,
    example_payload,
    paragraphs,
    schema_name,
    schemas,
)
from streams.event import Envelope

PATH = "/schema/asyncapi.json"
VERSION = "3.0.0"
MESSAGES = "#/components/messages/{name}"

DESCRIPTION = """\
The events of `GET /v1/stream` (Server-Sent Events), one message per event type. Each frame's \
`event:` line is the message's name and its `data:` line the message's payload: for the events \
of a channel, the envelope `{"channel", "type", "data", "ts"}`; for the frames about the stream \
itself (`ready`, `reset`, `disconnect`), their data alone. Every frame but `disconnect` carries \
`id:`, the cursor to resume from (`Last-Event-ID`). The long-polls (`GET \
/v1/notifications/poll`, `GET /v1/executions/{id}/poll`) answer the same envelopes, each with \
its `id`. Services may publish events of other types on these channels (`POST /v1/publish`), \
with any `data`. Reference: docs/events.md and docs/api.md."""


def document() -> dict[str, Any]:
    components = schemas()
    return {
        "asyncapi": VERSION,
        "info": {
            "title": "Sinal events",
            "version": "1.0.0",
            "description": DESCRIPTION,
        },
        "defaultContentType": "application/json",
        "channels": {channel.key: _channel(channel) for channel in CHANNELS},
        "operations": {f"receive_{channel.key}": _operation(channel) for channel in CHANNELS},
        "components": {
            "schemas": components,
            "messages": {event.type: _message(event) for event in EVENTS},
        },
    }


@functools.cache
def encoded() -> bytes:
    return msgspec.json.encode(document())


@get(
    PATH,
    include_in_schema=False,
    sync_to_thread=False,
    cache_control=CacheControlHeader(public=True, max_age=3600),
)
def asyncapi_document() -> Response[bytes]:
    """The document is the same for the life of the process: made once."""
    return Response(encoded(), media_type="application/json")


def payload_schema(event: EventSpec) -> dict[str, Any]:
    """The schema of the `data:` line of `event`'s frames."""
    data = {"$ref": SCHEMAS.format(name=schema_name(event.payload))}
    if event.control:
        return data
    return {
        "allOf": [
            {"$ref": SCHEMAS.format(name=schema_name(Envelope))},
            {
                "type": "object",
                "properties": {
                    "channel": {"type": "string", "pattern": event.channel.pattern},
                    "type": {"const": event.type},
                    "data": data,
                },
            },
        ]
    }


def _events_of(channel: Channel) -> list[EventSpec]:
    return [event for event in EVENTS if event.channel is channel]


def _channel(channel: Channel) -> dict[str, Any]:
    item: dict[str, Any] = {
        "address": channel.address,
        "title": channel.title,
        "description": channel.description,
        "messages": {
            event.type: {"$ref": MESSAGES.format(name=event.type)} for event in _events_of(channel)
        },
    }
    if channel.parameters:
        item["parameters"] = {
            name: {"description": meaning} for name, meaning in channel.parameters.items()
        }
    return item


def _operation(channel: Channel) -> dict[str, Any]:
    return {
        "action": "receive",
        "channel": {"$ref": f"#/channels/{channel.key}"},
        "title": channel.title,
        "messages": [
            {"$ref": f"#/channels/{channel.key}/messages/{event.type}"}
            for event in _events_of(channel)
        ],
    }


def _message(event: EventSpec) -> dict[str, Any]:
    summary = paragraphs(event.payload.__doc__ or "")
    message: dict[str, Any] = {
        "name": event.type,
        "title": event.type,
        "description": event.sent,
        "contentType": "application/json",
        "payload": payload_schema(event),
        "examples": [{"name": event.type, "payload": example_payload(event)}],
    }
    if summary:
        message["summary"] = summary[0]
    return message

"""The catalog as Markdown: `docs/events.md`."""

from __future__ import annotations

import re
import textwrap
from typing import Any

from api.catalog import (
    CHANNELS,
    EVENTS,
    Channel,
    EventSpec,
    example_frame,
    fields,
    paragraphs,
    schema_name,
    schemas,
)
from api.catalog.typescript import type_of
from streams.event import Envelope

WIDTH = 100

HEADER = """\
# Events

<!-- Generated from the server's types by `uv run python -m api.catalog --markdown >
docs/events.md`: edit api/catalog/ or the types, then run it again. -->

Every event a Sinal server sends on a stream ([`GET /v1/stream`](api.md#get-v1stream)): its
channel, when it is sent, and its `data` field by field, with an example frame. The same catalog
is served as an [AsyncAPI](https://www.asyncapi.com/) 3.0 document at `/schema/asyncapi.json`
(no credential needed) and declared for TypeScript in `web/types/events.d.ts` (`EventMap`,
`SinalEvent`). All three are generated from the types the server encodes the events with, so
they say what is sent."""

FRAMES = """\
## Frames

An event of a channel comes in a frame of three lines and a blank one:

```text
id: <the cursor after this event>
event: <its type>
data: <the envelope, one line of JSON>
```

The envelope:

{envelope}

The frames about the stream itself (`ready`, `reset`, `disconnect`) carry their data bare, with
no envelope. Comments (`: ping`) and `retry:` lines come too; see
[api.md](api.md#what-the-stream-sends-in-order) for the order of a stream.

Besides these events, services may publish events of their own types on the same channels
(`POST /v1/publish`), with any `data`: a client ignores the types it does not know.

The long-polls (`GET /v1/notifications/poll`, `GET /v1/executions/{{id}}/poll`) answer the same
envelopes in `events`, each with its `id`, and the data of `reset` in `resets`
([api.md](api.md#get-v1notificationspoll))."""


def render() -> str:
    components = schemas()
    shown: dict[str, str] = {}  # payload type -> the event whose section shows its fields
    parts = [HEADER, _contents()]
    parts.append(FRAMES.format(envelope=_table(components[schema_name(Envelope)])))
    for channel in CHANNELS:
        parts.append(_channel(channel))
        for event in EVENTS:
            if event.channel is channel:
                parts.append(_event(event, components, shown))
    parts.append(_types(components))
    return "\n\n".join(parts) + "\n"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.lower())
    return text.replace(" ", "-")


def _contents() -> str:
    lines = ["## Contents", "", "- [Frames](#frames)"]
    for channel in CHANNELS:
        events = ", ".join(
            f"[`{event.type}`](#{slug(event.type)})" for event in EVENTS if event.channel is channel
        )
        lines.append(f"- [{_heading(channel)}](#{slug(_heading(channel))}): {events}")
    lines.append("- [Types](#types)")
    return "\n".join(lines)


def _heading(channel: Channel) -> str:
    return channel.title if channel.address is None else f"{channel.title}: `{channel.address}`"


def _channel(channel: Channel) -> str:
    lines = [f"## {_heading(channel)}", "", _wrap(channel.description)]
    if channel.parameters:
        lines += ["", *(f"- `{{{name}}}`: {text}" for name, text in channel.parameters.items())]
    return "\n".join(lines)


def _event(event: EventSpec, components: dict[str, Any], shown: dict[str, str]) -> str:
    name = schema_name(event.payload)
    lines = [f"### `{event.type}`", "", _wrap(event.sent), ""]
    if name in shown:
        first = shown[name]
        lines.append(f"`data`: as [`{first}`](#{slug(first)}).")
    else:
        shown[name] = event.type
        lines += ["`data`:", "", _table(components[name])]
    frame = example_frame(event).rstrip("\n")
    lines += ["", "Example:", "", "```text", frame, "```"]
    return "\n".join(lines)


def _types(components: dict[str, Any]) -> str:
    payloads = {schema_name(Envelope), *(schema_name(event.payload) for event in EVENTS)}
    parts = ["## Types", "", "The types the events' data hold."]
    for name, schema in components.items():
        if name in payloads:
            continue
        about = paragraphs(schema.get("description", ""))
        parts += ["", f"### {name}", ""]
        for paragraph in about:
            parts += [_wrap(paragraph), ""]
        if "properties" in schema:
            parts.append(_table(schema))
        else:
            parts.append(f"One of {_type(schema)}.")
    return "\n".join(parts)


def _table(schema: dict[str, Any]) -> str:
    rows = ["| field | type | required | meaning |", "| --- | --- | --- | --- |"]
    for name, member, required in fields(schema):
        meaning = " ".join(paragraphs(member.get("description", "")))
        rows.append(
            f"| `{name}` | {_type(member)} | {'yes' if required else 'no'} | {_cell(meaning)} |"
        )
    return "\n".join(rows)


def _type(schema: dict[str, Any]) -> str:
    """The type in a table cell: TypeScript's notation, the named types linked."""
    linked = False

    def ref(name: str) -> str:
        nonlocal linked
        linked = True
        return f"[{name}](#{slug(name)})"

    text = type_of(schema, ref, _leaf)
    return _cell(text if linked else f"`{text}`")


def _leaf(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if kind == "string" and "format" in schema:
        return f"string ({schema['format']})"
    return kind if isinstance(kind, str) else "any JSON"


def _wrap(text: str) -> str:
    return textwrap.fill(text, WIDTH, break_long_words=False, break_on_hyphens=False)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")

"""The catalog as TypeScript declarations: `web/types/events.d.ts`.

One `interface` per payload type (from its JSON Schema), and the maps a typed client needs:
`EventMap` (a channel's event type to the type of its `data`), `ControlEventMap` (the frames
about the stream itself), `EventType` and `SinalEvent`, the event as the browser client hands
it to `on(type, handler)` (`web/sinal.js`: `{id, type, channel, data, ts}`).
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Callable
from typing import Any

from api.catalog import EVENTS, paragraphs, schema_name, schemas

HEADER = """\
// The events a Sinal server sends, and the types of their data.
// Generated from the server's own types by `uv run python -m api.catalog --typescript`:
// do not edit (docs/events.md describes each event).
"""
WIDTH = 100
_IDENTIFIER = re.compile(r"^[A-Za-z_$][A-Za-z0-9_$]*$")


def render() -> str:
    components = schemas(ref_template="{name}")
    blocks = [HEADER.rstrip("\n")]
    blocks += [_declaration(name, schema) for name, schema in components.items()]
    channel_events = [event for event in EVENTS if not event.control]
    control_events = [event for event in EVENTS if event.control]
    blocks.append(
        _comment(["Every event Sinal sends on a channel, by type: the type of its `data`."], "")
        + _map("EventMap", [(e.type, schema_name(e.payload)) for e in channel_events])
    )
    blocks.append(
        _comment(
            [
                "The frames Sinal sends about the stream itself, by type: the type of their "
                "data, which comes bare (no envelope)."
            ],
            "",
        )
        + _map("ControlEventMap", [(e.type, schema_name(e.payload)) for e in control_events])
    )
    blocks.append("export type EventType = keyof EventMap;")
    blocks.append("export type ControlEventType = keyof ControlEventMap;")
    blocks.append(
        _comment(
            [
                "An event of a channel as the browser client hands it to `on(type, handler)`: "
                "the envelope (`channel`, `type`, `data`, `ts`) and `id`, the stream cursor "
                "after it. `SinalEvent` alone is the union of every type's; narrow it by `type`."
            ],
            "",
        )
        + "export type SinalEvent<K extends EventType = EventType> = {\n"
        "  [T in K]: { id: string; type: T; channel: string; data: EventMap[T]; ts: string };\n"
        "}[K];"
    )
    return "\n\n".join(blocks) + "\n"


def type_of(
    schema: dict[str, Any],
    ref: Callable[[str], str] = lambda name: name,
    leaf: Callable[[dict[str, Any]], str] | None = None,
) -> str:
    """The TypeScript type of a JSON Schema (the subset msgspec writes); `leaf` may name the
    types of scalars otherwise (the docs say `integer`, `string (date-time)`)."""
    if "$ref" in schema:
        return ref(schema["$ref"].rsplit("/", 1)[-1])
    if "enum" in schema:
        return " | ".join(json.dumps(value) for value in schema["enum"])
    if "const" in schema:
        return json.dumps(schema["const"])
    if "anyOf" in schema:
        return " | ".join(type_of(option, ref, leaf) for option in schema["anyOf"])
    kind = schema.get("type")
    if kind == "array":
        item = type_of(schema.get("items", {}), ref, leaf)
        return f"({item})[]" if " " in item else f"{item}[]"
    if kind == "object":
        values = schema.get("additionalProperties", {})
        value = type_of(values, ref, leaf) if isinstance(values, dict) else "unknown"
        return f"Record<string, {value}>"
    if leaf is not None:
        return leaf(schema)
    return SCALARS.get(kind or "", "unknown")


SCALARS = {"string": "string", "integer": "number", "number": "number", "boolean": "boolean",
           "null": "null"}  # fmt: skip


def _declaration(name: str, schema: dict[str, Any]) -> str:
    docs = [schema["description"]] if "description" in schema else []
    if "properties" not in schema:
        return _comment(docs, "") + f"export type {name} = {type_of(schema)};"
    lines = [_comment(docs, "") + f"export interface {name} {{"]
    required = set(schema.get("required", ()))
    for field, member in schema["properties"].items():
        key = field if _IDENTIFIER.match(field) else json.dumps(field)
        optional = "" if field in required else "?"
        about = [member["description"]] if "description" in member else []
        lines.append(_comment(about, "  ") + f"  {key}{optional}: {type_of(member)};")
    lines.append("}")
    return "\n".join(lines)


def _map(name: str, entries: list[tuple[str, str]]) -> str:
    lines = [f"export interface {name} {{"]
    lines += [f"  {json.dumps(key)}: {value};" for key, value in entries]
    lines.append("}")
    return "\n".join(lines)


def _comment(texts: list[str], indent: str) -> str:
    """A JSDoc comment of `texts` (each possibly several paragraphs), or nothing."""
    parts = [p.replace("*/", "*\\/") for text in texts for p in paragraphs(text)]
    if not parts:
        return ""
    width = WIDTH - len(indent) - 3
    if len(parts) == 1 and len(parts[0]) <= width - 4:
        return f"{indent}/** {parts[0]} */\n"
    body: list[str] = []
    for index, part in enumerate(parts):
        if index:
            body.append(f"{indent} *")
        body += [f"{indent} * {line}" for line in textwrap.wrap(part, width)]
    return f"{indent}/**\n" + "\n".join(body) + f"\n{indent} */\n"

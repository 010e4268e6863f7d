"""The event catalog (`api/catalog/`): its renderings are what the generator writes, the
AsyncAPI document is valid and served, and every event a real server sends, of every type, is
what the catalog says it is."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import httpx_sse
import jsonschema
import msgspec
import pytest

from api.catalog import BY_TYPE, CHANNELS, EVENTS, asyncapi, markdown, typescript
from api.catalog import schemas as catalog_schemas
from streams.event import Envelope, Event
from streams.frames import CONTROL_TYPES
from tests.conftest import require_service
from tests.support import ROOT, SERVICE, ServerProcess, bearer, open_stream

DOCS = ROOT / "docs" / "events.md"
TYPES = ROOT / "web" / "types" / "events.d.ts"
REGENERATE = "run `uv run python -m api.catalog --{form} > {path}` and commit the result"
SCHEMA_PREFIX = "#/components/schemas/"


# -- the renderings -----------------------------------------------------------------------------


def test_docs_events_md_is_the_generators_output() -> None:
    assert DOCS.read_text() == markdown.render(), REGENERATE.format(
        form="markdown", path="docs/events.md"
    )


def test_the_typescript_declarations_are_the_generators_output() -> None:
    assert TYPES.read_text() == typescript.render(), REGENERATE.format(
        form="typescript", path="web/types/events.d.ts"
    )


def test_the_typescript_declarations_export_what_clients_import() -> None:
    text = TYPES.read_text()
    for name in ("EventMap", "EventType", "SinalEvent", "ControlEventMap"):
        assert re.search(rf"^export (interface|type) {name}\b", text, re.MULTILINE), name
    event_map = text[text.index("export interface EventMap") :].split("}", 1)[0]
    assert re.findall(r'^  "([^"]+)":', event_map, re.MULTILINE) == [
        event.type for event in EVENTS if not event.control
    ]


def test_the_catalog_holds_every_type_the_browser_client_listens_for() -> None:
    """`web/sinal/connection.js` lists the types of the events Sinal sends; the catalog holds
    those, and the admin page's `admin.stats`."""
    source = (ROOT / "web" / "sinal" / "connection.js").read_text()
    listed = re.search(r"export const EVENT_TYPES = \[(.*?)\];", source, re.DOTALL)
    assert listed is not None
    client = set(re.findall(r'"([a-z._]+)"', listed.group(1)))
    assert client | {"admin.stats"} | CONTROL_TYPES == set(BY_TYPE)


def test_every_field_says_what_it_means() -> None:
    """The docs' tables and the declarations' comments come from the types' descriptions."""
    for name, schema in catalog_schemas().items():
        assert schema.get("description"), name
        for field, member in schema.get("properties", {}).items():
            assert member.get("description"), f"{name}.{field}"


def test_each_channel_family_names_its_example() -> None:
    for channel in CHANNELS:
        if channel.address is not None:
            assert channel.pattern is not None
            assert re.fullmatch(channel.pattern, channel.example), channel.key
            assert not re.fullmatch(channel.pattern, channel.example + "/x"), channel.key


def test_examples_are_what_the_schemas_describe() -> None:
    document = asyncapi.document()
    for event in EVENTS:
        [example] = document["components"]["messages"][event.type]["examples"]
        check(document, event.type, example["payload"])


def test_the_envelope_type_reads_the_frames_the_hot_path_builds() -> None:
    """`envelope_json` builds the envelope by hand; `Envelope` must decode it, every field."""
    event = Event("notifications:alice", "notification.read", b'{"ids":[],"unread":0}', "e", (7, 0))
    data = event.frame.decode().split("data: ", 1)[1].rstrip("\n")
    envelope = msgspec.json.decode(data, type=Envelope)
    assert msgspec.json.encode(envelope).decode() == data
    assert envelope.ts == event.ts


# -- typescript ---------------------------------------------------------------------------------

CONSUMER = """\
import type { ControlEventMap, EventMap, EventType, SinalEvent } from "./events";

declare function on<K extends EventType>(type: K, handler: (event: SinalEvent<K>) => void): void;

on("execution.progress", (event) => {
  const progress: number = event.data.progress;
  const execution: string = event.data.execution;
  // @ts-expect-error `progress` is a number
  const wrong: string = event.data.progress;
  void [progress, execution, wrong];
});
on("notification.created", ({ data }) => {
  const title: string = data.notification.title;
  const link: string | null = data.notification.link;
  // @ts-expect-error `link` may be null
  const sure: string = data.notification.link;
  void [title, link, sure];
});
// @ts-expect-error not an event of the catalog
on("notification.exploded", () => {});

function show(event: SinalEvent): string {
  switch (event.type) {
    case "execution.status":
      return event.data.status;
    case "notification.read":
      return event.data.ids.join(",");
    default:
      return event.type;
  }
}
const reasons: ControlEventMap["disconnect"]["reason"][] = ["expired", "revoked"];
// @ts-expect-error not a reason the server sends
const unknown: ControlEventMap["disconnect"]["reason"] = "bored";
const counts: EventMap["admin.stats"]["connections"] = { sse: 1 };
void [show, reasons, unknown, counts];
"""


def test_the_typescript_declarations_compile_strict(tmp_path: Path) -> None:
    """`tsc --strict` on the declarations and on a consumer that uses them, whose misuses
    (`@ts-expect-error`) must fail to compile."""
    npx = shutil.which("npx")
    if npx is None:
        require_service("npx", "Node.js is not installed")
    shutil.copy(TYPES, tmp_path / "events.d.ts")
    (tmp_path / "consumer.ts").write_text(CONSUMER)
    try:
        done = subprocess.run(
            [npx, "--yes", "-p", "typescript@5", "tsc", "--noEmit", "--strict",
             "--target", "es2020", "--moduleResolution", "node",
             "events.d.ts", "consumer.ts"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        require_service("the npm registry", "npx did not fetch typescript within 300 s")
    output = done.stdout + done.stderr
    if done.returncode != 0 and "error TS" not in output:
        require_service("the npm registry", f"npx could not run tsc: {output[-500:]}")
    assert done.returncode == 0, output


# -- the AsyncAPI document ----------------------------------------------------------------------


def test_the_document_is_complete() -> None:
    document = asyncapi.document()
    assert document["asyncapi"] == "3.0.0"
    assert document["info"]["title"]
    assert document["info"]["version"]
    messages = document["components"]["messages"]
    assert set(messages) == set(BY_TYPE)
    for event in EVENTS:
        message = messages[event.type]
        assert message["name"] == event.type
        assert message["payload"], event.type
        channel = document["channels"][event.channel.key]
        assert channel["messages"][event.type] == {"$ref": f"#/components/messages/{event.type}"}
    addresses = {channel["address"] for channel in document["channels"].values()}
    assert addresses == {None, "notifications:{user}", "execution:{id}", "broadcast", "admin"}
    for key, channel in document["channels"].items():
        operation = document["operations"][f"receive_{key}"]
        assert operation["action"] == "receive"
        assert len(operation["messages"]) == len(channel["messages"])
    for ref in re.findall(r'"\$ref": "([^"]+)"', json.dumps(document)):
        assert resolve(document, ref) is not None, ref


def test_the_document_is_valid_asyncapi(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Against the specification's own JSON Schema, from the `@asyncapi/specs` npm package."""
    # pytest's cache keeps the package between runs, where the cache is on (`-p no:cacheprovider`
    # turns it off).
    cache = getattr(request.config, "cache", None)
    specs = asyncapi_specs(tmp_path if cache is None else cache.mkdir("asyncapi-specs"))
    schema = json.loads((specs / "schemas" / "3.0.0-without-$id.json").read_text())
    document = json.loads(json.dumps(asyncapi.document()))
    jsonschema.Draft7Validator(schema).validate(document)
    broken = copy.deepcopy(document)
    del broken["components"]["messages"]["ready"]["payload"]
    broken["operations"]["receive_stream"]["action"] = "listen"
    assert not jsonschema.Draft7Validator(schema).is_valid(broken)


def test_the_server_serves_the_document_to_anyone(memory_server: ServerProcess) -> None:
    response = httpx.get(f"{memory_server.url}{asyncapi.PATH}", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert "public" in response.headers["cache-control"]
    assert response.json() == json.loads(json.dumps(asyncapi.document()))


def asyncapi_specs(cache: Path) -> Path:
    """The unpacked `@asyncapi/specs` package, fetched once with npm into `cache`."""
    package = cache / "package"
    if (package / "schemas").is_dir():
        return package
    npm = shutil.which("npm")
    if npm is None:
        require_service("npm", "Node.js is not installed")
    try:
        done = subprocess.run(
            [npm, "pack", "@asyncapi/specs@6", "--pack-destination", str(cache)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        require_service("the npm registry", "npm pack did not finish within 120 s")
    tarballs = sorted(cache.glob("asyncapi-specs-*.tgz"))
    if done.returncode != 0 or not tarballs:
        require_service("the npm registry", f"npm pack failed: {done.stderr[-500:]}")
    with tarfile.open(tarballs[-1]) as tarball:
        tarball.extractall(cache, filter="data")
    return package


# -- what a real server sends -------------------------------------------------------------------

ALICE = bearer("alice", "admin", teams=("ml",))  # admin: she may watch the `admin` channel


@pytest.fixture
def server(spawn: Callable[..., ServerProcess], database_env: dict[str, str]) -> ServerProcess:
    """On both databases: PostgreSQL writes `notification.created` events in SQL."""
    return spawn(database_env)


@pytest.mark.anyio
async def test_every_event_a_server_sends_is_as_the_catalog_says(server: ServerProcess) -> None:
    """One stream sees an event of every type of the catalog, and each one's data is what the
    schema describes and decodes into the type the catalog names, strictly; then the long-poll's
    envelopes too."""
    execution = str(uuid.uuid4())
    channels = [("channel", f"execution:{execution}"), ("channel", "admin")]
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as client,
        open_stream(server.url, ALICE, params=channels, last_event_id="garbage") as (seen, wait),
    ):
        await cause_every_event(client, execution)
        await wait(lambda r: {e.event for e in r.events} >= set(BY_TYPE) - {"disconnect"}, 15)
        kicked = await client.post(
            "/v1/admin/users/alice/disconnect", json={"reason": "catalog test"}, headers=ALICE
        )
        assert kicked.status_code == 200, kicked.text
        await wait(lambda r: r.ended, 10)
        first_cursor = seen.of_type("ready")[0].id

        document = asyncapi.document()
        assert {event.event for event in seen.events} == set(BY_TYPE)
        for frame in seen.events:
            check_frame(document, frame)

        polled = await client.get(
            "/v1/notifications/poll",
            params=[("cursor", first_cursor), ("wait", "0"), *channels],
            headers=ALICE,
        )
    assert polled.status_code == 200, polled.text
    reply = polled.json()
    assert reply["events"], reply
    for envelope in reply["events"]:
        cursor = envelope.pop("id")
        assert cursor.startswith("1.")
        check(document, envelope["type"], envelope)


async def cause_every_event(client: httpx.AsyncClient, execution: str) -> None:
    """Make the server send an event of every type of the catalog to alice's stream (it was
    opened with a bad cursor: `reset`, then `ready`)."""

    async def post(path: str, body: Any = None, headers: dict[str, str] = ALICE) -> Any:
        response = await client.post(path, json=body, headers=headers)
        assert response.status_code in (200, 201, 202), (path, response.text)
        return response.json()

    notify = {"user": "alice", "type": "report.ready", "title": "Report ready",
              "data": {"report": "2026-11"}, "link": "/reports/2026-11"}  # fmt: skip
    [first] = (await post("/v1/notifications", notify, SERVICE))["notifications"]
    await post("/v1/notifications", {**notify, "title": "Another"}, SERVICE)
    await post(f"/v1/notifications/{first['id']}/read")
    await post(f"/v1/notifications/{first['id']}/unread")
    await post(f"/v1/notifications/{first['id']}/dismiss")
    await post("/v1/notifications/read-all")
    await post("/v1/admin/broadcast", {"audience": "all", "title": "Maintenance at 22:00"})

    spec = {"id": execution, "team": "ml", "owner": "alice", "name": "train", "total_steps": 2}
    await post("/v1/executions", spec, SERVICE)
    await post(f"/v1/executions/{execution}/events", {"events": [
        {"type": "step_started", "seq": 1, "step": 1, "name": "fetch"},
        {"type": "progress", "seq": 2, "progress": 40},
        {"type": "log", "seq": 3, "message": "fetched", "step": 1, "data": {"rows": 12}},
        {"type": "step_finished", "seq": 4, "step": 1},
        {"type": "step_started", "seq": 5, "step": 2, "name": "train"},
        {"type": "error", "seq": 6, "code": "E_OOM", "message": "out of memory", "step": 2},
    ]}, SERVICE)  # fmt: skip
    await post(f"/v1/executions/{execution}/retry")


def check_frame(document: dict[str, Any], frame: httpx_sse.ServerSentEvent) -> None:
    """A frame of the stream against its message; its data decoded into its type, strictly."""
    event = BY_TYPE[frame.event]
    data = json.loads(frame.data)
    check(document, frame.event, data)
    if event.control:
        msgspec.json.decode(frame.data, type=event.payload)
    else:
        envelope = msgspec.json.decode(frame.data, type=Envelope)
        assert envelope.type == frame.event
        assert re.fullmatch(event.channel.pattern or "", envelope.channel), envelope.channel
        msgspec.json.decode(msgspec.json.encode(envelope.data), type=event.payload)


def check(document: dict[str, Any], type: str, payload: Any) -> None:
    """`payload` is what the message of `type` describes, with no member the types lack."""
    schema = {
        **document["components"]["messages"][type]["payload"],
        "components": {"schemas": closed(document["components"]["schemas"])},
    }
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    validator.validate(payload)


def closed(schemas: dict[str, Any]) -> dict[str, Any]:
    """The schemas with no room for members they do not name (the served ones leave it, so
    that clients accept what a later server adds)."""
    schemas = copy.deepcopy(schemas)
    for schema in schemas.values():
        if "properties" in schema:
            schema["additionalProperties"] = False
    return schemas


def resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    return node

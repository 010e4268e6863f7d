"""The OpenAPI document, as a running server serves it: valid, complete, and true to the
routes (`api/openapi.py`). The fuzzing of the API against it is `loadtests/fuzz.py`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import msgspec
import pytest
from litestar.routes import HTTPRoute, WebSocketRoute
from openapi_spec_validator import validate

from api import admin, openapi, sse
from api.app import create_app
from api.problems import PROBLEM_JSON
from api.series import FIELDS
from api.settings import Settings
from db.announcements import Announcement
from db.audit import AuditEntry
from streams.access import Principal
from streams.admission import BOUNDS, Limits
from streams.registry import Registry
from tests.support import ADMIN, SECRET, ServerProcess

SCHEMA_URLS = ["/schema", "/schema/openapi.json", "/schema/openapi.yaml", "/schema/swagger"]


@pytest.fixture(scope="module")
def document(memory_server: ServerProcess) -> dict[str, Any]:
    response = httpx.get(f"{memory_server.url}/schema/openapi.json", timeout=10)
    assert response.status_code == 200, response.text
    served: dict[str, Any] = response.json()
    return served


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


@pytest.mark.parametrize("path", SCHEMA_URLS)
def test_every_schema_url_answers(memory_server: ServerProcess, path: str) -> None:
    """Every /schema URL answered 500 since bulk ingest returned `list[AppliedBatch |
    RefusedBatch]`, an untagged union of msgspec Structs that Litestar could not describe."""
    response = httpx.get(f"{memory_server.url}{path}", timeout=10)
    assert response.status_code == 200, response.text[:500]


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"].startswith("3.1")


# Building the app in this process shows Litestar's warnings of what its version 3 changes
# (implicit dependencies, `Parameter(query=)`); the server subprocess meets them the same way.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_every_route_is_in_the_document(document: dict[str, Any], tmp_path: Any) -> None:
    settings = Settings.from_env(
        {"SINAL_JWT_SECRET": SECRET, "SINAL_DATABASE_URL": f"sqlite:///{tmp_path / 's.db'}"}
    )
    app = create_app(settings).litestar
    expected = {(sse.PATH, "GET")}
    for route in app.routes:
        if isinstance(route, WebSocketRoute):
            expected.add((route.path_format, "GET"))
        elif isinstance(route, HTTPRoute):
            for handler in route.route_handlers:
                if handler.resolve_include_in_schema():
                    expected.update((route.path_format, m) for m in handler.http_methods)
    documented = {(path, method) for method, path, _ in operations(document)}
    assert expected - documented == set()
    assert not any(path.startswith(("/app", "/schema")) for path, _ in documented)
    assert ("/v1/actions", "GET") in expected  # the walk saw the WebSocket


def test_the_route_tables_name_routes_that_exist(document: dict[str, Any]) -> None:
    """A renamed route must not silently lose its body, its statuses or its replay answer."""
    documented = {f"{method} {path}" for method, path, _ in operations(document)}
    for table in (openapi.BODIES, openapi.ERRORS, openapi.REPLAYS, openapi.ANSWERS):
        assert set(table) - documented == set()
    for key in openapi.BODIES:
        method, path = key.split(" ", 1)
        assert "requestBody" in document["paths"][path][method.lower()], key


def test_the_bulk_ingest_answer_is_applied_or_refused(document: dict[str, Any]) -> None:
    """A batch result is one of two shapes; a refusal is told by its `error` problem."""
    schemas = document["components"]["schemas"]
    items = schemas["BulkResponse"]["properties"]["results"]["items"]
    refs = {one["$ref"].rsplit("/", 1)[1] for one in items["oneOf"]}
    assert refs == {"AppliedBatch", "RefusedBatch"}
    assert "error" in schemas["RefusedBatch"]["required"]
    assert schemas["RefusedBatch"]["properties"]["error"]["$ref"].endswith("/Problem")
    assert "error" not in schemas["AppliedBatch"]["properties"]


def test_errors_are_problems(document: dict[str, Any]) -> None:
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    assert "field" in problem["properties"]
    assert problem.get("additionalProperties", True) is not False  # extras, e.g. expected_seq
    for method, path, operation in operations(document):
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                assert list(response["content"]) == [PROBLEM_JSON], (method, path, status)


def test_credentials_are_described_per_route(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"]["scheme"] == "bearer"
    assert (schemes["cookie"]["in"], schemes["cookie"]["name"]) == ("cookie", "sinal_token")
    assert (schemes["ticket"]["in"], schemes["ticket"]["name"]) == ("query", "ticket")
    by_route = {(method, path): op for method, path, op in operations(document)}
    assert by_route[("GET", "/healthz")]["security"] == []
    for method, path, operation in operations(document):
        names = {name for requirement in operation["security"] for name in requirement}
        ticket = path in ("/v1/stream", "/v1/actions") or path.endswith("/poll")
        assert ("ticket" in names) == ticket, (method, path)
        if names:
            assert "401" in operation["responses"], (method, path)


def test_bodies_limits_and_statuses(document: dict[str, Any]) -> None:
    """The document states what the server enforces, where a client can read it."""
    by_route = {(method, path): op for method, path, op in operations(document)}
    schemas = document["components"]["schemas"]

    publish = by_route[("POST", "/v1/publish")]
    body = publish["requestBody"]["content"]["application/json"]["schema"]
    # One event, or a list of them: one of the two forms.
    single, batch = body["oneOf"]
    assert batch["type"] == "array"
    assert (batch["minItems"], batch["maxItems"]) == (1, 1000)
    assert batch["items"] == single
    properties = schemas[single["$ref"].rsplit("/", 1)[1]]["properties"]
    assert properties["type"]["maxLength"] == 64
    assert "pattern" in properties["type"]
    assert "pattern" in properties["channel"]
    assert {"400", "401", "403", "413", "415", "429", "503"} <= set(publish["responses"])
    answers = publish["responses"]["201"]["content"]["application/json"]["schema"]["oneOf"]
    assert [answer["$ref"].rsplit("/", 1)[1] for answer in answers] == [
        "PublishResponse",
        "BatchResponse",
    ]
    assert set(schemas["BatchResponse"]["required"]) == {"cursors", "ts"}
    assert "81920 bytes" in publish["responses"]["413"]["description"]

    logs = {p["name"]: p for p in by_route[("GET", "/v1/executions/{id}/logs")]["parameters"]}
    assert logs["limit"]["schema"]["maximum"] == 1000
    assert set(logs["level"]["schema"]["enum"]) == {"debug", "info", "warning", "error"}
    assert "404" in by_route[("GET", "/v1/executions/{id}/logs")]["responses"]
    assert "409" in by_route[("POST", "/v1/executions/{id}/retry")]["responses"]
    assert "422" in by_route[("POST", "/v1/notifications")]["responses"]

    stream = by_route[("GET", "/v1/stream")]
    assert list(stream["responses"]["200"]["content"]) == ["text/event-stream"]
    names = {(p["in"], p["name"]) for p in stream["parameters"]}
    assert names == {("query", "channel"), ("query", "last_event_id"), ("header", "Last-Event-ID")}
    poll = {p["name"]: p for p in by_route[("GET", "/v1/notifications/poll")]["parameters"]}
    assert poll["channel"]["schema"] == stream["parameters"][0]["schema"]
    assert poll["channel"]["schema"]["items"]["pattern"].startswith("^(broadcast|")
    assert "101" in by_route[("GET", "/v1/actions")]["responses"]


def test_admin_routes_are_guarded_in_the_document(document: dict[str, Any]) -> None:
    """Every route behind the admin guard takes a credential and answers 401 and 403, though
    its handler never names the principal (the guard authenticates)."""
    admin_routes = [(m, p, op) for m, p, op in operations(document) if p.startswith("/v1/admin/")]
    assert len(admin_routes) == 12  # with the series and the alerts
    for method, path, operation in admin_routes:
        assert operation["security"] == openapi.USER, (method, path)
        assert {"401", "403", "503"} <= set(operation["responses"]), (method, path)
    by_route = {(method, path): op for method, path, op in operations(document)}
    assert "404" in by_route[("GET", "/v1/admin/connections")]["responses"]  # unknown node
    assert "404" in by_route[("POST", "/v1/admin/connections/{id}/disconnect")]["responses"]
    limits = by_route[("PUT", "/v1/admin/limits")]
    assert {"400", "422"} <= set(limits["responses"])
    assert limits["requestBody"]["required"] is True
    disconnect = by_route[("POST", "/v1/admin/users/{user}/disconnect")]
    assert disconnect["requestBody"]["required"] is False  # an empty body is the defaults


def test_runtime_limit_answers_are_documented(document: dict[str, Any]) -> None:
    by_route = {(method, path): op for method, path, op in operations(document)}
    stream = by_route[("GET", "/v1/stream")]["responses"]
    assert {"429", "503"} <= set(stream)
    assert "Retry-After" in stream["429"]["headers"]
    assert "Retry-After" in stream["200"]["headers"]  # the refusal an EventSource gets
    assert "503" in by_route[("GET", "/v1/actions")]["responses"]
    publish = by_route[("POST", "/v1/publish")]["responses"]
    assert "Retry-After" in publish["429"]["headers"]


def test_the_limits_body_states_the_bounds_enforced(document: dict[str, Any]) -> None:
    change = document["components"]["schemas"]["LimitsChange"]
    assert set(change["properties"]) == set(BOUNDS)
    assert change["minProperties"] == 1
    assert change["additionalProperties"] is False
    for name, (low, high, whole) in BOUNDS.items():
        schema = change["properties"][name]
        assert (schema["minimum"], schema["maximum"]) == (low, high), name
        assert schema["type"] == ("integer" if whole else "number"), name


def fields(view: Any) -> set[str]:
    return set(view.__struct_fields__)


def test_the_documented_views_are_what_the_code_builds(document: dict[str, Any]) -> None:
    """The view structs of `api/openapi.py` mirror objects built as plain dicts: a member
    added to or dropped from one of them must show here."""
    registry = Registry("n1")

    class Handle:
        def disconnect(self, reason: Any, retry_after: float | None = None) -> None: ...

        def figures(self) -> tuple[int, str | None, int]:
            return 0, None, 0

        def ended_by(self) -> str | None:
            return None

    with registry.opened(Principal("alice", frozenset(), frozenset()), "ws", [], Handle()) as c:
        assert set(c.view()) == fields(openapi.ConnectionView)
    now = datetime.now(UTC)
    entry = AuditEntry(uuid.uuid4(), now, "root", "limits.update", "limits", {}, {}, "n1", None)
    assert set(entry.view()) == fields(openapi.AuditEntryView)
    announcement = Announcement(uuid.uuid4(), "t", "", "info", None, now, None, "root")
    assert set(announcement.view()) == fields(openapi.AnnouncementView)
    assert set(Limits(actions_rate=1, actions_burst=1).view()) == fields(openapi.LimitsView)
    schemas = document["components"]["schemas"]
    items = schemas["Connections"]["properties"]["connections"]["items"]
    assert items["$ref"].endswith("/ConnectionView")
    assert set(schemas["ConnectionView"]["required"]) == fields(openapi.ConnectionView)


def test_the_stats_view_is_what_the_server_answers(memory_server: ServerProcess) -> None:
    response = httpx.get(f"{memory_server.url}/v1/admin/stats", headers=ADMIN, timeout=10)
    assert response.status_code == 200, response.text
    msgspec.convert(response.json(), openapi.StatsView)  # every member, each of its type
    assert set(response.json()) == fields(openapi.StatsView)


def test_a_series_point_is_documented_as_the_array_it_is(
    memory_server: ServerProcess, document: dict[str, Any]
) -> None:
    """Litestar describes a msgspec Struct as an object even when it travels as an array."""
    point = document["components"]["schemas"]["SeriesPoint"]
    assert point["type"] == "array"
    assert [item["title"] for item in point["prefixItems"]] == list(FIELDS)
    assert all(item.get("description") for item in point["prefixItems"])
    response = httpx.get(f"{memory_server.url}/v1/admin/series", headers=ADMIN, timeout=10)
    assert response.status_code == 200, response.text
    answer = msgspec.convert(response.json(), admin.SeriesView)  # every member, of its type
    assert answer.fields == list(FIELDS)
    assert [node.id for node in answer.nodes] == [answer.nodes[0].id]  # the one node

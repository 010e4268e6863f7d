"""The OpenAPI document, as a running server serves it: valid, complete, and true to the
routes (`api/openapi.py`). The fuzzing of the API against it is `loadtests/fuzz.py`."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from litestar.routes import HTTPRoute, WebSocketRoute
from openapi_spec_validator import validate

from api import openapi, sse
from api.app import create_app
from api.problems import PROBLEM_JSON
from api.settings import Settings
from tests.support import SECRET, ServerProcess

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
    for table in (openapi.BODIES, openapi.ERRORS, openapi.REPLAYS):
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
    properties = schemas[body["$ref"].rsplit("/", 1)[1]]["properties"]
    assert properties["type"]["maxLength"] == 64
    assert "pattern" in properties["type"]
    assert "pattern" in properties["channel"]
    assert {"400", "401", "403", "413", "415", "503"} <= set(publish["responses"])

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

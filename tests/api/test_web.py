"""Serving the pages: types, caching, security headers, and nothing but the page's files."""

from __future__ import annotations

import httpx
import pytest

from api.web import _servable
from tests.support import ServerProcess, assert_problem

EXECUTION = "01a21214-e1ac-7679-b733-924e8d1343e7"


@pytest.mark.parametrize(
    ("path", "media_type"),
    [
        ("/app/", "text/html"),
        ("/app/index.html", "text/html"),
        ("/app/sinal.js", "text/javascript"),
        ("/app/sinal/connection.js", "text/javascript"),
        ("/app/react.js", "text/javascript"),  # the package's React entry (docs/react.md)
        ("/app/style.css", "text/css"),
        (f"/app/executions/{EXECUTION}", "text/html"),
        (f"/executions/{EXECUTION}", "text/html"),  # the link of execution notifications
    ],
)
def test_pages_and_modules_are_served_with_their_types(
    memory_server: ServerProcess, path: str, media_type: str
) -> None:
    response = httpx.get(memory_server.url + path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0] == media_type
    assert response.headers["cache-control"] == "no-cache"
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "etag" in response.headers


def test_the_execution_page_is_the_same_under_both_paths(memory_server: ServerProcess) -> None:
    first = httpx.get(f"{memory_server.url}/app/executions/{EXECUTION}")
    second = httpx.get(f"{memory_server.url}/executions/{EXECUTION}")
    assert first.text == second.text
    assert '<script type="module" src="/app/execution.js">' in first.text


@pytest.mark.parametrize(
    "path",
    [
        "/app/__init__.py",
        "/app/missing.js",
        "/app/../api/auth.py",
        "/app/" + "x" * 300 + ".json",  # a 500: the file system refuses a name that long
        "/app/index.html/x.json",  # a 500: a file taken for a folder
    ],
)
def test_other_files_are_not_found(memory_server: ServerProcess, path: str) -> None:
    assert_problem(httpx.get(memory_server.url + path), 404)


@pytest.mark.parametrize(
    "id", ["not-a-uuid", "01a21214e1ac7679b733924e8d1343e7", "x%20y", f"{EXECUTION}0"]
)
@pytest.mark.parametrize("prefix", ["/app/executions/", "/executions/"])
def test_an_execution_page_address_without_an_execution_id_is_the_page_with_a_404(
    memory_server: ServerProcess, prefix: str, id: str
) -> None:
    """Bug: `/app/executions/not-a-uuid` answered a problem document, shown raw in the browser;
    the page itself says "No such execution" (tests/web/test_pages.py)."""
    response = httpx.get(memory_server.url + prefix + id)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/app/execution.js">' in response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]


@pytest.mark.parametrize(
    "path",
    ["node_modules/react/index.js", "examples/react/node_modules/react/package.json"],
)
def test_installed_node_packages_are_not_served(path: str) -> None:
    """`web/` is also the npm package: what `npm ci` installs there (its development tools, the
    example app's dependencies) is not the app's to serve, present or not."""
    assert not _servable(path)
    assert _servable("examples/react/dist/index.html")


@pytest.mark.parametrize("path", ["/app/x%00.json", "/app/%00"])
def test_a_path_with_nul_is_400(memory_server: ServerProcess, path: str) -> None:
    """Regression: `GET /app/x%00.json`, with no credential, answered 500."""
    assert_problem(httpx.get(memory_server.url + path), 400, "path")


def test_the_root_leads_to_the_notification_center(memory_server: ServerProcess) -> None:
    response = httpx.get(memory_server.url + "/")
    assert response.status_code in (301, 302, 307, 308)
    assert response.headers["location"] == "/app/"

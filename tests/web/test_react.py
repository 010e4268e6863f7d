"""The React example app (web/examples/react/, built with Vite) in a real browser, against real
servers: what `sinal-client/react` promises, seen from the outside.

The build is served by the Sinal server itself (`/app/examples/react/dist/`): the app and the
API share an origin, as the cookie and Sinal's CSRF rules want. It signs in with `getToken`
from the platform's token endpoint (`?token_url=`), answered here by Playwright with freshly
minted tokens, or with the `sinal_token` cookie. `dist-dev/` is the development build, where
React's StrictMode mounts every component twice.

Without the build the tests fail under `SINAL_REQUIRE_SERVICES=1` (CI builds it first) and
skip otherwise: `cd web/examples/react && npm ci && npm run build`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request, Route, expect

from tests.conftest import require_service
from tests.support import ADMIN, ROOT, SERVICE, PrivateRedis, ServerProcess, token
from tests.web.test_browser import (
    Screenshot,
    create_notification,
    demo,
    eventually,
    executions_of,
    user_name,
)

EXAMPLE = ROOT / "web" / "examples" / "react"
APP = "/app/examples/react/dist/"
DEV_APP = "/app/examples/react/dist-dev/"
TOKEN_PATH = "/platform/token"
SignedIn = Callable[..., BrowserContext]


@pytest.fixture(scope="module", autouse=True)
def built() -> None:
    for build in ("dist", "dist-dev"):
        if not (EXAMPLE / build / "index.html").is_file():
            require_service(
                "The React example's build",
                f"web/examples/react/{build} is missing: "
                "cd web/examples/react && npm ci && npm run build",
            )


class Platform:
    """The platform's token endpoint, as the app calls it: a fresh token for `user` each time
    (each living `ttl_s`), and how many it handed out."""

    def __init__(
        self, context: BrowserContext, user: str, teams: tuple[str, ...] = (), ttl_s: int = 3600
    ) -> None:
        self.user, self.teams, self.ttl_s = user, teams, ttl_s
        self.minted: list[str] = []
        # A pattern, not a Python predicate: with a predicate every request of the browser
        # would wait for this thread to look at it.
        context.route(re.compile(rf"^https?://[^/]+{re.escape(TOKEN_PATH)}$"), self.answer)

    def answer(self, route: Route) -> None:
        value = token(self.user, teams=self.teams, ttl_s=self.ttl_s)
        self.minted.append(value)
        route.fulfill(
            status=200,
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
            body=json.dumps({"token": value}),
        )


@pytest.fixture
def contexts(browser: Browser) -> Iterator[Callable[..., BrowserContext]]:
    """New browser profiles (their own storage and tabs), closed after the test."""
    opened: list[BrowserContext] = []

    def open_context(base_url: str, **options: Any) -> BrowserContext:
        context = browser.new_context(base_url=base_url, **options)
        context.set_default_timeout(10_000)
        opened.append(context)
        return context

    yield open_context
    for context in opened:
        context.close()


def open_app(context: BrowserContext, path: str = APP, **query: str) -> tuple[Page, list[str]]:
    """A tab of the app, once it is live and up to date; with its uncaught errors."""
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(path + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else ""))
    live(page)
    return page, errors


def live(page: Page, timeout: float = 10_000) -> None:
    indicator = page.locator("#connection")
    expect(indicator).to_have_attribute("data-status", "open", timeout=timeout)
    expect(indicator).to_have_attribute("data-up-to-date", "true", timeout=timeout)


def activity(page: Page, type: str) -> list[str]:
    """The texts of the events of `type` the app's activity panel received, oldest first."""
    texts: list[str] = page.locator(f'#activity li[data-type="{type}"] .text').all_inner_texts()
    return texts[::-1]


def streams(server: ServerProcess, user: str) -> list[dict[str, Any]]:
    """The user's open SSE streams, as the server counts them."""
    response = httpx.get(
        f"{server.url}/v1/admin/connections",
        params={"user": user, "transport": "sse"},
        headers=ADMIN,
        timeout=10,
    )
    assert response.status_code == 200, response.text
    connections: list[dict[str, Any]] = response.json()["connections"]
    return connections


def channels(server: ServerProcess, user: str) -> list[list[str]]:
    """The channels of each of the user's open SSE streams."""
    return [sorted(stream["channels"]) for stream in streams(server, user)]


def shown_execution(page: Page) -> str | None:
    """The execution the app shows, from its address."""
    value: str | None = page.evaluate("new URLSearchParams(location.search).get('execution')")
    return value


def stream_requests(page: Page) -> list[str]:
    """Every request the page makes to open a stream, from now on."""
    seen: list[str] = []

    def record(request: Request) -> None:
        if request.url.split("?")[0].endswith("/v1/stream"):
            seen.append(request.url)

    page.on("request", record)
    return seen


def test_the_build_is_served_at_its_folder_and_installed_packages_are_not(
    memory_server: ServerProcess,
) -> None:
    """Relative links of the built page need the folder's address with its "/"; what npm
    installed in web/ is never served."""
    response = httpx.get(f"{memory_server.url}/app/examples/react/dist?token_url=/x")
    assert response.status_code == 308
    assert response.headers["location"] == "/app/examples/react/dist/?token_url=/x"
    page = httpx.get(f"{memory_server.url}{APP}")
    assert page.status_code == 200
    assert "./assets/" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for path in ("examples/react/node_modules/react/package.json", "node_modules/react/index.js"):
        if (ROOT / "web" / path).exists():
            assert httpx.get(f"{memory_server.url}/app/{path}").status_code == 404, path


# -- the bell and the list ----------------------------------------------------------------------


def test_a_notification_created_over_rest_appears_and_the_count_moves(
    memory_server: ServerProcess, contexts: Callable[..., BrowserContext], screenshot: Screenshot
) -> None:
    user = user_name("rea")
    context = contexts(memory_server.url)
    platform = Platform(context, user)
    page, errors = open_app(context, token_url=TOKEN_PATH)
    expect(page.locator("#list-status")).to_contain_text("No notifications")
    badge = page.locator("#unread-badge")
    expect(badge).to_be_hidden()

    create_notification(
        memory_server.url, user, "Your export is ready", body="invoices.csv (2.1 MB)",
        severity="success",
    )  # fmt: skip
    row = page.locator("li.notification", has_text="Your export is ready")
    expect(row).to_be_visible(timeout=2000)
    expect(row).to_have_attribute("data-state", "unread")
    expect(badge).to_have_text("1")
    expect(page.locator("#bell")).to_have_attribute("aria-label", "Notifications, 1 unread")
    create_notification(memory_server.url, user, "Second report")
    expect(badge).to_have_text("2")
    expect(page.locator("#summary")).to_have_text("2 unread")

    page.get_by_role("button", name="Mark read: Your export is ready").click()
    expect(row).to_have_attribute("data-state", "read")
    expect(badge).to_have_text("1")
    assert activity(page, "notification.created") == ["Your export is ready", "Second report"]
    assert platform.minted, "getToken was not asked"
    screenshot(page, "bell-and-list")
    assert errors == []


def test_marking_read_in_one_tab_updates_the_other_over_one_stream(
    memory_server: ServerProcess, signed_in: SignedIn, screenshot: Screenshot
) -> None:
    """Signed in with the cookie; two tabs share one stream (the client's leader election)."""
    user = user_name("reb")
    context = signed_in(memory_server.url, user)
    first, first_errors = open_app(context)
    second, second_errors = open_app(context)
    for n in range(3):
        create_notification(memory_server.url, user, f"Report {n} is ready")
    for page in (first, second):
        expect(page.locator("li.notification")).to_have_count(3)
        expect(page.locator("#unread-badge")).to_have_text("3")

    second.get_by_role("button", name="Mark read: Report 1 is ready").click()
    expect(first.locator("#unread-badge")).to_have_text("2")
    expect(first.locator("li.notification", has_text="Report 1")).to_have_attribute(
        "data-state", "read"
    )
    second.get_by_role("button", name="Dismiss: Report 0 is ready").click()
    expect(first.locator("li.notification")).to_have_count(2)
    expect(first.locator("#unread-badge")).to_have_text("1")

    first.get_by_role("button", name="Mark all read").click()
    expect(second.locator("#unread-badge")).to_be_hidden()
    expect(second.locator("#summary")).to_have_text("All caught up")
    expect(second.locator('li.notification[data-state="unread"]')).to_have_count(0)
    eventually(lambda: len(streams(memory_server, user)) == 1, what="one stream for two tabs")
    screenshot(first, "first-tab")
    screenshot(second, "second-tab")
    assert first_errors == second_errors == []


def test_without_credentials_the_app_asks_to_sign_in_and_a_new_sign_in_reconnects(
    memory_server: ServerProcess, contexts: Callable[..., BrowserContext], screenshot: Screenshot
) -> None:
    """No cookie, no token: signed out at once. A pasted token remounts the provider (its
    `key`): the old client closes, the new one connects, one stream."""
    user = user_name("rsi")
    context = contexts(memory_server.url)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(APP)
    expect(page.locator("#connection")).to_have_attribute("data-status", "signed-out")
    expect(page.get_by_role("heading", name="You are not signed in")).to_be_visible()
    screenshot(page, "signed-out")
    page.get_by_label("Token").fill(token(user))
    page.get_by_role("button", name="Sign in").click()
    live(page)
    expect(page.get_by_role("heading", name="You are not signed in")).to_be_hidden()
    create_notification(memory_server.url, user, "After signing in")
    expect(page.locator("li.notification", has_text="After signing in")).to_be_visible()
    eventually(lambda: len(streams(memory_server, user)) == 1, what="one stream")
    assert errors == []


# -- recovery -----------------------------------------------------------------------------------


def test_the_app_shows_every_event_once_across_a_server_restart(
    spawn: Callable[..., ServerProcess],
    private_redis: PrivateRedis,
    contexts: Callable[..., BrowserContext],
    screenshot: Screenshot,
) -> None:
    """Redis engine and a SQLite file: events published before, while and after the server
    restarts all reach the app, none twice (the activity panel lists each event delivered)."""
    server = spawn({"SINAL_REDIS_URL": private_redis.url})
    user = user_name("rec")
    context = contexts(server.url)
    Platform(context, user)
    page, errors = open_app(context, token_url=TOKEN_PATH)
    indicator = page.locator("#connection")

    before = [f"Before restart {n}" for n in range(5)]
    during = [f"While restarting {n}" for n in range(5)]
    after = [f"After restart {n}" for n in range(5)]
    for title in before:
        create_notification(server.url, user, title)
    expect(page.locator("li.notification")).to_have_count(5)
    for title in during:  # published as the server goes down: some live, some replayed
        create_notification(server.url, user, title)
    server.stop()
    expect(indicator).to_have_attribute("data-status", "reconnecting")
    screenshot(page, "reconnecting")
    server.start()
    for title in after:  # most likely before the app is back: replayed from its cursor
        create_notification(server.url, user, title)

    live(page, timeout=20_000)
    expect(page.locator("li.notification")).to_have_count(15)
    everything = before + during + after
    eventually(
        lambda: len(activity(page, "notification.created")) >= len(everything),
        what="all fifteen events",
    )
    created = activity(page, "notification.created")
    assert sorted(created) == sorted(everything), "an event was lost or repeated"
    expect(page.locator("#unread-badge")).to_have_text("15")
    screenshot(page, "recovered")
    assert errors == []


def test_a_short_lived_token_is_renewed_with_no_loss(
    graceless: ServerProcess, contexts: Callable[..., BrowserContext], screenshot: Screenshot
) -> None:
    """Every token the platform hands out lives 4 s, and the server ends a stream the moment
    its token expires (`SINAL_AUTH_GRACE=0`): the app's getToken renews it, the client mints a
    fresh ticket after each `disconnect` (`expired`) and resumes from its cursor. Nothing is
    lost or shown twice, and the page is not reloaded."""
    user = user_name("red")
    context = contexts(graceless.url)
    platform = Platform(context, user, ttl_s=4)
    page, errors = open_app(context, token_url=TOKEN_PATH)
    page.evaluate("window.notReloaded = true")
    first_expiry = time.time() + 4

    titles = [f"Across renewals {n}" for n in range(24)]

    def publish() -> None:
        for title in titles:  # about 10 s: two or three tokens expire meanwhile
            create_notification(graceless.url, user, title)
            time.sleep(0.4)

    publishing = threading.Thread(target=publish)
    publishing.start()
    # Playwright answers the token endpoint only while this thread is inside one of its calls:
    # wait by asking the page, not by joining the thread.
    eventually(
        lambda: page.evaluate("true") and not publishing.is_alive(),
        within=30,
        what="the notifications published",
    )
    eventually(
        lambda: len(activity(page, "notification.created")) >= len(titles),
        within=15,
        what="every event",
    )
    live(page)
    assert sorted(activity(page, "notification.created")) == sorted(titles), (
        "an event was lost or repeated"
    )
    disconnects = activity(page, "disconnect")
    assert disconnects, "no token expired"
    assert set(disconnects) == {"expired"}, disconnects
    assert len(platform.minted) >= 3, f"{len(platform.minted)} tokens for three lifetimes"
    assert time.time() > first_expiry + 4
    assert page.evaluate("window.notReloaded") is True
    expect(page.locator("li.notification")).to_have_count(len(titles))
    screenshot(page, "renewed")
    assert errors == []


# -- executions ---------------------------------------------------------------------------------


def test_an_execution_shows_progress_and_its_error_and_retry_runs_a_new_attempt(
    spawn: Callable[..., ServerProcess],
    contexts: Callable[..., BrowserContext],
    screenshot: Screenshot,
) -> None:
    server = spawn()
    team, user = "reactdemo", user_name("ree")
    context = contexts(server.url, viewport={"width": 1200, "height": 1000})
    Platform(context, user, teams=(team,))
    demos = [demo(server, team, user, executions=2)]
    try:
        # The demo fails its second execution (docs/executions.md): watch that one.
        second = eventually(lambda: executions_of(server, team)[1:2], what="two executions")[0]
        page, errors = open_app(context, token_url=TOKEN_PATH, execution=second["id"])
        view = page.locator("#execution")
        expect(page.locator("#execution-name")).to_have_text(second["name"])
        expect(page.locator("#execution-status")).to_have_text("running")
        eventually(lambda: int(page.locator("#progress").get_attribute("value") or 0) > 0)
        expect(page.locator("#log .log-line").first).to_be_visible()

        expect(page.locator("#execution-status")).to_have_text("failed", timeout=20_000)
        failed = httpx.get(f"{server.url}/v1/executions/{second['id']}", headers=SERVICE).json()
        expect(page.locator("#error-code")).to_have_text(failed["error"]["code"])
        expect(page.locator("#error-message")).to_have_text(failed["error"]["message"])
        expect(page.locator("#error-step")).to_contain_text(str(failed["error"]["step"]))
        expect(page.locator(f"#steps li:nth-child({failed['error']['step']})")).to_have_attribute(
            "data-status", "failed"
        )
        expect(page.locator("#progress-label")).to_have_text(f"{failed['progress']}%")
        expect(page.locator("#log")).to_contain_text(failed["error"]["message"])
        screenshot(page, "failed")

        page.get_by_role("button", name="Retry").click()
        new_id = eventually(
            lambda: shown_execution(page) not in (None, second["id"]) and shown_execution(page),
            what="the new attempt shown",
        )
        expect(page.locator("#attempt")).to_contain_text("Attempt 2")
        if demos[0].poll() is not None:  # the first round ended: another demo runs the retry
            demos.append(demo(server, team, user, executions=1))
        expect(page.locator("#execution-status")).to_have_text("running", timeout=20_000)
        eventually(lambda: int(page.locator("#progress").get_attribute("value") or 0) > 0)
        expect(page.locator("#execution-error")).to_have_count(0)
        expect(view).to_have_attribute("data-state", "shown")
        retried = httpx.get(f"{server.url}/v1/executions/{new_id}", headers=SERVICE).json()
        assert (retried["attempt"], retried["retry_of"]) == (2, second["id"])
        screenshot(page, "retried")
        assert errors == []
    finally:
        for process in demos:
            process.terminate()
            process.wait(10)


# -- StrictMode ---------------------------------------------------------------------------------


def test_strict_mode_opens_one_stream_and_lets_channels_go(
    memory_server: ServerProcess, contexts: Callable[..., BrowserContext]
) -> None:
    """The development build, where StrictMode mounts the provider and every hook twice: one
    stream on the server's side, one request for it; a channel held by a view is dropped when
    the view goes, and nothing the first mount made is left behind."""
    team, user = "strict", user_name("ref")
    context = contexts(memory_server.url)
    Platform(context, user, teams=(team,))
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    console: list[tuple[str, str]] = []
    page.on("console", lambda message: console.append((message.type, message.text)))
    requests = stream_requests(page)
    page.goto(f"{DEV_APP}?token_url={TOKEN_PATH}")
    live(page)

    counts = []
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        counts.append(len(streams(memory_server, user)))
        time.sleep(0.1)
    assert set(counts) == {1}, f"streams seen on the server: {counts}"
    assert len(requests) == 1, requests

    # Two executions, opened one after the other from their notifications.
    ids = []
    for name in ("first", "second"):
        created = httpx.post(
            f"{memory_server.url}/v1/executions",
            json={"team": team, "owner": user, "name": f"{name} job"},
            headers=SERVICE,
            timeout=10,
        )
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
        link = f"/executions/{ids[-1]}"
        create_notification(memory_server.url, user, f"Watch the {name} job", link=link)
    implicit = [f"notifications:{user}", "broadcast"]
    page.get_by_role("link", name="Watch the first job").click()
    expect(page.locator("#execution-name")).to_have_text("first job")
    eventually(
        lambda: channels(memory_server, user) == [sorted([*implicit, f"execution:{ids[0]}"])],
        what="the first execution's channel on the one stream",
    )
    page.get_by_role("link", name="Watch the second job").click()
    expect(page.locator("#execution-name")).to_have_text("second job")
    eventually(
        lambda: channels(memory_server, user) == [sorted([*implicit, f"execution:{ids[1]}"])],
        what="the first channel dropped, the second held",
    )
    live(page)
    assert len(streams(memory_server, user)) == 1
    assert errors == []
    assert [text for kind, text in console if kind in ("error", "warning")] == []
    # React's development build (it suggests its DevTools), where StrictMode mounts twice.
    assert any("React DevTools" in text for _, text in console), console

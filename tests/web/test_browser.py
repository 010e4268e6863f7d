"""The pages in a real browser: live notifications, tabs in sync, recovery, executions.

Each test drives headless Chromium against a real server process. Waits have deadlines
(Playwright's `expect` and `eventually` below); screenshots go to test-artifacts/web/.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from streams.cursor import encode_cursor
from streams.event import encode_segment
from tests.support import ADMIN, SECRET, SERVICE, PrivateRedis, ServerProcess, token

Screenshot = Callable[[Page, str], Any]
LIVE = re.compile("open|recovered")  # the indicator once connected
SignedIn = Callable[..., BrowserContext]


def eventually(check: Callable[[], Any], within: float = 10.0, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached within {within} s (last: {value!r})")
        time.sleep(0.05)


def open_page(context: BrowserContext, path: str) -> tuple[Page, list[str]]:
    """A tab on `path`, once its connection is live; with the list of its uncaught errors."""
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(path)
    expect(page.locator("#connection")).to_have_attribute("data-status", LIVE)
    return page, errors


def record_created(page: Page) -> None:
    """Count, in the page, every `notification.created` the client hands to the app."""
    page.evaluate(
        """() => {
            window.created = [];
            sinal.on("notification.created", (e) => created.push(e.data.notification.title));
        }"""
    )


def create_notification(base_url: str, user: str, title: str, **fields: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{base_url}/v1/notifications",
        json={"user": user, "type": "test.note", "title": title, **fields},
        headers=SERVICE,
        timeout=10,
    )
    assert response.status_code == 201, response.text
    notification: dict[str, Any] = response.json()["notifications"][0]
    return notification


def user_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- (a) live ---------------------------------------------------------------------------------


def test_a_new_notification_appears_within_a_second(
    memory_server: ServerProcess, signed_in: SignedIn, screenshot: Screenshot
) -> None:
    user = user_name("ana")
    page, errors = open_page(signed_in(memory_server.url, user), "/app/")
    expect(page.locator("#list-status")).to_contain_text("No notifications")

    create_notification(
        memory_server.url, user, "Your export is ready", body="invoices.csv (2.1 MB)",
        severity="success", link="/exports/8812",
    )  # fmt: skip
    started = time.monotonic()
    row = page.locator("li.notification", has_text="Your export is ready")
    expect(row).to_be_visible(timeout=1000)
    print(f"shown {time.monotonic() - started:.3f} s after the create returned")
    expect(row).to_have_attribute("data-state", "unread")
    expect(page.locator("#unread-badge")).to_have_text("1")
    expect(page.locator("#toasts .toast")).to_contain_text("Your export is ready")
    expect(page.locator("#bell")).to_have_attribute("aria-label", "Notifications, 1 unread")
    screenshot(page, "notification-center")
    assert errors == []


# -- (b) tabs ---------------------------------------------------------------------------------


def test_b_marking_read_in_one_tab_updates_the_other_over_one_connection(
    memory_server: ServerProcess, signed_in: SignedIn, screenshot: Screenshot
) -> None:
    user = user_name("bea")
    context = signed_in(memory_server.url, user)
    first, first_errors = open_page(context, "/app/")
    second, second_errors = open_page(context, "/app/")
    for n in range(3):
        create_notification(memory_server.url, user, f"Report {n} is ready")
    for page in (first, second):
        expect(page.locator("li.notification")).to_have_count(3)
        expect(page.locator("#unread-badge")).to_have_text("3")

    # One stream for the browser, whatever the number of tabs: one tab leads, one follows.
    roles = sorted(page.evaluate("sinal.role") for page in (first, second))
    assert roles == ["follower", "leader"]

    second.get_by_role("button", name="Mark read: Report 1 is ready").click()
    expect(first.locator("#unread-badge")).to_have_text("2")
    expect(first.locator("li.notification", has_text="Report 1")).to_have_attribute(
        "data-state", "read"
    )
    # The follower's action went through the leader's WebSocket, not a request of its own.
    leader = first if first.evaluate("sinal.role") == "leader" else second
    assert leader.evaluate("sinal.socket.open") is True
    second.get_by_role("button", name="Dismiss: Report 0 is ready").click()
    expect(first.locator("li.notification")).to_have_count(2)
    expect(first.locator("#unread-badge")).to_have_text("1")

    first.get_by_role("button", name="Mark all read").click()
    expect(second.locator("#unread-badge")).to_be_hidden()
    expect(second.locator("#summary")).to_have_text("All caught up")
    screenshot(first, "first-tab")
    screenshot(second, "second-tab")
    assert first_errors == second_errors == []


def test_a_new_leader_takes_over_without_repeating_or_losing_events(
    memory_server: ServerProcess, signed_in: SignedIn
) -> None:
    """Close the leading tab while notifications arrive: the other tab takes over the
    connection from the stored cursor and hands every event to its app exactly once."""
    user = user_name("cy")
    context = signed_in(memory_server.url, user)
    leader, _ = open_page(context, "/app/")
    follower, errors = open_page(context, "/app/")
    roles = (leader.evaluate("sinal.role"), follower.evaluate("sinal.role"))
    assert roles == ("leader", "follower")
    record_created(follower)

    titles = [f"Handover {n}" for n in range(12)]
    for title in titles[:4]:
        create_notification(memory_server.url, user, title)
    eventually(lambda: len(follower.evaluate("created")) == 4, what="the first four")
    # Playwright's page belongs to this thread: the notifications come from another one.
    creating = threading.Thread(
        target=lambda: [create_notification(memory_server.url, user, t) for t in titles[4:]]
    )
    creating.start()
    leader.close()
    creating.join(10)

    expect(follower.locator("li.notification")).to_have_count(len(titles))
    eventually(lambda: follower.evaluate("sinal.role") == "leader", what="the follower leading")
    eventually(lambda: len(follower.evaluate("created")) >= len(titles), what="every event")
    assert sorted(follower.evaluate("created")) == sorted(titles)
    assert errors == []


# -- (c) restarts -----------------------------------------------------------------------------


def test_c_the_page_recovers_from_a_server_restart_with_every_event_once(
    spawn: Callable[..., ServerProcess],
    private_redis: PrivateRedis,
    signed_in: SignedIn,
    screenshot: Screenshot,
) -> None:
    """Redis engine and a SQLite file: the stream and the notifications survive the restart,
    so the page resumes from its cursor instead of starting over."""
    server = spawn({"SINAL_REDIS_URL": private_redis.url})
    user = user_name("dee")
    page, errors = open_page(signed_in(server.url, user), "/app/")
    record_created(page)
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
    expect(indicator.locator(".label")).to_have_text("Reconnecting…")
    screenshot(page, "reconnecting")
    server.start()
    for title in after:  # most likely before the page is back: replayed from its cursor
        create_notification(server.url, user, title)

    expect(indicator).to_have_attribute("data-status", LIVE)
    expect(page.locator("li.notification")).to_have_count(15)
    eventually(lambda: len(page.evaluate("created")) >= 15, what="all fifteen events")
    created = page.evaluate("created")
    assert sorted(created) == sorted(before + during + after), "an event was lost or repeated"
    assert not page.evaluate("sinal.marks.seen.size === 0")
    screenshot(page, "recovered")
    assert errors == []


# -- (d) executions ---------------------------------------------------------------------------


def demo(server: ServerProcess, team: str, owner: str, executions: int) -> subprocess.Popen[bytes]:
    """`sinal demo --once`: the simulated execution service, signing with the server's secret."""
    with (server.workdir / "demo.log").open("a") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "api", "demo", "--url", server.url, "--once", "--speed", "3",
             "--executions", str(executions), "--team", team, "--owner", owner],
            env={**server.env, "SINAL_JWT_SECRET": SECRET},
            cwd=server.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def executions_of(server: ServerProcess, team: str) -> list[dict[str, Any]]:
    response = httpx.get(
        f"{server.url}/v1/executions", params={"team": team}, headers=SERVICE, timeout=10
    )
    assert response.status_code == 200, response.text
    return sorted(response.json()["executions"], key=lambda e: e["created"])


def test_d_an_execution_shows_progress_and_its_error_and_retry_runs_a_new_attempt(
    spawn: Callable[..., ServerProcess], signed_in: SignedIn, screenshot: Screenshot
) -> None:
    server = spawn()
    team, user = "webdemo", user_name("eve")
    context = signed_in(server.url, user, teams=(team,), viewport={"width": 1100, "height": 900})
    demos = [demo(server, team, user, executions=2)]
    try:
        # The demo fails its second execution (docs/executions.md): watch that one.
        second = eventually(lambda: executions_of(server, team)[1:2], what="two executions")[0]
        page, errors = open_page(context, f"/executions/{second['id']}")
        expect(page.locator("#name")).to_have_text(second["name"])
        progress = page.locator("#progress")
        expect(progress).not_to_have_attribute("aria-valuenow", "0")
        expect(page.locator("#state")).to_have_text("running")
        expect(page.locator("#log .log-line").first).to_be_visible()

        expect(page.locator("#state")).to_have_text("failed", timeout=20_000)
        panel = page.locator("#error")
        expect(panel).to_be_visible()
        failed = httpx.get(f"{server.url}/v1/executions/{second['id']}", headers=SERVICE).json()
        expect(panel.locator("#error-code")).to_have_text(failed["error"]["code"])
        expect(panel.locator("#error-message")).to_have_text(failed["error"]["message"])
        expect(panel.locator("#error-step")).to_contain_text(str(failed["error"]["step"]))
        expect(page.locator(f"#steps li:nth-child({failed['error']['step']})")).to_have_attribute(
            "data-status", "failed"
        )
        expect(page.locator("#log")).to_contain_text(failed["error"]["message"])
        screenshot(page, "failed")

        page.get_by_role("button", name="Retry").click()
        expect(page).to_have_url(re.compile(r"/app/executions/(?!" + second["id"] + ")"))
        expect(page.locator("#attempts")).to_contain_text("Attempt 2")
        new_id = page.url.rsplit("/", 1)[1]
        if demos[0].poll() is not None:  # the first round ended: another demo runs the retry
            demos.append(demo(server, team, user, executions=1))
        # The execution service runs the new attempt: live progress on the same page.
        expect(page.locator("#state")).to_have_text("running", timeout=20_000)
        expect(progress).not_to_have_attribute("aria-valuenow", "0")
        expect(page.locator("#error")).to_be_hidden()
        retried = httpx.get(f"{server.url}/v1/executions/{new_id}", headers=SERVICE).json()
        assert (retried["attempt"], retried["retry_of"]) == (2, second["id"])
        screenshot(page, "retried")

        # The owner was told about the failure; its link opens this page.
        bell_page, _ = open_page(context, "/app/")
        link = bell_page.get_by_role("link", name=f"{second['name']} failed")
        expect(link).to_have_attribute("href", f"/executions/{second['id']}")
        assert errors == []
    finally:
        for process in demos:
            process.terminate()
            process.wait(10)


# -- serving ----------------------------------------------------------------------------------


def test_phone_sized_screen_and_admin_sees_one_stream_per_browser(
    memory_server: ServerProcess, signed_in: SignedIn, screenshot: Screenshot
) -> None:
    user = user_name("flo")
    context = signed_in(
        memory_server.url, user, viewport={"width": 390, "height": 844}, is_mobile=True
    )
    pages = [open_page(context, "/app/")[0] for _ in range(3)]
    create_notification(
        memory_server.url, user, "Nightly build failed",
        body="E_TESTS_FAILED: 3 of 412 tests failed",
        severity="error", link="/executions/01a21214-e1ac-7679-b733-924e8d1343e7",
    )  # fmt: skip
    for page in pages:
        expect(page.locator("li.notification")).to_have_count(1)
    page = pages[0]
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide on a 390 px screen"
    screenshot(page, "phone")
    # Three tabs, one stream (this module's earlier browsers have left).
    eventually(
        lambda: (
            httpx.get(f"{memory_server.url}/v1/admin/stats", headers=ADMIN).json()["connections"]
            == 1
        ),
        what="one stream for three tabs",
    )


def test_offline_then_back_online_catches_up_from_the_cursor(
    memory_server: ServerProcess, signed_in: SignedIn, screenshot: Screenshot
) -> None:
    user = user_name("gil")
    context = signed_in(memory_server.url, user)
    page, errors = open_page(context, "/app/")
    record_created(page)
    indicator = page.locator("#connection")
    create_notification(memory_server.url, user, "Before going offline")
    expect(page.locator("li.notification")).to_have_count(1)

    context.set_offline(True)
    expect(indicator).to_have_attribute("data-status", "offline")
    expect(indicator).to_contain_text("Changes will appear when you are back online.")
    screenshot(page, "offline")
    create_notification(memory_server.url, user, "Sent while offline")
    context.set_offline(False)

    expect(page.locator("li.notification", has_text="Sent while offline")).to_be_visible()
    expect(indicator).to_have_attribute("data-status", LIVE)
    # Caught up by resuming from the cursor, not by reloading: the event reached the app once.
    eventually(lambda: page.evaluate("created").count("Sent while offline") == 1)
    assert page.evaluate("created") == ["Before going offline", "Sent while offline"]
    assert errors == []


# -- credentials ------------------------------------------------------------------------------


def test_without_a_cookie_the_page_explains_how_to_sign_in(
    memory_server: ServerProcess, browser: Browser, screenshot: Screenshot
) -> None:
    context = browser.new_context(base_url=memory_server.url)
    try:
        page = context.new_page()
        page.goto("/app/")
        expect(page.get_by_role("heading", name="You are not signed in")).to_be_visible()
        expect(page.locator("#connection")).to_have_attribute("data-status", "signed-out")
        # On a loopback address, a token can be pasted (it becomes the cookie, never a URL).
        page.get_by_label("Token").fill(token(user_name("hal")))
        page.get_by_role("button", name="Sign in on this browser").click()
        expect(page.locator("#connection")).to_have_attribute("data-status", LIVE)
        expect(page.get_by_role("heading", name="You are not signed in")).to_be_hidden()
        screenshot(page, "signed-in")
    finally:
        context.close()


def test_a_token_from_get_token_opens_the_stream_with_tickets(
    memory_server: ServerProcess, browser: Browser
) -> None:
    """No cookie: REST calls carry the bearer token, the stream and the socket a ticket."""
    user = user_name("ida")
    context = browser.new_context(base_url=memory_server.url)
    try:
        page = context.new_page()
        page.goto("/app/icon.svg")  # any page of the origin, with no client of its own
        page.evaluate(
            """async (token) => {
                const { connect } = await import("/app/sinal.js");
                window.client = connect({ getToken: () => token });
                window.seen = [];
                client.on("notification.created", (e) => seen.push(e.data.notification.id));
            }""",
            token(user),
        )
        eventually(lambda: page.evaluate("client.status") == "open", what="the stream open")
        created = create_notification(memory_server.url, user, "Over a ticket")
        eventually(lambda: page.evaluate("seen") == [created["id"]], what="the event")
        result = page.evaluate("(id) => client.actions.markRead(id)", created["id"])
        assert result == {"changed": [created["id"]], "unread": 0}
        assert page.evaluate("client.socket.open") is True
    finally:
        context.close()


# -- the client's pieces, in the browser ------------------------------------------------------


def test_the_client_reads_positions_from_the_servers_cursors(
    memory_server: ServerProcess, browser: Browser
) -> None:
    """`web/sinal/cursor.js` must read cursors as `streams/cursor.py` writes them: dedupe
    across leader changes depends on it."""
    alice = "notifications:alice"

    def cursor(epoch: str, ms: int, seq: int) -> str:
        segments = [
            encode_segment(alice, epoch, (ms, seq)),
            encode_segment("broadcast", "", (0, 0)),
        ]
        return encode_cursor(segments)

    page = browser.new_page(base_url=memory_server.url)
    try:
        page.goto("/app/icon.svg")
        result = page.evaluate(
            """async ([first, same, later, otherEpoch]) => {
                const { positions, Marks } = await import("/app/sinal/cursor.js");
                const marks = new Marks();
                const admitted = [first, same, later, first, otherEpoch]
                    .map((c) => marks.admit("notifications:alice", c));
                marks.reset(["notifications:alice"], null);
                admitted.push(marks.admit("notifications:alice", first));
                return {
                    position: positions(first).get("notifications:alice"),
                    channels: [...positions(first).keys()],
                    garbage: positions("2.abc") === null && positions("1.!!") === null,
                    admitted,
                };
            }""",
            [cursor("e1", 1795588956948, 0), cursor("e1", 1795588956948, 0),
             cursor("e1", 1795588956948, 1), cursor("e2", 5, 0)],
        )  # fmt: skip
    finally:
        page.close()
    assert result["position"] == {"epoch": "e1", "ms": 1795588956948, "seq": 0}
    assert result["channels"] == [alice, "broadcast"]
    assert result["garbage"] is True
    # new, repeated, newer, older (replayed), another epoch (after a reset); then after reset
    assert result["admitted"] == [True, False, True, False, True, True]

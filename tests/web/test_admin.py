"""The admin page (`/app/admin`) and the announcement banner, in Chromium against a real server.

(a) an admin finds a user by prefix, sees their browser's one shared stream and their phone's
long-poll, disconnects and revokes them, and the user's tabs say they were signed out; the
audit log shows it. (b) a broadcast from the composer is a banner on an open page and on one
opened later. (c) a sign-in without the admin role gets "Admins only" (403). (d) the page at
phone width, with the live counters from the `admin` channel. (e) the dashboard's charts, drawn
from the series and moved on by the live points. (f) the alerts, listed and kept live by the
server's own evaluations. Screenshots: test-artifacts/web/.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from api.alerting import AlertView
from db.alerts import AlertRow
from tests.support import ServerProcess, token
from tests.web.conftest import ARTIFACTS
from tests.web.test_browser import Screenshot, SignedIn, open_page, user_name
from tests.web.test_pages import console_errors, publish

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
)
AdminPage = Callable[..., tuple[Page, list[str]]]


@pytest.fixture(scope="module")
def admin_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of this module's own: its broadcasts and revocations reach no other test."""
    server = ServerProcess(tmp_path_factory.mktemp("admin")).start()
    yield server
    server.stop()


@pytest.fixture
def admin_page(browser: Browser) -> Iterator[AdminPage]:
    """The admin page, open in a browser profile signed in as an admin, once it is ready; with
    the list of its uncaught errors."""
    contexts: list[BrowserContext] = []

    def open_admin(base_url: str, **options: Any) -> tuple[Page, list[str]]:
        context = browser.new_context(base_url=base_url, **options)
        context.add_cookies(
            [{"name": "sinal_token", "value": token(user_name("root"), "admin"), "url": base_url}]
        )
        context.set_default_timeout(10_000)
        contexts.append(context)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        response = page.goto("/app/admin")
        assert response is not None
        assert response.status == 200
        expect(page.locator("#main")).to_have_attribute("data-state", "ready")
        return page, errors

    yield open_admin
    for context in contexts:
        context.close()


class PhonePoll:
    """A phone's long-poll for `user`, waiting in the background (`GET /v1/notifications/poll`)."""

    def __init__(self, base_url: str, user: str) -> None:
        self.client = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token(user)}", "User-Agent": IPHONE},
            timeout=40,
        )
        first = self.client.get("/v1/notifications/poll", params={"wait": 0})
        assert first.status_code == 200, first.text
        self.cursor = first.json()["next_cursor"]
        self.response: httpx.Response | None = None
        self.thread = threading.Thread(target=self.wait, daemon=True)
        self.thread.start()

    def wait(self) -> None:
        self.response = self.client.get(
            "/v1/notifications/poll", params={"cursor": self.cursor, "wait": 25}
        )

    def close(self) -> None:
        self.thread.join(30)
        self.client.close()


def search(page: Page, prefix: str) -> None:
    page.get_by_label("User (id or its beginning)").fill(prefix)
    page.get_by_role("button", name="Search", exact=True).click()


def test_a_an_admin_disconnects_and_revokes_a_user_who_is_then_signed_out(
    admin_server: ServerProcess,
    signed_in: SignedIn,
    admin_page: AdminPage,
    screenshot: Screenshot,
) -> None:
    user = user_name("alice")
    laptop = signed_in(admin_server.url, user)
    first, first_errors = open_page(laptop, "/app/")
    second, second_errors = open_page(laptop, "/app/")
    phone = PhonePoll(admin_server.url, user)
    try:
        page, errors = admin_page(admin_server.url, viewport=DESKTOP)
        search(page, user[:9])
        rows = page.locator("#connections tbody tr", has_text=user)
        # Two tabs share one stream; the phone's waiting poll is the second connection.
        expect(rows).to_have_count(2)
        transports = sorted(rows.nth(n).get_attribute("data-transport") or "" for n in range(2))
        assert transports == ["longpoll", "sse"]

        rows.first.get_by_role("button", name=f"Open user {user}").click()
        view = page.locator("#user-section")
        expect(page.locator("#user-heading")).to_be_focused()
        expect(page.locator("#user-heading")).to_have_text(f"User {user}")
        devices = view.locator("#user-connections li")
        expect(devices).to_have_count(2)
        expect(view.locator("li[data-transport='longpoll']")).to_contain_text("Safari on iOS")
        expect(view.locator("li[data-transport='longpoll']")).to_contain_text("iPhone")
        expect(view.locator("li[data-transport='sse']")).to_contain_text("Chrome")
        expect(page.locator("#user-revoked")).to_have_text("never revoked")
        screenshot(page, "user")

        page.get_by_role("button", name="Disconnect and revoke").click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_be_visible()
        expect(dialog).to_contain_text(f"Disconnect and revoke {user}?")
        expect(page.locator("#confirm-cancel")).to_be_focused()
        dialog.get_by_label("Note for the audit log").fill("lost laptop")
        screenshot(page, "confirm")
        dialog.get_by_role("button", name="Disconnect and revoke").click()
        expect(dialog).to_be_hidden()
        expect(page.locator("#user-revoke")).to_be_focused()
        expect(page.locator("#user-result")).to_contain_text(f"Closed 2 connections of {user}")
        expect(page.locator("#user-result")).to_contain_text("Tokens issued before")
        expect(devices).to_have_count(0)
        expect(page.locator("#user-revoked")).not_to_have_text("never revoked")

        for tab in (first, second):
            expect(tab.locator("#connection")).to_have_attribute("data-status", "signed-out")
            expect(tab.locator("#connection .label")).to_have_text("Signed out")
            expect(tab.locator("#connection .hint")).to_have_text("An administrator signed you out")
            expect(tab.locator("#signin")).to_be_visible()
            expect(tab.locator("#signin-title")).to_have_text("You were signed out")
        screenshot(first, "signed-out")
        phone.thread.join(10)
        assert not phone.thread.is_alive(), "the phone's long-poll was not ended"

        entry = page.locator("#audit li[data-action='user.disconnect']", has_text=user)
        expect(entry).to_have_count(1)
        expect(entry).to_contain_text("revoked")
        expect(entry).to_contain_text("lost laptop")
        entry.scroll_into_view_if_needed()
        screenshot(page, "audit")
        assert errors == []
        assert first_errors == []
        assert second_errors == []
    finally:
        phone.close()


def test_b_a_broadcast_is_a_banner_on_open_pages_and_on_pages_opened_later(
    admin_server: ServerProcess,
    signed_in: SignedIn,
    admin_page: AdminPage,
    screenshot: Screenshot,
) -> None:
    user = user_name("bruno")
    open_before, errors = open_page(signed_in(admin_server.url, user), "/app/")
    page, admin_errors = admin_page(admin_server.url, viewport=DESKTOP)

    title = f"Maintenance tonight {user}"
    composer = page.locator("#broadcast")
    composer.get_by_label("Title").fill(title)
    composer.get_by_label("Text").fill("Streams reconnect once at 22:00 UTC; nothing is lost.")
    composer.get_by_label("Severity").select_option("warning")
    composer.get_by_label("Link").fill("/app/")
    preview = page.locator("#preview .banner")
    expect(preview).to_contain_text(title)
    expect(preview).to_have_attribute("data-severity", "warning")
    screenshot(page, "composer")
    composer.get_by_role("button", name="Send to everyone").click()
    expect(page.locator("#broadcast-result")).to_contain_text("Sent to everyone")

    banner = open_before.locator("#announcements .banner", has_text=title)
    expect(banner).to_be_visible()
    expect(banner).to_have_attribute("data-severity", "warning")
    expect(banner.get_by_role("link", name=title)).to_have_attribute(
        "href", f"{admin_server.url}/app/"
    )
    screenshot(open_before, "banner-live")

    later_context = signed_in(admin_server.url, user_name("carla"), viewport=PHONE, is_mobile=True)
    later, later_errors = open_page(later_context, "/app/")
    later_banner = later.locator("#announcements .banner", has_text=title)
    expect(later_banner).to_be_visible()
    screenshot(later, "banner-later-phone")

    # Dismissed: gone in this browser, also after a reload; still there for others.
    later_banner.get_by_role("button", name=f"Dismiss announcement: {title}").click()
    expect(later_banner).to_have_count(0)
    later.reload()
    expect(later.locator("#connection")).to_have_attribute("data-status", "open")
    expect(later.locator("#announcements .banner", has_text=title)).to_have_count(0)
    expect(banner).to_be_visible()

    # To a list of users: a notification each, not a banner.
    page.get_by_label("These users (a notification each)").check()
    composer.get_by_label("User ids").fill(user)
    composer.get_by_label("Title").fill(f"Your quota was raised {user}")
    expect(page.locator("#preview .notification")).to_contain_text("Your quota was raised")
    composer.get_by_role("button", name="Send to 1 user").click()
    expect(page.locator("#broadcast-result")).to_contain_text("Sent to 1 user")
    expect(open_before.locator("li.notification", has_text="Your quota was raised")).to_be_visible()
    expect(open_before.locator("#announcements .banner")).to_have_count(1)

    entries = page.locator("#audit li[data-action='broadcast']")
    expect(entries.filter(has_text=title)).to_have_count(1)
    assert errors == []
    assert later_errors == []
    assert admin_errors == []


def test_c_a_sign_in_without_the_admin_role_gets_admins_only(
    admin_server: ServerProcess, signed_in: SignedIn, browser: Browser, screenshot: Screenshot
) -> None:
    page = signed_in(admin_server.url, user_name("dora")).new_page()
    response = page.goto("/app/admin")
    assert response is not None
    assert response.status == 403
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    expect(page.locator("#forbidden")).to_be_visible()
    expect(page.get_by_role("heading", name="Admins only")).to_be_focused()
    expect(page.locator("#main")).to_be_hidden()
    expect(page.locator("#sections")).to_be_hidden()
    expect(page).to_have_title("Admins only · Sinal")
    screenshot(page, "forbidden")

    anonymous = browser.new_context(base_url=admin_server.url)
    try:
        page = anonymous.new_page()
        response = page.goto("/app/admin")
        assert response is not None
        assert response.status == 200
        expect(page.locator("#signin")).to_be_visible()
        expect(page.locator("#signin-title")).to_have_text("You are not signed in")
        expect(page.locator("#forbidden")).to_be_hidden()
    finally:
        anonymous.close()


def test_d_the_page_on_a_phone_with_live_counters_and_a_refused_limit(
    admin_server: ServerProcess, admin_page: AdminPage, screenshot: Screenshot
) -> None:
    page, errors = admin_page(admin_server.url, viewport=PHONE, is_mobile=True, has_touch=True)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.evaluate(
        "() => { window.reports = 0; sinal.on('admin.stats', () => (window.reports += 1)); }"
    )
    # Counters arrive once a second per node, over the stream: not polled.
    page.wait_for_function("() => window.reports >= 3", timeout=10_000)
    assert not [url for url in requests if "/v1/admin/" in url], requests
    live = page.locator("#live tbody tr")
    expect(live).to_have_count(1)
    expect(live.first.locator("td[data-key='sse']")).not_to_have_text("\u2013")
    expect(live.first.locator("td[data-key='events']")).not_to_have_text("\u2013")
    expect(live.first.locator(".stale-tag")).to_be_hidden()
    expect(page.locator("#live-status")).to_have_text("1 node reporting every second")
    expect(page.locator("#nodes tbody tr")).to_have_count(1)
    expect(page.locator("#nodes tbody tr .pill")).to_have_text("Up")

    limits = page.locator("#limits")
    burst = limits.get_by_label("Action burst")
    expect(burst).not_to_have_value("")
    burst.fill("0")
    limits.get_by_role("button", name="Save changes").click()
    error = page.locator("#limit-actions_burst-error")
    expect(error).not_to_be_empty()
    expect(burst).to_have_attribute("aria-invalid", "true")
    expect(burst).to_be_focused()
    screenshot(page, "phone")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width} px wide"
    limits.get_by_role("button", name="Undo changes").click()
    expect(error).to_be_empty()
    assert errors == []


class Publisher:
    """Events published on `channel` in the background, about 25 a second, until closed."""

    def __init__(self, base_url: str, channel: str) -> None:
        self.base_url = base_url
        self.channel = channel
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        n = 0
        while not self.stopping.wait(0.04):
            publish(self.base_url, self.channel, "load.tick", {"n": n})
            n += 1

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(10)


def test_e_the_dashboard_draws_the_last_minutes_and_moves_on_live(
    admin_server: ServerProcess,
    signed_in: SignedIn,
    admin_page: AdminPage,
    screenshot: Screenshot,
) -> None:
    user = user_name("fern")
    watcher, watcher_errors = open_page(signed_in(admin_server.url, user), "/app/")
    # Tall enough for the whole dashboard: no scrolling moves it from under the pointer.
    page, errors = admin_page(admin_server.url, viewport={"width": 1280, "height": 1400})
    logged = console_errors(page)
    dashboard = page.locator("#dashboard-section")
    deliveries = dashboard.locator("figure[data-chart='events']")
    plot = deliveries.locator("svg")
    # Drawn from `GET /v1/admin/series`, then one point a second from the `admin` channel.
    expect(plot).to_have_attribute("data-last", re.compile(r"^\d+$"))
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    first = int(plot.get_attribute("data-last") or 0)

    publisher = Publisher(admin_server.url, f"notifications:{user}")
    try:
        value = deliveries.locator("li[data-series='deliveries']")
        page.wait_for_function(
            "(li) => Number(li.dataset.value) >= 10", arg=value.element_handle(), timeout=15_000
        )
    finally:
        publisher.close()
    expect(watcher.locator("#connection")).to_have_attribute("data-status", re.compile("open"))
    later = int(plot.get_attribute("data-last") or 0)
    assert later > first, "no new point arrived"
    assert not [url for url in requests if "/v1/admin/series" in url], requests

    # Accessible: a titled image described by the newest figures.
    title_id = plot.get_attribute("aria-labelledby")
    expect(page.locator(f"#{title_id}")).to_have_text("Events in and deliveries")
    summary = page.locator(f"#{plot.get_attribute('aria-describedby')}")
    expect(summary).to_contain_text("Deliveries")
    expect(summary).to_contain_text("Highest:")
    expect(dashboard.locator("figure.chart")).to_have_count(6)
    expect(dashboard.locator("figure[data-chart='lag'] li").first).to_contain_text(
        "p50 (highest node)"
    )
    sse = dashboard.locator("figure[data-chart='connections'] li[data-series='sse']")
    expect(sse).to_have_attribute("data-value", re.compile(r"^[1-9]"))
    # The readout of the second under the pointer.
    box = plot.bounding_box()
    assert box is not None
    plot.hover(position={"x": box["width"] * 0.9, "y": box["height"] / 2})
    readout = deliveries.locator(".chart-readout")
    expect(readout).to_be_visible()
    expect(readout).to_contain_text("Deliveries:")
    dashboard.screenshot(path=ARTIFACTS / "dashboard-desktop.png")
    screenshot(page, "dashboard-desktop")
    page.mouse.move(0, 0)
    expect(readout).to_be_hidden()

    phone, phone_errors = admin_page(
        admin_server.url, viewport=PHONE, is_mobile=True, has_touch=True
    )
    phone_plot = phone.locator("figure[data-chart='events'] svg")
    expect(phone_plot).to_have_attribute("data-last", re.compile(r"^\d+$"))
    phone.locator("#dashboard-section").scroll_into_view_if_needed()
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width} px wide"
    svg_width = phone_plot.bounding_box()
    assert svg_width is not None
    assert svg_width["width"] >= 280  # the chart takes the phone's width
    # The page from its top, cut to the dashboard: a screenshot of the element alone would show
    # the sticky header over it, where the screenshot was stitched.
    phone.evaluate("() => scrollTo(0, 0)")
    top = phone.evaluate(
        "() => document.getElementById('dashboard-section').getBoundingClientRect().top + scrollY"
    )
    height = phone.evaluate("() => document.getElementById('dashboard-section').offsetHeight")
    phone.screenshot(
        path=ARTIFACTS / "dashboard-phone.png",
        full_page=True,
        clip={"x": 0, "y": top - 8, "width": PHONE["width"], "height": height + 16},
    )
    assert errors == []
    assert phone_errors == []
    assert watcher_errors == []
    assert logged == []


def seed_alert(server: ServerProcess, row: AlertRow, *, announce: bool = False) -> None:
    """Write an alert's row into the server's database, as a node that evaluates it would;
    with `announce`, also the `admin.alert` event its transition writes to the outbox."""
    with sqlite3.connect(server.workdir / "sinal.db") as db:
        db.execute(
            "INSERT OR REPLACE INTO sinal_alert (name, state, severity, since, resolved_at, "
            "updated, summary, alert_values, node) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row.name, row.state, row.severity, str(row.since), str(row.resolved_at)
             if row.resolved_at else None, str(row.updated), row.summary, "{}", row.node),
        )  # fmt: skip
        if announce:
            db.execute(
                "INSERT INTO sinal_outbox (channel, type, data) VALUES ('admin', 'admin.alert', ?)",
                (json.dumps(msgspec.to_builtins(AlertView.of(row))),),
            )
    db.close()


def test_f_alerts_are_listed_and_follow_the_servers_evaluations(
    admin_server: ServerProcess, admin_page: AdminPage, screenshot: Screenshot
) -> None:
    """The Alerts section lists what fires, then what resolved in the last day; a change of
    state arrives live. Here the server itself resolves an alert whose condition does not hold
    (no outbox backlog) at its next evaluation, within 5 s, and tells the page and the admin."""
    now = datetime.now(UTC)

    def alert(name: str, fired_ago: float, resolved_ago: float | None, summary: str) -> AlertRow:
        fired = now - timedelta(seconds=fired_ago)
        resolved = None if resolved_ago is None else now - timedelta(seconds=resolved_ago)
        state = "firing" if resolved is None else "resolved"
        return AlertRow(name, state, "critical", fired, resolved, resolved or fired, summary, {},
                        "web-1")  # fmt: skip

    seed_alert(admin_server, alert("SinalRestErrors", 1800, 600, "Errors are over."))
    seed_alert(admin_server, alert("SinalSlowConsumers", 4e5, 3e5, "Long ago."))
    page, errors = admin_page(admin_server.url)
    section = page.locator("#alerts")
    rows = section.locator("tbody tr")
    expect(rows).to_have_count(1)  # resolved three days ago: not listed
    expect(rows.first).to_have_attribute("data-alert", "SinalRestErrors")
    expect(rows.first.locator(".pill")).to_have_text(["Critical", "Resolved"])
    expect(section.locator("#alerts-status")).to_have_text(
        "No alert is firing. Resolved in the last day:"
    )
    page.evaluate(
        """() => {
          window.shown = [];
          sinal.on("admin.alert", () => window.shown.push(
            document.getElementById("alerts-status").textContent));
        }"""
    )

    firing = alert("SinalOutboxBacklog", 0, None, "The oldest event waiting in the outbox is old.")
    seed_alert(admin_server, firing, announce=True)
    page.wait_for_function("() => window.shown.length >= 2", timeout=15_000)
    shown = page.evaluate("window.shown")
    assert shown[:2] == [
        "1 alert firing: Outbox backlog",
        "No alert is firing. Resolved in the last day:",
    ]
    expect(rows).to_have_count(2)
    newest = rows.first
    expect(newest).to_have_attribute("data-alert", "SinalOutboxBacklog")
    expect(newest).to_have_attribute("data-state", "resolved")
    expect(newest.locator(".summary")).to_contain_text("No event waits in the outbox")
    # The admin was told too: a notification, shown as a toast on this page.
    expect(page.locator("#toasts")).to_contain_text("Resolved: Outbox backlog")
    screenshot(page, "alerts")
    page.set_viewport_size(PHONE)
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width} px wide"
    screenshot(page, "alerts-phone")
    assert errors == []


MALFORMED_BROADCASTS = [
    None,
    {"announcement": None},
    {"announcement": {"id": 5, "title": "a number for an id"}},
    {"announcement": {"id": "x1", "title": ""}},
    {"announcement": {"id": "x2", "title": "body of a wrong type", "body": ["a"]}},
    {"title": "no announcement member"},
]


def test_broadcast_events_a_banner_cannot_show_are_ignored(
    admin_server: ServerProcess, signed_in: SignedIn
) -> None:
    """Any service may publish on `broadcast`: what is not an announcement makes no banner and
    breaks nothing; a plain `text` (the form docs/api.md shows) is still a message."""
    page, errors = open_page(signed_in(admin_server.url, user_name("ezra")), "/app/")
    logged = console_errors(page)
    # Counted once the page has shown the announcements already active (earlier tests made
    # some): it marks the region live when that load is done, which may be after the stream is.
    expect(page.locator("#announcements")).to_have_attribute("aria-live", "polite")
    before = page.locator("#announcements .banner").count()
    for data in MALFORMED_BROADCASTS:
        publish(admin_server.url, "broadcast", "broadcast", data)
    publish(admin_server.url, "broadcast", "broadcast", {"text": "Maintenance at 22:00 UTC"})
    expect(page.locator("#toasts .toast")).to_contain_text("Maintenance at 22:00 UTC")
    expect(page.locator("#announcements .banner")).to_have_count(before)
    assert errors == []
    assert logged == []

"""Credentials in the browser: a short-lived sign-in renewed under an open page, one that
expires for good, and a first visit without any.

The server ends each stream at its token's `exp` (`SINAL_AUTH_GRACE=0`); the client gets a
fresh ticket (or sends the renewed cookie) and resumes from its cursor, without a reload.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import jwt
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request, expect

from tests.support import SECRET, ServerProcess, token
from tests.web.test_browser import (
    Screenshot,
    create_notification,
    eventually,
    open_page,
    record_created,
    user_name,
)

TTL_S = 4  # long enough for the page to go live, short enough to expire during the test


@pytest.fixture
def context(browser: Browser, graceless: ServerProcess) -> Iterator[BrowserContext]:
    context = browser.new_context(base_url=graceless.url)
    context.set_default_timeout(10_000)
    yield context
    context.close()


def expiry_of(value: str) -> float:
    return float(jwt.decode(value, SECRET, algorithms=["HS256"])["exp"])


def sign_in(context: BrowserContext, base_url: str, value: str) -> None:
    """What the platform does when someone signs in, or renews the sign-in: set the cookie."""
    context.add_cookies([{"name": "sinal_token", "value": value, "url": base_url}])


def publish_around(base_url: str, user: str, moment: float, titles: list[str]) -> threading.Thread:
    """Create `titles` one by one from a second before `moment` to a second after it (in a
    thread: Playwright's page belongs to this one)."""

    def run() -> None:
        time.sleep(max(0.0, moment - 1 - time.time()))
        for title in titles:
            create_notification(base_url, user, title)
            time.sleep(2 / len(titles))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def renew_and_check(
    page: Page, base_url: str, user: str, expires_at: float, renew: Callable[[], None]
) -> None:
    """Events before, during and after the renewal reach the app once each, with no reload."""
    record_created(page)
    page.evaluate(
        """() => {
            window.notReloaded = true;
            window.disconnects = [];
            sinal.on("disconnect", (d) => disconnects.push(d.reason));
        }"""
    )
    before = [f"Before renewal {n}" for n in range(3)]
    during = [f"During renewal {n}" for n in range(8)]
    after = [f"After renewal {n}" for n in range(3)]
    for title in before:
        create_notification(base_url, user, title)
    eventually(lambda: len(page.evaluate("created")) == len(before), what="the first events")
    renew()
    publishing = publish_around(base_url, user, expires_at, during)
    eventually(lambda: page.evaluate("disconnects") == ["expired"], what="the expiry", within=15)
    publishing.join(15)
    for title in after:
        create_notification(base_url, user, title)

    everything = before + during + after
    eventually(lambda: len(page.evaluate("created")) >= len(everything), what="every event")
    eventually(lambda: page.evaluate("sinal.status") == "open", what="the stream open")
    assert page.evaluate("window.notReloaded") is True
    created = page.evaluate("created")
    assert sorted(created) == sorted(everything), "an event was lost or repeated"
    assert page.evaluate("disconnects") == ["expired"]
    assert time.time() > expires_at  # the first stream really ended with its token


def test_a_page_whose_cookie_is_renewed_keeps_every_event_across_the_expiry(
    graceless: ServerProcess, context: BrowserContext, screenshot: Screenshot
) -> None:
    """Regression: the stream ran on past the token's `exp`. Now it ends then with
    `disconnect` (`expired`); the page reconnects at once with the renewed cookie and resumes
    from its cursor: nothing lost, nothing twice, no reload."""
    user = user_name("ren")
    first = token(user, ttl_s=TTL_S)
    sign_in(context, graceless.url, first)
    page, errors = open_page(context, "/app/")

    def renew() -> None:
        sign_in(context, graceless.url, token(user))

    renew_and_check(page, graceless.url, user, expiry_of(first), renew)
    expect(page.locator("li.notification")).to_have_count(14)
    screenshot(page, "renewed")
    assert errors == []


def test_a_client_with_get_token_gets_a_fresh_ticket_and_keeps_every_event(
    graceless: ServerProcess, context: BrowserContext
) -> None:
    """The same with `getToken` and tickets: after `disconnect` (`expired`) the client mints
    a fresh ticket from the token `getToken` returns now."""
    user = user_name("tik")
    first = token(user, ttl_s=TTL_S)
    page = context.new_page()
    page.goto("/app/icon.svg")  # any page of the origin, with no client of its own
    page.evaluate(
        """async (token) => {
            const { connect } = await import("/app/sinal.js");
            window.currentToken = token;
            window.sinal = connect({ getToken: () => window.currentToken });
        }""",
        first,
    )
    eventually(lambda: page.evaluate("sinal.status") == "open", what="the stream open")

    def renew() -> None:
        page.evaluate("(token) => { window.currentToken = token; }", token(user))

    renew_and_check(page, graceless.url, user, expiry_of(first), renew)


def test_a_sign_in_that_expires_for_good_says_so_and_stops_asking(
    graceless: ServerProcess, context: BrowserContext, screenshot: Screenshot
) -> None:
    """Not renewed: the page says the sign-in expired, keeps what it showed, and stops
    reconnecting after a few refusals instead of looping on 401s."""
    user = user_name("exp")
    sign_in(context, graceless.url, token(user, ttl_s=TTL_S))
    page, errors = open_page(context, "/app/")
    create_notification(graceless.url, user, "Shown before the expiry")
    expect(page.locator("li.notification")).to_have_count(1)

    indicator = page.locator("#connection")
    expect(indicator).to_have_attribute("data-status", "signed-out", timeout=15_000)
    eventually(lambda: page.evaluate("sinal.status") == "signed-out", what="the client stopping")
    expect(indicator.locator(".label")).to_have_text("Signed out")
    expect(indicator).to_contain_text("Your sign-in expired")
    expect(page.get_by_role("heading", name="Your sign-in expired")).to_be_visible()
    expect(page.locator("li.notification")).to_have_count(1)  # still on screen
    attempts = count_attempts(page, 2_000)
    assert attempts == [], f"the stopped client still asked: {attempts}"
    screenshot(page, "expired")
    assert errors == []


def test_the_first_visit_says_not_signed_in_and_asks_nothing_more(
    graceless: ServerProcess, context: BrowserContext, screenshot: Screenshot
) -> None:
    """Regression: without a cookie the page said "Signed out" (which the guide explains as an
    expired sign-in) above empty lists, and retried the stream and long-poll with backoff
    forever, each a 401."""
    page = context.new_page()
    attempts: list[str] = []
    page.on("request", lambda request: attempts.extend(live_attempt(request)))
    page.goto("/app/")
    expect(page.get_by_role("heading", name="You are not signed in")).to_be_visible()
    indicator = page.locator("#connection")
    expect(indicator).to_have_attribute("data-status", "signed-out")
    expect(indicator.locator(".label")).to_have_text("Not signed in")
    expect(page.get_by_role("heading", name="Notifications")).to_be_hidden()
    eventually(lambda: page.evaluate("sinal.status") == "signed-out", what="the client stopping")
    tried = len(attempts)
    later = count_attempts(page, 3_000)  # the retry loop made several within this time
    assert later == [], f"asked again after being refused: {later} (first {tried})"
    screenshot(page, "first-visit")


def live_attempt(request: Request) -> list[str]:
    """The request, if it is an attempt to open the live connection."""
    path = request.url.split("?")[0]
    return [path] if path.endswith(("/v1/stream", "/v1/notifications/poll")) else []


def count_attempts(page: Page, ms: int) -> list[str]:
    """The live-connection attempts the page makes within the next `ms` milliseconds."""
    seen: list[str] = []

    def listener(request: Request) -> None:
        seen.extend(live_attempt(request))

    page.on("request", listener)
    page.wait_for_timeout(ms)
    page.remove_listener("request", listener)
    return seen


def test_the_client_acts_on_each_disconnect_reason(
    graceless: ServerProcess, context: BrowserContext
) -> None:
    """`web/sinal/connection.js` for the reasons no server path sends yet (an administrator's
    disconnect, a revocation, a limit): how it reconnects after each, driven directly."""
    page = context.new_page()
    page.goto("/app/icon.svg")
    outcome = page.evaluate(
        """async () => {
            const { Connection } = await import("/app/sinal/connection.js");
            const run = async (payload, { token = "old", newToken = "old" } = {}) => {
                const seen = { statuses: [], restarts: [], forgot: 0, frames: [] };
                const http = {
                    getToken: token === null ? null : () => newToken,
                    ticketToken: token,
                    forgetTicket: () => (seen.forgot += 1),
                };
                const connection = new Connection(http, {
                    onFrame: (frame) => seen.frames.push(frame.kind),
                    onStatus: (status) => seen.statuses.push(status),
                    onRefused: () => {},
                });
                connection.stopped = false;
                connection.restart = (options = {}) => seen.restarts.push(options);
                connection.disconnected(connection.generation, payload);
                await new Promise((resolve) => setTimeout(resolve, 0));
                return seen;
            };
            const revoked = { reason: "revoked", reconnect: false };
            return {
                expired: await run({ reason: "expired", reconnect: true }),
                kicked: await run({ reason: "kicked", reconnect: true }),
                shutdown: await run({ reason: "shutdown", reconnect: true }),
                limit: await run({ reason: "limit", reconnect: true, retry_after: 3 }),
                revokedSameToken: await run(revoked),
                revokedNewToken: await run(revoked, { newToken: "new" }),
                revokedCookie: await run(revoked, { token: null }),
            };
        }"""
    )
    assert outcome["expired"]["restarts"] == [{"now": True, "quiet": True}]
    assert outcome["expired"]["forgot"] == 1  # a fresh ticket
    assert outcome["expired"]["frames"] == ["disconnect"]  # handed on to the app
    for reason in ("kicked", "shutdown"):
        assert outcome[reason]["restarts"] == [{}], reason  # the usual backoff, with jitter
    [limit] = outcome["limit"]["restarts"]
    assert 3000 <= limit["after"] <= 3250
    for case in ("revokedSameToken", "revokedCookie"):
        assert outcome[case]["restarts"] == [], case
        assert outcome[case]["statuses"] == ["signed-out"], case
    assert outcome["revokedNewToken"]["restarts"] == [{"now": True}]
    assert outcome["revokedNewToken"]["statuses"] == []

"""Browser fixtures: Debian's Chromium driven by Playwright, never a downloaded browser.

Without /usr/bin/chromium the browser tests skip and say why, except under
`SINAL_REQUIRE_SERVICES=1` (set by `.ci/run`, which installs it), where they fail.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.conftest import require_service
from tests.support import ROOT, token

CHROMIUM = os.environ.get("SINAL_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "web"


# Per module, not per session: Playwright's sync API keeps an event loop running in this thread
# while it is open, and the async tests of any module run after it would find it there.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        require_service("Chromium", f"{CHROMIUM} is missing: apt-get install chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


@pytest.fixture
def signed_in(browser: Browser) -> Iterator[Callable[..., BrowserContext]]:
    """New browser profiles (each its own cookies, storage and tabs), signed in as a user the
    way the platform does it: the `sinal_token` cookie."""
    contexts: list[BrowserContext] = []

    def open_context(
        base_url: str, user: str, teams: tuple[str, ...] = (), **options: object
    ) -> BrowserContext:
        context = browser.new_context(base_url=base_url, **options)  # type: ignore[arg-type]
        context.add_cookies(
            [{"name": "sinal_token", "value": token(user, teams=teams), "url": base_url}]
        )
        context.set_default_timeout(10_000)
        contexts.append(context)
        return context

    yield open_context
    for context in contexts:
        context.close()


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Callable[[Page, str], Path]:
    """Save a full-page screenshot under test-artifacts/web/ and print where."""

    def take(page: Page, name: str) -> Path:
        test = re.sub(r"[^\w-]+", "-", request.node.name).strip("-")
        path = ARTIFACTS / f"{test}-{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=path, full_page=True)
        print(f"screenshot: {path}")
        return path

    return take

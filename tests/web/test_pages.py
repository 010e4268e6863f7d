"""The pages as a newcomer meets them, in Chromium: events they cannot show, the title, an
execution that is not there, steps not started yet, and toasts that cover nothing.

Screenshots go to test-artifacts/web/ (desktop and phone width).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import httpx
import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Page, expect

from tests.support import ROOT, SERVICE, ServerProcess, token
from tests.web.test_browser import (
    Screenshot,
    SignedIn,
    create_notification,
    open_page,
    user_name,
)

DESKTOP = {"width": 1280, "height": 720}
PHONE = {"width": 390, "height": 844}


def publish(base_url: str, channel: str, type: str, data: Any) -> None:
    response = httpx.post(
        f"{base_url}/v1/publish",
        json={"channel": channel, "type": type, "data": data},
        headers=SERVICE,
        timeout=10,
    )
    assert response.status_code == 201, response.text


def create_execution(base_url: str, team: str, owner: str, **fields: Any) -> dict[str, Any]:
    response = httpx.post(
        f"{base_url}/v1/executions",
        json={"team": team, "owner": owner, "name": "deploy api", "kind": "deploy", **fields},
        headers=SERVICE,
        timeout=10,
    )
    assert response.status_code == 201, response.text
    execution: dict[str, Any] = response.json()
    return execution


def report(base_url: str, id: str, *events: dict[str, Any]) -> None:
    response = httpx.post(
        f"{base_url}/v1/executions/{id}/events",
        json={"events": list(events)},
        headers=SERVICE,
        timeout=10,
    )
    assert response.status_code == 200, response.text


def console_errors(page: Page) -> list[str]:
    """Messages the page logs as errors (a handler that threw is logged so by the client)."""
    errors: list[str] = []

    def note(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", note)
    return errors


def overlaps(page: Page, first: str, second: str) -> bool:
    a, b = page.locator(first).bounding_box(), page.locator(second).bounding_box()
    assert a is not None, f"{first} is not shown"
    assert b is not None, f"{second} is not shown"
    return (
        a["x"] < b["x"] + b["width"]
        and b["x"] < a["x"] + a["width"]
        and a["y"] < b["y"] + b["height"]
        and b["y"] < a["y"] + a["height"]
    )


# Events of the pages' types that are not what the server publishes: a service may publish
# anything on a user's or an execution's channel.
BAD_NOTIFICATION_EVENTS = [
    ("notification.created", {"title": "Report ready"}),  # the README's first event, once
    ("notification.created", None),
    ("notification.created", {"notification": {"id": 7}}),
    ("notification.read", {}),
    ("notification.read", {"ids": "all"}),
    ("notification.dismissed", {"ids": [1, 2]}),
    ("notification.read_all", {"before": 5}),
    ("notification.someday", {"x": 1}),
]
BAD_EXECUTION_EVENTS = [
    ("execution.status", None),
    ("execution.status", {"status": "running"}),
    ("execution.status", {"seq": 99, "status": "succeeded"}),  # no progress to show
    ("execution.progress", {"seq": 1, "progress": "half"}),
    ("execution.step_started", {"seq": 99, "step": 10**9, "name": "forever"}),
    ("execution.step_started", {"seq": 99, "step": 2, "name": "x", "total_steps": "many"}),
    ("execution.step_finished", {"seq": 99}),
    ("execution.log", {"seq": 99, "message": 5}),
    ("execution.error", "boom"),
    ("execution.command", {"command": "retry"}),
    ("execution.whatever", {}),
]


def test_pages_ignore_events_they_cannot_show_and_keep_working(
    memory_server: ServerProcess, signed_in: SignedIn
) -> None:
    """Bug: the README's first event (a `notification.created` published with `POST
    /v1/publish`, not a stored notification) threw in the page (`id` of undefined)."""
    user, team = user_name("ian"), f"team-{uuid.uuid4().hex[:6]}"
    context = signed_in(memory_server.url, user, teams=(team,))
    page, errors = open_page(context, "/app/")
    logged = console_errors(page)
    for type, data in BAD_NOTIFICATION_EVENTS:
        publish(memory_server.url, f"notifications:{user}", type, data)
    create_notification(memory_server.url, user, "After the odd ones")
    expect(page.locator("li.notification")).to_have_count(1)
    expect(page.locator("li.notification")).to_contain_text("After the odd ones")
    expect(page.locator("#unread-badge")).to_have_text("1")
    expect(page.locator("#toasts .toast")).to_have_count(1)

    execution = create_execution(memory_server.url, team, user, total_steps=2)
    page_of_execution, execution_errors = open_page(context, f"/app/executions/{execution['id']}")
    execution_logged = console_errors(page_of_execution)
    expect(page_of_execution.locator("#name")).to_have_text("deploy api")
    for type, data in BAD_EXECUTION_EVENTS:
        publish(memory_server.url, f"execution:{execution['id']}", type, data)
    report(
        memory_server.url,
        execution["id"],
        {"type": "step_started", "seq": 1, "step": 1, "name": "build"},
        {"type": "log", "seq": 2, "message": "built in 3 s"},
        {"type": "progress", "seq": 3, "progress": 40},
    )
    expect(page_of_execution.locator("#progress")).to_have_attribute("aria-valuenow", "40")
    expect(page_of_execution.locator("#log")).to_contain_text("built in 3 s")
    expect(page_of_execution.locator("#steps li")).to_have_count(2)
    expect(page_of_execution.locator("#steps li").first).to_contain_text("build")
    expect(page_of_execution.locator("#state")).to_have_text("running")
    assert errors == []
    assert execution_errors == []
    assert logged == []
    assert execution_logged == []


def readme_notification() -> dict[str, Any]:
    """The body of the README's `POST /v1/notifications`."""
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"curl -X POST \S+/v1/notifications.*?-d '([^']+)'", readme, re.S)
    assert command is not None, "the README creates no notification"
    body: dict[str, Any] = json.loads(command.group(1))
    return body


def test_the_readmes_first_notification_arrives_in_the_page_and_the_stream(
    memory_server: ServerProcess, signed_in: SignedIn
) -> None:
    """Bug: the README's first event was a `POST /v1/publish` of a `notification.created`:
    no stored notification, and the page threw on it. The README now creates one."""
    body = readme_notification()
    user = body["user"] = user_name(body["user"])
    page, errors = open_page(signed_in(memory_server.url, user), "/app/")
    headers = {"Authorization": f"Bearer {token(user)}"}
    with (
        httpx.Client(base_url=memory_server.url, timeout=10) as client,
        client.stream("GET", "/v1/stream", headers=headers) as stream,
    ):
        lines = stream.iter_lines()
        assert next(line for line in lines if line.startswith("event: ")) == "event: ready"
        created = client.post("/v1/notifications", json=body, headers=SERVICE)
        assert created.status_code == 201, created.text
        assert next(line for line in lines if line.startswith("event: ")) == (
            "event: notification.created"
        )
        data = json.loads(next(line for line in lines if line.startswith("data: "))[6:])
    assert data["data"]["notification"]["title"] == body["title"]
    row = page.locator("li.notification")
    expect(row).to_have_count(1)
    expect(row).to_contain_text(body["title"])
    expect(page.locator("#toasts .toast")).to_contain_text(body["title"])
    assert errors == []


def test_the_title_shows_one_unread_count(
    memory_server: ServerProcess, signed_in: SignedIn
) -> None:
    """Bug: the execution page's title gathered counts: `(26) (25)deploy api…`."""
    user, team = user_name("jo"), f"team-{uuid.uuid4().hex[:6]}"
    for n in range(2):
        create_notification(memory_server.url, user, f"Earlier {n}")
    execution = create_execution(memory_server.url, team, user)
    page, errors = open_page(
        signed_in(memory_server.url, user, teams=(team,)), f"/app/executions/{execution['id']}"
    )
    expect(page).to_have_title("(2) deploy api · Sinal")
    create_notification(memory_server.url, user, "One more")
    expect(page).to_have_title("(3) deploy api · Sinal")
    create_notification(memory_server.url, user, "And another")
    expect(page).to_have_title("(4) deploy api · Sinal")
    assert errors == []


def refused(page: Page, channel: str) -> Any:
    """What the client answers when asked for `channel` (a number: the refusal's status)."""
    return page.evaluate(
        "(channel) => sinal.subscribe(channel).then(() => 'subscribed', (e) => e.status)", channel
    )


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_an_execution_that_is_not_there_says_so(
    memory_server: ServerProcess,
    signed_in: SignedIn,
    screenshot: Screenshot,
    viewport: dict[str, int],
) -> None:
    """Bug: `/app/executions/<unknown id>` said "not a member of the team" (the stream's 403
    overwrote the REST 404), and `/app/executions/not-a-uuid` showed a raw problem document."""
    context = signed_in(memory_server.url, user_name("kim"), teams=("ops",), viewport=viewport)
    unknown = str(uuid.uuid4())
    page, errors = open_page(context, f"/app/executions/{unknown}")
    expect(page.locator("#name")).to_have_text("No such execution")
    assert refused(page, f"execution:{unknown}") == 403  # the stream's answer has come
    expect(page.locator("#load-error")).to_have_text(
        "There is no execution with this id, or it belongs to a team you are not in."
    )
    expect(page).to_have_title("No such execution · Sinal")
    expect(page.locator("#progress")).to_be_hidden()
    expect(page.locator("#steps")).to_be_hidden()
    expect(page.locator("#retry")).to_be_hidden()
    screenshot(page, "unknown")

    response = page.goto("/app/executions/not-a-uuid")
    assert response is not None
    assert response.status == 404
    assert response.headers["content-type"].startswith("text/html")
    expect(page.locator("#name")).to_have_text("No such execution")
    expect(page.locator("#load-error")).to_contain_text("“not-a-uuid” is not an execution id")
    expect(page.locator("#progress")).to_be_hidden()
    assert "about:blank" not in page.content()
    screenshot(page, "not-a-uuid")
    assert errors == []


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_steps_not_started_say_so_and_toasts_cover_neither_steps_nor_log_controls(
    memory_server: ServerProcess,
    signed_in: SignedIn,
    screenshot: Screenshot,
    viewport: dict[str, int],
) -> None:
    """Bug: steps not started showed as a bare "Step 2", "Step 4"; toasts covered the log's
    controls and, on a phone, the steps."""
    user, team = user_name("lou"), f"team-{uuid.uuid4().hex[:6]}"
    execution = create_execution(memory_server.url, team, user, total_steps=4)
    report(
        memory_server.url,
        execution["id"],
        {"type": "step_started", "seq": 1, "step": 1, "name": "build image"},
        {"type": "step_finished", "seq": 2, "step": 1},
        {"type": "step_started", "seq": 3, "step": 3, "name": "migrate database"},
        *[{"type": "log", "seq": 4 + n, "message": f"applying migration {n}"} for n in range(30)],
        {"type": "progress", "seq": 34, "progress": 55},
    )
    context: BrowserContext = signed_in(
        memory_server.url, user, teams=(team,), viewport=viewport, is_mobile=viewport == PHONE
    )
    page, errors = open_page(context, f"/app/executions/{execution['id']}")
    steps = page.locator("#steps li")
    expect(steps).to_have_count(4)
    expect(steps.nth(0)).to_contain_text("build image")
    expect(steps.nth(1)).to_contain_text("Step 2")
    expect(steps.nth(1).locator(".step-status")).to_have_text("not started")
    expect(steps.nth(2)).to_contain_text("migrate database")
    expect(steps.nth(2).locator(".step-status")).to_have_text("running")
    expect(steps.nth(3).locator(".step-status")).to_have_text("not started")

    for n in range(3):
        create_notification(
            memory_server.url, user, f"Deploy {n} needs a look", body="A long body " * 6
        )
    expect(page.locator("#toasts .toast")).to_have_count(3)
    for target in ("#log-heading", "#follow", "#steps"):
        page.locator(target).evaluate("(element) => element.scrollIntoView({block: 'center'})")
        shown = page.locator("#toasts .toast:visible")
        assert shown.count() >= (2 if viewport == PHONE else 3)
        for n in range(shown.count()):
            assert not overlaps(page, f"#toasts .toast:visible >> nth={n}", target), (
                f"a toast covers {target}"
            )
    page.locator("#steps").scroll_into_view_if_needed()
    screenshot(page, "toasts")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= viewport["width"], f"the page is {width} px wide"
    assert errors == []

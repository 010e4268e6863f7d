"""Logs (`api/logs.py`, `api/requests.py`): no secret at any level, JSON lines, request ids.

A server at `debug` gets a full run of the API with every kind of credential; then the captured
log is searched for each secret used. The log must also show that the run was logged in detail
(requests, handshake headers), so that this test could fail. With `SINAL_LOG_FORMAT=json`,
every line must parse, and each request's access line is found by the id its response carried.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.typing import Origin

from api.logs import JsonFormatter, redact
from tests.support import ADMIN, SERVICE, ServerProcess, open_stream, token

pytestmark = pytest.mark.anyio


async def ping(url: str, headers: dict[str, str] | None = None, origin: str | None = None) -> None:
    async with connect(
        url, additional_headers=headers, origin=None if origin is None else Origin(origin)
    ) as socket:
        await socket.send(json.dumps({"op": "ping", "ref": "p"}))
        with anyio.fail_after(10):
            assert "pong" in json.loads(await socket.recv())["result"]


async def test_no_token_ticket_or_cookie_reaches_a_debug_log(
    spawn: Callable[..., ServerProcess],
) -> None:
    """The bug: at SINAL_LOG_LEVEL=debug, the WebSocket handshake was logged header by header,
    `authorization` and `cookie` values in clear."""
    server = spawn({"SINAL_LOG_LEVEL": "debug"})
    bearer_token = token("log-bearer", "service")
    cookie_token = token("log-cookie")
    bearer = {"Authorization": f"Bearer {bearer_token}"}
    cookie = {"Cookie": f"sinal_token={cookie_token}; theme=dark"}
    ws = server.url.replace("http://", "ws://") + "/v1/actions"
    secrets = [bearer_token, cookie_token]
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        tickets = []
        for headers in (bearer, cookie):
            response = await client.post("/v1/auth/ticket", headers=headers)
            assert response.status_code == 200, response.text
            tickets.append(response.json()["ticket"])
        secrets += tickets
        # Streams: with the header, with a ticket, with the cookie.
        for headers, params in ((bearer, None), ({}, {"ticket": tickets[0]}), (cookie, None)):
            async with open_stream(server.url, headers, params=params):
                pass
        response = await client.get(
            "/v1/notifications/poll", params={"ticket": tickets[1], "wait": 0}
        )
        assert response.status_code == 200, response.text
        # The action socket: header, cookie (from the page's origin), ticket.
        await ping(ws, bearer)
        await ping(ws, cookie, origin=server.url)
        await ping(f"{ws}?ticket={tickets[0]}")
        # REST, with each credential; a refusal too (its problem names no secret).
        for headers in (bearer, cookie):
            response = await client.get("/v1/notifications/unread-count", headers=headers)
            assert response.status_code == 200, response.text
            response = await client.post(
                "/v1/notifications/read-all",
                headers={**headers, "Origin": server.url, "Content-Type": "application/json"},
                content=b"{}",
            )
            assert response.status_code == 200, response.text
        response = await client.get("/v1/notifications", params={"token": bearer_token})
        assert response.status_code == 401
    server.stop()

    logs = server.logs()
    # The run was logged in detail: requests, and the handshakes header by header.
    assert "GET /v1/stream" in logs
    # Access lines in text: the request's id and caller after the message.
    assert re.search(
        r"INFO sinal\.access: GET /v1/notifications/unread-count 200 [\d.]+ms "
        r"request_id=[0-9a-f]{16} sub=log-bearer\n",
        logs,
    ), logs
    assert "/v1/actions?ticket=[redacted]" in logs
    assert "< cookie: [redacted]" in logs.lower()
    assert "< authorization: [redacted]" in logs.lower()
    assert logs.count("\n") > 50, logs
    for secret in secrets:
        # The whole of it, and its signature alone (the part that cannot be guessed).
        assert secret not in logs
        assert secret.rsplit(".", 1)[-1] not in logs


def test_redact() -> None:
    jwt = token("someone")
    for text, expected in (
        (f"GET /v1/stream?ticket={jwt}&channel=x", "GET /v1/stream?ticket=[redacted]&channel=x"),
        (f"GET /v1/stream?t%69cket={jwt}", "GET /v1/stream?t%69cket=[redacted]"),
        (f"< Authorization: Bearer {jwt}", "< Authorization: [redacted]"),
        (f"< cookie: a=b; sinal_token={jwt}", "< cookie: [redacted]"),
        (f"(b'authorization', b'Bearer {jwt}')", "(b'authorization', b'[redacted]')"),
        (f"{{'cookie': 'sinal_token={jwt}'}}", "{'cookie': '[redacted]'}"),
        (f"token {jwt} refused", "token [redacted] refused"),
        ("GET /v1/notifications?limit=5", "GET /v1/notifications?limit=5"),
    ):
        assert redact(text) == expected, text


# -- JSON lines and request ids -----------------------------------------------------------------

TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def json_lines(server: ServerProcess) -> list[dict[str, Any]]:
    """Every line the server wrote, each parsed as a JSON object (any other line fails)."""
    lines = []
    for number, line in enumerate(server.logs().splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError:
            pytest.fail(f"line {number} is not JSON: {line!r}")
        assert isinstance(record, dict), line
        lines.append(record)
    return lines


async def access_lines(server: ServerProcess, ids: list[str]) -> dict[str, dict[str, Any]]:
    """The access lines of the requests `ids` by id, once all are written: a stream's or a
    socket's when the server has seen it close."""
    with anyio.fail_after(10):
        while True:
            found = {
                record["request_id"]: record
                for record in json_lines(server)
                if record["logger"] == "sinal.access"
            }
            if set(ids) <= set(found):
                return found
            await anyio.sleep(0.05)


async def test_json_logs_parse_and_carry_each_request_by_its_id(
    spawn: Callable[..., ServerProcess],
) -> None:
    server = spawn({"SINAL_LOG_FORMAT": "json"})
    alice = token("alice")
    bearer = {"Authorization": f"Bearer {alice}"}
    ids: dict[str, str] = {}  # each request -> the id its response carried
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:

        async def call(name: str, method: str, path: str, status: int, **kw: Any) -> Any:
            response = await client.request(method, path, **kw)
            assert response.status_code == status, response.text
            ids[name] = response.headers["x-request-id"]
            return response.json()

        given = "client-chosen id 42"
        await call(
            "given",
            "GET",
            "/v1/notifications/unread-count",
            200,
            headers={**bearer, "X-Request-ID": given},
        )
        assert ids["given"] == given
        too_long = "x" * 129
        await call(
            "made up",
            "GET",
            "/v1/notifications/unread-count",
            200,
            headers={**bearer, "X-Request-ID": too_long},
        )
        assert ids["made up"] != too_long
        await call("no route", "GET", "/v1/no/such/route", 404)
        await call("missing", "GET", f"/v1/notifications/{uuid.uuid4()}", 404, headers=bearer)
        await call(
            "publish",
            "POST",
            "/v1/publish",
            201,
            headers=SERVICE,
            json={"channel": "notifications:alice", "type": "t", "data": {}},
        )
        await call(
            "refused",
            "GET",
            "/v1/notifications",
            401,
            headers={"Authorization": f"Bearer {alice}x"},
        )
        ticket = (await call("ticket", "POST", "/v1/auth/ticket", 200, headers=bearer))["ticket"]
        await call(
            "long-poll", "GET", "/v1/notifications/poll", 200, params={"ticket": ticket, "wait": 0}
        )
    async with open_stream(server.url, {}, params={"ticket": ticket}) as (received, _):
        ids["stream"] = received.headers["x-request-id"]
        opened = time.monotonic()
        await anyio.sleep(0.2)
    streamed_ms = (time.monotonic() - opened) * 1000
    ws = server.url.replace("http://", "ws://") + "/v1/actions"
    async with connect(ws, additional_headers={**bearer, "X-Request-ID": "socket-1"}) as socket:
        assert socket.response is not None
        ids["socket"] = socket.response.headers["X-Request-ID"]
    assert ids["socket"] == "socket-1"
    assert len(set(ids.values())) == len(ids), ids

    lines = await access_lines(server, list(ids.values()))
    for name, method, route, status, sub in (
        ("given", "GET", "/v1/notifications/unread-count", 200, "alice"),
        ("made up", "GET", "/v1/notifications/unread-count", 200, "alice"),
        ("no route", "GET", None, 404, None),
        ("missing", "GET", "/v1/notifications/{id}", 404, "alice"),
        ("publish", "POST", "/v1/publish", 201, "svc"),
        ("refused", "GET", "/v1/notifications", 401, None),
        ("ticket", "POST", "/v1/auth/ticket", 200, "alice"),
        ("long-poll", "GET", "/v1/notifications/poll", 200, "alice"),
        ("stream", "GET", "/v1/stream", 200, "alice"),
        ("socket", "GET", "/v1/actions", 101, "alice"),
    ):
        line = lines[ids[name]]
        fields = tuple(line.get(field) for field in ("method", "route", "status", "sub"))
        assert fields == (method, route, status, sub), (name, line)
        assert line["level"] == "INFO"
        assert TIME.fullmatch(line["time"]), line
        assert isinstance(line["duration_ms"], int | float)
        assert line["duration_ms"] >= 0
    # The message says what was asked, as sent (redacted); the route is the template.
    assert lines[ids["no route"]]["message"].startswith("GET /v1/no/such/route 404 ")
    assert "?ticket=[redacted]" in lines[ids["stream"]]["message"]
    assert 200 <= lines[ids["stream"]]["duration_ms"] <= streamed_ms + 5000

    server.stop()
    records = json_lines(server)
    assert any(record["logger"] == "uvicorn.error" for record in records)
    assert not any(record["logger"] == "uvicorn.access" for record in records)  # ours instead
    logs = server.logs()
    for secret in (alice, ticket):
        assert secret not in logs
        assert secret.rsplit(".", 1)[-1] not in logs


def test_a_traceback_is_one_json_line_without_secrets() -> None:
    """An exception's text goes to `exc`, redacted like the message, on the record's line."""
    secret = token("someone")
    try:
        raise ValueError(f"refused token {secret}\nsecond line")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "sinal.api", logging.ERROR, __file__, 1, "failed: %s", (f"?ticket={secret}",), exc_info
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["message"] == "failed: ?ticket=[redacted]"
    assert "ValueError: refused token [redacted]" in parsed["exc"]
    assert secret.rsplit(".", 1)[-1] not in line


async def test_an_audit_entry_has_the_id_its_response_carried(
    spawn: Callable[..., ServerProcess],
) -> None:
    server = spawn({"SINAL_LOG_FORMAT": "json"})
    async with httpx.AsyncClient(base_url=server.url, timeout=10, headers=ADMIN) as client:
        for given in ({"X-Request-ID": "change-4711"}, {}):
            response = await client.put(
                "/v1/admin/limits", json={"actions_burst": 7}, headers=given
            )
            assert response.status_code == 200, response.text
            request_id = response.headers["x-request-id"]
            assert request_id == given.get("X-Request-ID", request_id)
            response = await client.get("/v1/admin/audit", params={"action": "limits.update"})
            newest = response.json()["entries"][0]
            assert (newest["actor"], newest["request_id"]) == ("root", request_id)
    line = (await access_lines(server, ["change-4711"]))["change-4711"]
    assert (line["route"], line["sub"]) == ("/v1/admin/limits", "root")


async def test_above_its_rate_the_access_log_is_sampled(
    spawn: Callable[..., ServerProcess],
) -> None:
    """SINAL_ACCESS_LOG_SAMPLE_ABOVE lines a second in full; past that a line stands for
    `sampled` requests. The metrics still count every request."""
    server = spawn({"SINAL_LOG_FORMAT": "json", "SINAL_ACCESS_LOG_SAMPLE_ABOVE": "3"})
    sent = 60
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        for n in range(sent):
            headers = {"X-Request-ID": f"burst-{n}"}
            assert (await client.get("/healthz", headers=headers)).status_code == 200
        # Asked after the burst, so every line of it is written (when its request finished).
        metrics = (await client.get("/metrics")).text
    lines = [
        line
        for line in json_lines(server)
        if line["logger"] == "sinal.access" and line["request_id"].startswith("burst-")
    ]
    assert 3 <= len(lines) < sent
    sampled = [line["sampled"] for line in lines if "sampled" in line]
    assert sampled
    assert all(weight >= 2 for weight in sampled)
    seconds = {line["time"][:19] for line in lines}
    assert len(lines) - len(sampled) <= 3 * (len(seconds) + 1)  # in full: 3 a second
    assert sum(line.get("sampled", 1) for line in lines) <= sent
    counted = re.search(
        r'_requests_total\{method="GET",route="/healthz",status="200"\} (\S+)', metrics
    )
    assert counted is not None
    assert float(counted.group(1)) == sent

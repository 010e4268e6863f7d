"""No secret reaches the log, at any level (`api/logs.py`).

A server at `debug` gets a full run of the API with every kind of credential; then the captured
log is searched for each secret used. The log must also show that the run was logged in detail
(requests, handshake headers), so that this test could fail.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.typing import Origin

from api.logs import redact
from tests.support import ServerProcess, open_stream, token

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

"""The WebSocket action channel `/v1/actions` against real server processes, with a real
WebSocket client; effects are read from real SSE streams."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.typing import Origin

from tests.support import (
    ADMIN,
    SERVICE,
    ServerProcess,
    bearer,
    open_stream,
    token,
)

pytestmark = pytest.mark.anyio

NOWHERE = "00000000-0000-0000-0000-000000000000"


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A budget of 5 messages per user refilled by one every 10 s, and a 1 s idle timeout."""
    env = {
        "SINAL_ACTIONS_RATE": "0.1",
        "SINAL_ACTIONS_BURST": "5",
        "SINAL_ACTIONS_IDLE_TIMEOUT": "1",
    }
    server = ServerProcess(tmp_path_factory.mktemp("limited"), env).start()
    yield server
    server.stop()


# -- helpers ---------------------------------------------------------------------------------


def ws_url(server: ServerProcess, query: str = "") -> str:
    return server.url.replace("http://", "ws://") + "/v1/actions" + query


@contextlib.asynccontextmanager
async def actions(
    server: ServerProcess,
    headers: dict[str, str] | None = None,
    *,
    query: str = "",
    origin: str | None = None,
) -> AsyncIterator[ClientConnection]:
    async with connect(
        ws_url(server, query),
        additional_headers=headers,
        origin=None if origin is None else Origin(origin),
        open_timeout=10,
        close_timeout=5,
    ) as socket:
        yield socket


async def call(socket: ClientConnection, message: dict[str, Any] | str | bytes) -> Any:
    """Send one message and return its reply."""
    await socket.send(json.dumps(message) if isinstance(message, dict) else message)
    with anyio.fail_after(10):
        return json.loads(await socket.recv())


async def ok(socket: ClientConnection, op: str, ref: str = "r", **fields: Any) -> Any:
    reply = await call(socket, {"op": op, "ref": ref, **fields})
    assert reply.get("ok") is True, reply
    assert reply["ref"] == ref
    return reply["result"]


async def failed(
    socket: ClientConnection,
    message: dict[str, Any] | str | bytes,
    status: int,
    *,
    ref: str | None = None,
    field: str | None = None,
) -> dict[str, Any]:
    """`message` is answered with an error reply: the problem REST would give."""
    reply = await call(socket, message)
    assert set(reply) == {"ref", "error"}, reply
    assert reply["ref"] == ref, reply
    error: dict[str, Any] = reply["error"]
    assert (error["type"], error["status"]) == ("about:blank", status), error
    assert error["title"]
    assert error["detail"]
    assert error.get("field") == field, error
    return error


async def closed(socket: ClientConnection, within: float = 10.0) -> tuple[list[Any], int, str]:
    """Read until the server closes: the replies that came first, the close code and reason."""
    replies = []
    with anyio.fail_after(within), contextlib.suppress(ConnectionClosed):
        while True:
            replies.append(json.loads(await socket.recv()))
    assert socket.close_code is not None
    return replies, socket.close_code, socket.close_reason or ""


async def refused(server: ServerProcess, headers: dict[str, str] | None = None, **kw: Any) -> Any:
    """The upgrade is refused: the HTTP status and problem body of the refusal."""
    with pytest.raises(InvalidStatus) as refusal:
        async with actions(server, headers, **kw):
            pass
    response = refusal.value.response
    assert response.headers["content-type"] == "application/problem+json"
    body = json.loads(bytes(response.body or b""))
    assert body["status"] == response.status_code
    return response.status_code, body


async def notify(client: httpx.AsyncClient, user: str, count: int = 1) -> list[str]:
    ids = []
    for n in range(count):
        response = await client.post(
            "/v1/notifications",
            json={"user": user, "type": "build.finished", "title": f"Build {n}"},
            headers=SERVICE,
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["notifications"][0]["id"])
    return ids


async def unread(client: httpx.AsyncClient, user: str) -> int:
    response = await client.get("/v1/notifications/unread-count", headers=bearer(user))
    count: int = response.json()["unread"]
    return count


async def execution(client: httpx.AsyncClient, *events: dict[str, Any]) -> str:
    """An execution of team ml with `events` applied."""
    body = {"team": "ml", "owner": "alice", "name": "train model"}
    response = await client.post("/v1/executions", json=body, headers=SERVICE)
    assert response.status_code == 201, response.text
    id: str = response.json()["id"]
    if events:
        response = await client.post(
            f"/v1/executions/{id}/events", json={"events": list(events)}, headers=SERVICE
        )
        assert response.status_code == 200, response.text
    return id


async def stats(server: ServerProcess) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.get("/v1/admin/stats", headers=ADMIN)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


# -- the actions and their effects -----------------------------------------------------------


async def test_ping_answers_with_the_server_time(memory_server: ServerProcess) -> None:
    async with actions(memory_server, bearer("pinger")) as socket:
        before = time.time()
        result = await ok(socket, "ping", ref="p-1")
    assert set(result) == {"pong"}
    assert result["pong"].endswith("Z")
    moment = datetime.fromisoformat(result["pong"]).timestamp()
    assert before - 5 < moment < time.time() + 5


async def test_state_changes_reach_the_users_other_devices(memory_server: ServerProcess) -> None:
    """mark_read / mark_unread / dismiss / mark_all_read over the socket answer like REST,
    and the user's SSE stream gets the same `notification.*` events with the new count."""
    user = "ada"
    async with (
        httpx.AsyncClient(base_url=memory_server.url) as client,
        open_stream(memory_server.url, bearer(user)) as (phone, _),
        actions(memory_server, bearer(user)) as socket,
    ):
        first, second, third = await notify(client, user, 3)
        await phone.until(lambda r: len(r.payloads("notification.created")) == 3)

        result = await ok(socket, "mark_read", ref="2", ids=[first, second])
        assert result == {"changed": [first, second], "unread": 1}
        await phone.until(lambda r: bool(r.payloads("notification.read")))
        assert phone.payloads("notification.read") == [{"ids": [first, second], "unread": 1}]

        result = await ok(socket, "mark_unread", ref="3", ids=[second])
        assert result == {"changed": [second], "unread": 2}
        await phone.until(lambda r: bool(r.payloads("notification.unread")))
        assert phone.payloads("notification.unread") == [{"ids": [second], "unread": 2}]

        result = await ok(socket, "dismiss", ref="4", ids=[third])
        assert result == {"changed": [third], "unread": 1}
        await phone.until(lambda r: bool(r.payloads("notification.dismissed")))
        assert phone.payloads("notification.dismissed") == [{"ids": [third], "unread": 1}]

        # Already in that state: nothing changes, and no event.
        assert await ok(socket, "dismiss", ref="5", ids=[third]) == {"changed": [], "unread": 1}

        result = await ok(socket, "mark_all_read", ref="6", before=None)
        assert result == {"marked": 1, "unread": 0}
        await phone.until(lambda r: bool(r.payloads("notification.read_all")))
        assert phone.payloads("notification.read_all") == [
            {"marked": 1, "before": None, "unread": 0}
        ]
        assert await unread(client, user) == 0


async def test_mark_all_read_honours_before(memory_server: ServerProcess) -> None:
    """A notification that arrived after the one the client showed stays unread, whether
    `before` is its cursor or its time; a bad `before` is a 400 naming it."""
    user = "grace"
    async with (
        httpx.AsyncClient(base_url=memory_server.url) as client,
        actions(memory_server, bearer(user)) as socket,
    ):
        await notify(client, user, 2)
        page = await client.get("/v1/notifications", headers=bearer(user))
        shown = page.json()["notifications"][0]  # the newest, as the client shows it
        await notify(client, user)  # arrives during the click
        result = await ok(socket, "mark_all_read", before=shown["cursor"])
        assert result == {"marked": 2, "unread": 1}
        assert await ok(socket, "mark_all_read", before=shown["created"]) == {
            "marked": 0,
            "unread": 1,
        }
        await failed(
            socket,
            {"op": "mark_all_read", "ref": "b", "before": "soon"},
            400,
            ref="b",
            field="before",
        )
        await failed(
            socket,
            {"op": "mark_all_read", "ref": "c", "before": "v1.nonsense"},
            400,
            ref="c",
            field="before",
        )
        assert await ok(socket, "mark_all_read") == {"marked": 1, "unread": 0}


async def test_retry_and_cancel_are_the_rest_commands(memory_server: ServerProcess) -> None:
    """retry_execution / cancel_execution answer with what REST's 202 carries, and the
    command shows on the execution's channel; refused transitions are 409 like REST."""
    carol = bearer("carol", teams=("ml",))
    async with (
        httpx.AsyncClient(base_url=memory_server.url) as client,
        actions(memory_server, carol) as socket,
    ):
        failed_run = await execution(
            client, {"type": "error", "seq": 1, "code": "E", "message": "boom"}
        )
        running = await execution(client, {"type": "status", "seq": 1, "status": "running"})

        params = {"channel": f"execution:{failed_run}"}
        async with open_stream(memory_server.url, carol, params=params) as (watcher, _):
            result = await ok(socket, "retry_execution", ref="7", execution=failed_run)
            assert set(result) == {"command", "execution"}
            attempt = result["execution"]
            assert (attempt["attempt"], attempt["retry_of"], attempt["status"]) == (
                2,
                failed_run,
                "queued",
            )
            assert result["command"]["command"] == "retry"
            assert result["command"]["retry_execution"] == attempt["id"]
            await watcher.until(lambda r: bool(r.payloads("execution.command")))
            [shown] = watcher.payloads("execution.command")
            assert (shown["command"], shown["by"]) == ("retry", "carol")
            assert shown["id"] == result["command"]["id"]

        params = {"channel": f"execution:{running}"}
        async with open_stream(memory_server.url, carol, params=params) as (watcher, _):
            result = await ok(socket, "cancel_execution", ref="8", execution=running)
            assert set(result) == {"command"}
            assert (result["command"]["command"], result["command"]["by"]) == ("cancel", "carol")
            await watcher.until(lambda r: bool(r.payloads("execution.command")))
            [shown] = watcher.payloads("execution.command")
            assert (shown["command"], shown["id"]) == ("cancel", result["command"]["id"])

        # Only a failed or cancelled execution is retried; a finished one is not cancelled.
        retry_running = {"op": "retry_execution", "ref": "9", "execution": running}
        error = await failed(socket, retry_running, 409, ref="9")
        rest = await client.post(f"/v1/executions/{running}/retry", headers=carol)
        assert rest.status_code == 409
        assert error == rest.json()
        cancel_failed = {"op": "cancel_execution", "ref": "10", "execution": failed_run}
        await failed(socket, cancel_failed, 409, ref="10")


# -- isolation -------------------------------------------------------------------------------


async def test_a_user_cannot_touch_another_users_notifications(
    memory_server: ServerProcess,
) -> None:
    """Like REST: another user's ids change nothing (`changed` is empty) and send no event."""
    async with (
        httpx.AsyncClient(base_url=memory_server.url) as client,
        open_stream(memory_server.url, bearer("bert")) as (bert_stream, _),
        actions(memory_server, bearer("alan")) as socket,
    ):
        [berts] = await notify(client, "bert")
        await bert_stream.until(lambda r: bool(r.payloads("notification.created")))
        for op in ("mark_read", "dismiss"):
            assert await ok(socket, op, ids=[berts]) == {"changed": [], "unread": 0}
        assert await ok(socket, "mark_all_read") == {"marked": 0, "unread": 0}
        rest = await client.post(
            "/v1/notifications/read", json={"ids": [berts]}, headers=bearer("alan")
        )
        assert rest.json() == {"changed": [], "unread": 0}
        assert await unread(client, "bert") == 1
        # A marker after the attempts: once it arrives, nothing else can be in flight before it.
        [marker] = await notify(client, "bert")
        await bert_stream.until(
            lambda r: r.payloads()[-1].get("notification", {}).get("id") == marker
        )
        assert [event.event for event in bert_stream.of_type(
            "notification.read", "notification.dismissed", "notification.read_all"
        )] == []  # fmt: skip


async def test_only_team_members_command_an_execution(memory_server: ServerProcess) -> None:
    """A non-member gets 404, exactly like an unknown id, and like REST answers."""
    mallory = bearer("mallory", teams=("web",))
    async with (
        httpx.AsyncClient(base_url=memory_server.url) as client,
        actions(memory_server, mallory) as socket,
    ):
        failed_run = await execution(
            client, {"type": "error", "seq": 1, "code": "E", "message": "boom"}
        )
        for op, id in [
            ("retry_execution", failed_run),
            ("cancel_execution", failed_run),
            ("retry_execution", NOWHERE),
        ]:
            error = await failed(socket, {"op": op, "ref": "x", "execution": id}, 404, ref="x")
            assert error["detail"] == f"no execution {id}"
        rest = await client.post(f"/v1/executions/{failed_run}/retry", headers=mallory)
        assert rest.status_code == 404
        # Nothing was retried: the execution is still the only attempt.
        view = await client.get(f"/v1/executions/{failed_run}", headers=bearer("x", "admin"))
        assert view.json()["status"] == "failed"
        listed = await client.get("/v1/executions", params={"team": "ml"}, headers=ADMIN)
        assert all(e["retry_of"] != failed_run for e in listed.json()["executions"])


# -- bad input -------------------------------------------------------------------------------


async def test_bad_input_is_answered_and_the_socket_stays_usable(
    memory_server: ServerProcess,
) -> None:
    bad: list[tuple[Any, int, str | None, str | None]] = [
        # (message, status, ref in the reply, field)
        ("{not json", 400, None, None),
        ("", 400, None, None),
        ("[1, 2]", 400, None, None),
        ({"op": "launch_missiles", "ref": "1"}, 400, "1", "op"),
        ({"ref": "2", "ids": [NOWHERE]}, 400, "2", "op"),
        ({"op": "mark_read", "ref": "3"}, 400, "3", "ids"),
        ({"op": "mark_read", "ref": "4", "ids": []}, 400, "4", "ids"),
        ({"op": "mark_read", "ref": "5", "ids": [NOWHERE] * 201}, 400, "5", "ids"),
        ({"op": "mark_read", "ref": "6", "ids": "all"}, 400, "6", "ids"),
        ({"op": "mark_read", "ref": "7", "ids": [42]}, 400, "7", "ids[0]"),
        ({"op": "retry_execution", "ref": "8", "execution": "nope"}, 400, "8", "execution"),
        ({"op": "ping", "ref": "9", "extra": True}, 400, "9", "extra"),
        ({"op": "ping"}, 400, None, "ref"),  # no ref
        ({"op": "ping", "ref": ""}, 400, None, "ref"),
        ({"op": "ping", "ref": "r" * 65}, 400, None, "ref"),
        ({"op": "ping", "ref": 7}, 400, None, "ref"),
        (json.dumps({"op": "ping", "ref": "big", "pad": "x" * 16 * 1024}), 413, None, None),
        (b'{"op": "ping", "ref": "bin"}', 400, None, None),
    ]
    async with actions(memory_server, bearer("fuzzer")) as socket:
        for message, status, ref, field in bad:
            await failed(socket, message, status, ref=ref, field=field)
            assert "pong" in await ok(socket, "ping", ref="after")


async def test_input_past_the_limits_is_answered_and_the_socket_stays_usable(
    memory_server: ServerProcess,
) -> None:
    """Regression: a message nested 1,000 deep closed the socket with 4500 (RecursionError),
    and a `mark_all_read` bound outside years 1-9999 in UTC was a 500 reply."""
    bad: list[tuple[Any, str | None, str]] = [
        ('{"x": ' + "[" * 1000 + "]" * 1000 + ', "op": "ping", "ref": "deep"}', None, "x"),
        ({"op": "mark_all_read", "ref": "1", "before": "9999-12-31T23:59:59-14:00"}, "1", "before"),
        ({"op": "mark_all_read", "ref": "2", "before": "0001-01-01T00:00:00+14:00"}, "2", "before"),
        ({"op": "mark_all_read", "ref": "3", "before": "2026\x00"}, "3", "before"),
    ]
    async with actions(memory_server, bearer("deep-diver")) as socket:
        for message, ref, field in bad:
            await failed(socket, message, 400, ref=ref, field=field)
            assert "pong" in await ok(socket, "ping", ref="after")


async def test_a_frame_past_the_servers_limit_closes_the_socket(
    memory_server: ServerProcess,
) -> None:
    """Past 64 KiB a frame is not even buffered whole: the server closes with 1009."""
    async with actions(memory_server, bearer("hoarder")) as socket:
        await socket.send("x" * (64 * 1024 + 1))
        replies, code, _ = await closed(socket)
    assert (replies, code) == ([], 1009)


async def test_too_many_invalid_messages_close_the_socket(memory_server: ServerProcess) -> None:
    """More than 20 invalid messages within 10 s: 1008; the first 20 are answered."""
    async with actions(memory_server, bearer("vandal")) as socket:
        for _ in range(21):
            await socket.send("garbage")
        replies, code, reason = await closed(socket)
    assert len(replies) == 20
    assert all(reply["error"]["status"] == 400 for reply in replies)
    assert (code, reason) == (1008, "too many invalid messages")


# -- limits ----------------------------------------------------------------------------------


async def test_the_rate_limit_closes_the_socket(limited_server: ServerProcess) -> None:
    """Burst 5, then one per 10 s: the sixth message at once closes with 4004 `limit`, saying
    when a message fits again."""
    async with actions(limited_server, bearer("flooder")) as socket:
        for n in range(10):
            with contextlib.suppress(ConnectionClosed):
                await socket.send(json.dumps({"op": "ping", "ref": str(n)}))
        replies, code, reason = await closed(socket)
    assert [reply["ref"] for reply in replies] == ["0", "1", "2", "3", "4"]
    assert (code, reason) == (4004, "limit retry_after=10")


async def test_the_budget_is_shared_by_a_users_sockets(limited_server: ServerProcess) -> None:
    """Two sockets of one user draw on one budget, and reconnecting does not refill it; another
    user's budget is their own."""
    user = bearer("twins")
    async with actions(limited_server, user) as first, actions(limited_server, user) as second:
        for n in range(3):
            await ok(first, "ping", ref=f"a{n}")
        for n in range(2):
            await ok(second, "ping", ref=f"b{n}")
        await second.send(json.dumps({"op": "ping", "ref": "b2"}))
        assert await closed(second) == ([], 4004, "limit retry_after=10")
    async with actions(limited_server, user) as again:
        await again.send(json.dumps({"op": "ping", "ref": "c"}))
        assert await closed(again) == ([], 4004, "limit retry_after=10")
    async with actions(limited_server, bearer("someone-else")) as other:
        await ok(other, "ping")


async def test_an_idle_socket_is_closed(limited_server: ServerProcess) -> None:
    """SINAL_ACTIONS_IDLE_TIMEOUT=1: closed with 1000 "idle" about a second after the last
    message, not before."""
    async with actions(limited_server, bearer("sleeper")) as socket:
        await ok(socket, "ping")
        last = time.monotonic()
        replies, code, reason = await closed(socket, within=5)
    assert (replies, code, reason) == ([], 1000, "idle")
    assert time.monotonic() - last >= 0.9


# -- authentication --------------------------------------------------------------------------


async def test_the_upgrade_needs_a_valid_credential(memory_server: ServerProcess) -> None:
    status, body = await refused(memory_server)
    assert status == 401
    assert body["detail"] == "credentials are missing: send a Bearer token"
    for headers in (
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": f"Basic {token('alice')}"},
        bearer("alice", ttl_s=-30),
        {"Cookie": "sinal_token=forged"},
    ):
        status, _ = await refused(memory_server, headers)
        assert status == 401
    # A JWT is not a ticket.
    status, body = await refused(memory_server, query=f"?ticket={token('alice')}")
    assert (status, body["detail"]) == (401, "ticket is invalid")
    # A refusal is no server error (uvicorn logs one by mistake: api/logs.py QuietDenials).
    assert "ERROR" not in memory_server.logs()


async def test_cookie_and_ticket_are_accepted(memory_server: ServerProcess) -> None:
    cookie = {"Cookie": f"sinal_token={token('cookie-user')}"}
    async with actions(memory_server, cookie) as socket:
        await ok(socket, "ping")
    # From a browser on this origin, too.
    async with actions(memory_server, cookie, origin=memory_server.url) as socket:
        await ok(socket, "ping")

    async with httpx.AsyncClient(base_url=memory_server.url) as client:
        response = await client.post("/v1/auth/ticket", headers=bearer("ticket-user"))
        ticket = response.json()["ticket"]
        async with actions(memory_server, query=f"?ticket={ticket}") as socket:
            [id] = await notify(client, "ticket-user")
            # The ticket carries the user: their own notification is theirs to mark.
            assert await ok(socket, "mark_read", ids=[id]) == {"changed": [id], "unread": 0}
    logs = memory_server.logs()
    assert "/v1/actions?ticket=[redacted]" in logs
    assert ticket not in logs
    assert ticket.rsplit(".", 1)[-1] not in logs


async def test_a_cookie_from_another_origin_is_refused(memory_server: ServerProcess) -> None:
    """A page elsewhere could open a socket that carries the user's cookie (no CORS on a
    WebSocket handshake): its `Origin` gives it away."""
    cookie = {"Cookie": f"sinal_token={token('victim')}"}
    status, body = await refused(memory_server, cookie, origin="https://evil.example")
    assert (status, body["field"]) == (403, "Origin")
    # A header or a ticket is no ambient credential: any origin may use them.
    async with actions(memory_server, bearer("victim"), origin="https://app.example") as socket:
        await ok(socket, "ping")


# -- lifecycle -------------------------------------------------------------------------------


async def test_stats_count_open_sockets_and_leave_nothing_behind(
    memory_server: ServerProcess,
) -> None:
    before = await stats(memory_server)
    async with (
        actions(memory_server, bearer("counted")) as first,
        actions(memory_server, bearer("counted")) as second,
    ):
        await ok(first, "ping")
        await ok(second, "ping")
        assert (await stats(memory_server))["action_sockets"] == before["action_sockets"] + 2
    # The server sees the closes a moment later: wait for the counts, with a deadline.
    with anyio.fail_after(10):
        while True:
            after = await stats(memory_server)
            if (after["action_sockets"], after["tasks"]) == (
                before["action_sockets"],
                before["tasks"],
            ):
                break
            await anyio.sleep(0.05)


async def test_shutdown_closes_sockets_with_1001(spawn: Any) -> None:
    """`sinal serve` stops promptly with a socket open; the client sees 1001, not uvicorn's
    1012."""
    server: ServerProcess = spawn()
    assert server.process is not None
    async with actions(server, bearer("leaver")) as socket:
        await ok(socket, "ping")
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        replies, code, reason = await closed(socket)
    assert (replies, code, reason) == ([], 1001, "server shutting down")
    exit_code = await anyio.to_thread.run_sync(server.process.wait, 10)
    # Uvicorn re-raises the signal it handled once shutdown is complete.
    assert exit_code == -signal.SIGTERM, server.logs()
    assert "ERROR" not in server.logs()
    assert time.monotonic() - started < 5, server.logs()

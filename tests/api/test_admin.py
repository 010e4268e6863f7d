"""The admin API against real processes: two nodes on one Redis and one PostgreSQL (as in
production), and the memory engine alone.

Nodes beat every 0.5 s here, so one that dies is gone within 1.5 s; surveys wait 1 s.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from api.auth import mint_token
from tests.conftest import POSTGRES_URL, reset_postgres
from tests.support import (
    ADMIN,
    SECRET,
    SERVICE,
    ServerProcess,
    assert_problem,
    bearer,
    open_stream,
    publish,
    token,
)

pytestmark = pytest.mark.anyio

HEARTBEAT_S = 0.5
NODE_ENV = {"SINAL_NODE_HEARTBEAT": str(HEARTBEAT_S), "SINAL_SURVEY_TIMEOUT": "1"}


@pytest.fixture
async def cluster_env(redis_url: str) -> dict[str, str]:
    """Two nodes share the engine and the database, as a deployment's processes do."""
    await reset_postgres()
    return {**NODE_ENV, "SINAL_REDIS_URL": redis_url, "SINAL_DATABASE_URL": POSTGRES_URL}


@pytest.fixture
def two_nodes(
    cluster_env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    nodes = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        nodes.append(
            ServerProcess(tmp_path / name, {**cluster_env, "SINAL_NODE_NAME": f"node-{name}"})
        )
    a, b = nodes
    try:
        # Started together: each takes seconds (imports, migrations), and they need not wait.
        a.launch()
        b.launch()
        yield a.ready(), b.ready()
    finally:
        for node in nodes:
            if node.process is not None and node.process.poll() is None:
                node.process.send_signal(signal.SIGCONT)  # one a test stopped
            node.stop()


def restart(*servers: ServerProcess) -> None:
    """Stop `servers`, then start them again together."""
    for server in servers:
        server.stop()
    for server in servers:
        server.launch()
    for server in servers:
        server.ready()


async def get(server: ServerProcess, path: str, **params: Any) -> Any:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        response = await client.get(path, headers=ADMIN, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def post(
    server: ServerProcess, path: str, body: Any = None, headers: dict[str, str] = ADMIN
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        return await client.post(path, headers=headers, json=body)


async def listed(
    server: ServerProcess, path: str, done: Callable[[Any], bool], **params: Any
) -> Any:
    """`GET path` again until `done(answer)`; fail after 10 s."""
    with anyio.fail_after(10):
        while True:
            answer = await get(server, path, **params)
            if done(answer):
                return answer
            await anyio.sleep(0.05)


async def node_ids(server: ServerProcess, count: int) -> list[str]:
    """The ids of the nodes `server` knows, once it knows `count`."""
    answer = await listed(server, "/v1/admin/nodes", lambda nodes: len(nodes["nodes"]) == count)
    return [node["id"] for node in answer["nodes"]]


@contextlib.asynccontextmanager
async def socket(server: ServerProcess, headers: dict[str, str]) -> AsyncIterator[ClientConnection]:
    url = server.url.replace("http://", "ws://") + "/v1/actions"
    async with connect(url, additional_headers=headers, open_timeout=10) as ws:
        yield ws


@contextlib.asynccontextmanager
async def held_stream(server: ServerProcess, headers: dict[str, str]) -> AsyncIterator[None]:
    """A stream held open, whose server may die meanwhile."""
    ready = anyio.Event()

    async def read() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=None) as client:
            with contextlib.suppress(httpx.HTTPError):
                async with client.stream("GET", "/v1/stream", headers=headers) as response:
                    async for chunk in response.aiter_text():
                        if "event: ready" in chunk:
                            ready.set()

    async with anyio.create_task_group() as group:
        group.start_soon(read)
        with anyio.fail_after(10):
            await ready.wait()
        yield
        group.cancel_scope.cancel()


async def close_of(ws: ClientConnection, within: float) -> tuple[int, str]:
    with anyio.fail_after(within), contextlib.suppress(ConnectionClosed):
        while True:
            await ws.recv()
    assert ws.close_code is not None
    return ws.close_code, ws.close_reason or ""


# -- listing across nodes ----------------------------------------------------------------------


async def test_a_stream_on_node_b_is_listed_by_node_a_until_b_dies(
    two_nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = two_nodes
    a_id, b_id = await node_ids(a, 2)
    nodes = (await get(a, "/v1/admin/nodes"))["nodes"]
    assert {node["name"] for node in nodes} == {"node-a", "node-b"}
    assert all(node["status"] == "up" for node in nodes)
    async with held_stream(b, bearer("carol-phone")):
        listing = await get(a, "/v1/admin/connections", q="carol")
        assert listing["partial"] is False
        [found] = listing["connections"]
        assert (found["user"], found["node"], found["transport"]) == ("carol-phone", b_id, "sse")
        assert found["channels"] == ["notifications:carol-phone", "broadcast"]
        assert found["remote"] == "127.0.0.1"
        assert found["user_agent"].startswith("python-httpx")
        assert found["id"].startswith(b_id + "-")
        assert (await get(a, "/v1/admin/connections", q="dave"))["connections"] == []
        counts = {n["id"]: n["connections"] for n in (await get(a, "/v1/admin/nodes"))["nodes"]}
        assert counts[b_id]["sse"] == 1

        assert b.process is not None
        b.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        assert await node_ids(a, 1) == [a_id]
        # Gone within 3 heartbeat intervals (and a survey's wait, as the listing asks too).
        assert time.monotonic() - killed <= 3 * HEARTBEAT_S + 1.5
        listing = await get(a, "/v1/admin/connections", q="carol")
        assert listing == {
            "connections": [],
            "next_cursor": None,
            "partial": False,
            "unreachable_nodes": [],
        }


async def test_a_node_that_does_not_answer_in_time_is_named(
    two_nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = two_nodes
    _, b_id = await node_ids(a, 2)
    assert b.process is not None
    b.process.send_signal(signal.SIGSTOP)  # alive, but answering nothing
    try:
        listing = await get(a, "/v1/admin/connections")
        assert (listing["partial"], listing["unreachable_nodes"]) == (True, [b_id])
        nodes = {node["id"]: node for node in (await get(a, "/v1/admin/nodes"))["nodes"]}
        assert nodes[b_id]["status"] == "unreachable"
    finally:
        b.process.send_signal(signal.SIGCONT)
    await listed(a, "/v1/admin/connections", lambda answer: not answer["partial"])


async def test_listing_pages_by_user_and_filters(spawn: Callable[..., ServerProcess]) -> None:
    """The memory engine alone: one node, its own survey."""
    server = spawn(NODE_ENV)
    async with contextlib.AsyncExitStack() as stack:
        for user in ("ann", "bob", "bea", "cid"):
            await stack.enter_async_context(open_stream(server.url, bearer(user)))
        ws = await stack.enter_async_context(socket(server, bearer("bob")))
        await ws.send(json.dumps({"op": "ping", "ref": "1"}))
        await ws.recv()
        first = await get(server, "/v1/admin/connections", limit=2)
        assert [c["user"] for c in first["connections"]] == ["ann", "bea"]
        second = await get(server, "/v1/admin/connections", limit=2, cursor=first["next_cursor"])
        assert [c["user"] for c in second["connections"]] == ["bob", "bob"]
        third = await get(server, "/v1/admin/connections", limit=2, cursor=second["next_cursor"])
        assert [c["user"] for c in third["connections"]] == ["cid"]
        assert third["next_cursor"] is None
        only_ws = await get(server, "/v1/admin/connections", transport="ws")
        [ws_view] = only_ws["connections"]
        assert (ws_view["user"], ws_view["delivered"], ws_view["cursor"]) == ("bob", 1, None)
        by_channel = await get(server, "/v1/admin/connections", channel="notifications:bea")
        assert [c["user"] for c in by_channel["connections"]] == ["bea"]
        assert [c["user"] for c in (await get(server, "/v1/admin/connections", q="b"))[
            "connections"
        ]] == ["bea", "bob", "bob"]  # fmt: skip
        user = await get(server, "/v1/admin/users/bob")
        assert sorted(c["transport"] for c in user["connections"]) == ["sse", "ws"]
        assert (user["unread"], user["revoked_before"]) == (0, None)
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            bad = await client.get("/v1/admin/connections", headers=ADMIN, params={"cursor": "x"})
            assert_problem(bad, 400, "cursor")
            gone = await client.get("/v1/admin/connections", headers=ADMIN, params={"node": "zz"})
            assert_problem(gone, 404, "node")


# -- acting on connections ---------------------------------------------------------------------


async def test_disconnecting_a_user_ends_every_transport_on_the_other_node_and_they_resume(
    two_nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = two_nodes
    await node_ids(a, 2)
    erin = bearer("erin")
    async with (
        httpx.AsyncClient(base_url=b.url, timeout=30) as client,
        open_stream(b.url, erin) as (received, wait),
        socket(b, erin) as ws,
    ):
        await publish(client, "notifications:erin", "note.one", {"n": 1})
        await wait(lambda r: r.payloads("note.one") != [], 10)
        start = await client.get("/v1/notifications/poll", headers=erin)
        cursor = start.json()["next_cursor"]
        async with anyio.create_task_group() as group:
            polled: list[httpx.Response] = []

            async def long_poll() -> None:
                polled.append(
                    await client.get(
                        "/v1/notifications/poll",
                        headers=erin,
                        params={"cursor": cursor, "wait": 25},
                    )
                )

            group.start_soon(long_poll)
            await listed(a, "/v1/admin/users/erin", lambda user: len(user["connections"]) == 3)
            asked = time.monotonic()
            answer = await post(a, "/v1/admin/users/erin/disconnect", {"reason": "test"})
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"closed": 3}
            await wait(lambda r: r.ended, 1.5)
            assert await close_of(ws, 1.5) == (4002, "kicked")
        assert time.monotonic() - asked < 2.0
        [disconnect] = received.of_type("disconnect")
        assert json.loads(disconnect.data) == {"reason": "kicked", "reconnect": True}
        assert polled[0].json()["disconnect"] == {"reason": "kicked", "reconnect": True}

        # Kicked, not revoked: the same token reconnects and resumes with nothing lost.
        await publish(client, "notifications:erin", "note.two", {"n": 2})
        async with open_stream(a.url, erin, last_event_id=received.last_id) as (again, wait2):
            await wait2(lambda r: r.payloads("note.two") != [], 10)
            assert again.payloads("note.one") == []  # not twice

    entries = (await get(a, "/v1/admin/audit", action="user.disconnect"))["entries"]
    assert len(entries) == 1
    assert (entries[0]["actor"], entries[0]["target"]) == ("root", "user:erin")
    assert entries[0]["params"] == {"revoke": False, "reason": "test"}
    assert entries[0]["result"]["closed"] == 3


async def test_revoking_refuses_old_tokens_on_every_node_and_across_restarts(
    two_nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = two_nodes
    await node_ids(a, 2)
    # Issued a few seconds ago (a token of the revocation's own second is taken as after it).
    issued = int(time.time()) - 5
    old = {"Authorization": f"Bearer {mint_token(SECRET, 'frank', iat=issued, exp=issued + 600)}"}
    async with open_stream(b.url, old) as (received, wait):
        answer = await post(a, "/v1/admin/users/frank/disconnect", {"revoke": True})
        assert answer.status_code == 200, answer.text
        assert answer.json()["closed"] == 1
        revoked_before = answer.json()["revoked_before"]
        await wait(lambda r: r.ended, 2)
    assert json.loads(received.of_type("disconnect")[0].data) == {
        "reason": "revoked",
        "reconnect": False,
    }

    async def status(server: ServerProcess, headers: dict[str, str]) -> httpx.Response:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            return await client.get("/v1/notifications/unread-count", headers=headers)

    for server in (a, b):
        problem = assert_problem(await status(server, old), 401)
        assert "revoked" in problem["detail"]
        assert problem["revoked"] is True
    fresh = bearer("frank")  # issued now: in the revocation's second or after it
    assert (await status(a, fresh)).status_code == 200
    assert (await status(b, fresh)).status_code == 200
    assert (await get(a, "/v1/admin/users/frank"))["revoked_before"] == revoked_before

    restart(a, b)
    for server in (a, b):
        assert_problem(await status(server, old), 401)
        assert (await status(server, fresh)).status_code == 200
    # The refusals before the restarts, counted per node and written as it stopped.
    refused = (await get(a, "/v1/admin/audit", action="token.revoked"))["entries"]
    assert {entry["target"] for entry in refused} == {"user:frank"}
    assert sum(entry["result"]["count"] for entry in refused) >= 2
    assert {entry["actor"] for entry in refused} == {"sinal"}


async def test_a_node_that_missed_a_revocation_still_ends_what_it_covers(
    two_nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = two_nodes
    _, b_id = await node_ids(a, 2)
    issued = int(time.time()) - 5
    old = {"Authorization": f"Bearer {mint_token(SECRET, 'rita', iat=issued, exp=issued + 600)}"}
    assert b.process is not None
    async with open_stream(b.url, old) as (received, wait):
        b.process.send_signal(signal.SIGSTOP)
        try:
            answer = await post(a, "/v1/admin/users/rita/disconnect", {"revoke": True})
        finally:
            b.process.send_signal(signal.SIGCONT)
        assert (answer.json()["partial"], answer.json()["unreachable_nodes"]) == (True, [b_id])
        # From the bus once it runs again, or from the database at its next sync (10 s).
        await wait(lambda r: r.ended, 15)
    assert json.loads(received.of_type("disconnect")[0].data)["reason"] == "revoked"


async def test_disconnecting_one_connection_by_id(spawn: Callable[..., ServerProcess]) -> None:
    server = spawn(NODE_ENV)
    async with open_stream(server.url, bearer("gus")) as (_received, wait):
        [connection] = (await get(server, "/v1/admin/users/gus"))["connections"]
        answer = await post(server, f"/v1/admin/connections/{connection['id']}/disconnect")
        assert answer.json() == {"closed": 1}
        await wait(lambda r: r.ended, 2)
    again = await post(server, f"/v1/admin/connections/{connection['id']}/disconnect")
    assert_problem(again, 404, "id")
    assert_problem(await post(server, "/v1/admin/connections/nonsense/disconnect"), 404, "id")
    [entry] = (await get(server, "/v1/admin/audit", action="connection.disconnect"))["entries"]
    assert entry["target"] == f"connection:{connection['id']}"


# -- runtime limits ------------------------------------------------------------------------------


async def put_limits(server: ServerProcess, body: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        return await client.put("/v1/admin/limits", headers=ADMIN, json=body)


async def test_a_limit_changed_on_one_node_holds_on_the_other_and_after_restarts(
    two_nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = two_nodes
    await node_ids(a, 2)
    assert (await get(b, "/v1/admin/limits"))["streams_per_user"] == 0
    changed = await put_limits(a, {"streams_per_user": 1})
    assert changed.status_code == 200, changed.text
    assert changed.json()["streams_per_user"] == 1
    # The PUT answers once every node has applied it.
    assert (await get(b, "/v1/admin/limits"))["streams_per_user"] == 1
    async with open_stream(b.url, bearer("hana")):
        async with httpx.AsyncClient(base_url=b.url, timeout=10) as client:
            second = await client.get("/v1/stream", headers=bearer("hana"))
        assert_problem(second, 429)
        assert int(second.headers["retry-after"]) > 0

    b.env["SINAL_ACTIONS_BURST"] = "7"  # a limit never changed through the API follows its setting
    restart(a, b)
    assert (await get(a, "/v1/admin/limits"))["streams_per_user"] == 1
    assert (await get(b, "/v1/admin/limits"))["streams_per_user"] == 1
    assert (await get(b, "/v1/admin/limits"))["actions_burst"] == 7
    [entry] = (await get(b, "/v1/admin/audit", action="limits.update"))["entries"]
    assert entry["params"] == {"streams_per_user": 1}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"actions_rate": 0}, "actions_rate"),
        ({"actions_burst": 1.5}, "actions_burst"),
        ({"streams_per_user": -1}, "streams_per_user"),
        ({"handshakes_per_s": "10"}, "handshakes_per_s"),
        ({"publish_rate": True}, "publish_rate"),
        ({"speed": 1}, "speed"),
    ],
)
async def test_a_bad_limit_is_422_naming_it(
    memory_server: ServerProcess, body: dict[str, Any], field: str
) -> None:
    assert_problem(await put_limits(memory_server, body), 422, field)


async def handshake(server: ServerProcess, accept: str) -> tuple[int, dict[str, str], str]:
    """Status, headers and what came first of one `GET /v1/stream` (a stream admitted is
    left once it is ready)."""
    headers = {**bearer("ivy"), "Accept": accept}
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as client,
        client.stream("GET", "/v1/stream", headers=headers) as response,
    ):
        text = ""
        async for chunk in response.aiter_text():
            text += chunk
            if "event: ready" in text:
                break
    return response.status_code, dict(response.headers), text


async def test_handshakes_over_the_rate_are_refused_with_retry_after(
    spawn: Callable[..., ServerProcess],
) -> None:
    server = spawn(NODE_ENV)
    assert (await put_limits(server, {"handshakes_per_s": 1})).status_code == 200
    # One a second: of three at once, at least two are refused.
    answers = [await handshake(server, "*/*") for _ in range(3)]
    refused = [(headers, text) for status, headers, text in answers if status == 503]
    assert len(refused) >= 2, [status for status, _, _ in answers]
    headers, text = refused[0]
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(text)["status"] == 503
    assert int(headers["retry-after"]) >= 1
    # An EventSource (it gives up on any status but 200) is told when to come back instead.
    with anyio.fail_after(10):
        while True:
            status, headers, text = await handshake(server, "text/event-stream")
            if "event: disconnect" in text:
                break
    assert status == 200
    assert int(text.split("retry: ")[1].split("\n")[0]) >= 1000
    assert 'event: disconnect\ndata: {"reason":"limit","reconnect":true' in text
    assert int(headers["retry-after"]) >= 1


async def test_an_action_socket_over_its_budget_is_cut_and_the_cut_is_audited(
    spawn: Callable[..., ServerProcess],
) -> None:
    server = spawn(NODE_ENV)
    limits = {"actions_burst": 2, "actions_rate": 0.1}
    assert (await put_limits(server, limits)).status_code == 200
    async with socket(server, bearer("pat")) as ws:
        for n in range(3):
            with contextlib.suppress(ConnectionClosed):
                await ws.send(json.dumps({"op": "ping", "ref": str(n)}))
        assert await close_of(ws, 5) == (4004, "limit retry_after=10")
    server.restart()  # what was counted is written when the node stops
    [entry] = (await get(server, "/v1/admin/audit", action="limit.cut"))["entries"]
    assert (entry["target"], entry["result"]) == ("user:pat", {"count": 1})


async def test_publishes_over_the_rate_get_429(spawn: Callable[..., ServerProcess]) -> None:
    server = spawn(NODE_ENV)
    assert (await put_limits(server, {"publish_rate": 1})).status_code == 200
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        body = {"channel": "broadcast", "type": "tick", "data": {}}
        first = await client.post("/v1/publish", headers=SERVICE, json=body)
        second = await client.post("/v1/publish", headers=SERVICE, json=body)
        other = await client.post("/v1/publish", headers=bearer("svc2", "service"), json=body)
    assert first.status_code == 201
    assert_problem(second, 429)
    assert second.headers["retry-after"] == "1"
    assert other.status_code == 201  # a budget per service


# -- broadcast -------------------------------------------------------------------------------------


async def test_a_broadcast_to_all_is_live_and_stays_for_those_who_come_later(
    spawn: Callable[..., ServerProcess], database_env: dict[str, str]
) -> None:
    server = spawn({**NODE_ENV, **database_env})
    async with open_stream(server.url, bearer("jo")) as (received, wait):
        answer = await post(
            server,
            "/v1/admin/broadcast",
            {"audience": "all", "title": "Maintenance at 22:00", "severity": "warning"},
        )
        assert answer.status_code == 201, answer.text
        announcement = answer.json()["announcement"]
        await wait(lambda r: r.payloads("broadcast") != [], 10)
    assert received.payloads("broadcast") == [{"announcement": announcement}]
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        later = await client.get("/v1/announcements", headers=bearer("kim"))
    assert later.json() == {"announcements": [announcement]}
    [entry] = (await get(server, "/v1/admin/audit", action="broadcast"))["entries"]
    assert entry["target"] == "broadcast:all"


async def test_a_broadcast_to_users_is_a_notification_each(
    spawn: Callable[..., ServerProcess], database_env: dict[str, str]
) -> None:
    """The notifications and the audit row commit together, on either database."""
    server = spawn({**NODE_ENV, **database_env})
    answer = await post(
        server,
        "/v1/admin/broadcast",
        {"audience": {"users": ["lea", "max"]}, "title": "Your plan changes", "body": "Details."},
    )
    assert answer.status_code == 201, answer.text
    assert answer.json() == {"audience": {"users": ["lea", "max"]}, "notifications": 2}
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        for user in ("lea", "max"):
            page = (await client.get("/v1/notifications", headers=bearer(user))).json()
            [note] = page["notifications"]
            assert (note["type"], note["title"]) == ("announcement", "Your plan changes")
        bad = await client.post(
            "/v1/admin/broadcast", headers=ADMIN, json={"audience": "everyone", "title": "x"}
        )
    assert_problem(bad, 400, "audience")


# -- who may ---------------------------------------------------------------------------------------

ROUTES = [
    ("GET", "/v1/admin/nodes"),
    ("GET", "/v1/admin/connections"),
    ("GET", "/v1/admin/users/alice"),
    ("POST", "/v1/admin/connections/x-1/disconnect"),
    ("POST", "/v1/admin/users/alice/disconnect"),
    ("POST", "/v1/admin/broadcast"),
    ("GET", "/v1/admin/limits"),
    ("PUT", "/v1/admin/limits"),
    ("GET", "/v1/admin/audit"),
    ("GET", "/v1/admin/alerts"),
    ("GET", "/v1/admin/stats"),
    ("GET", "/v1/admin/series"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_admin_route_refuses_users_services_and_strangers(
    memory_server: ServerProcess, method: str, path: str
) -> None:
    async with httpx.AsyncClient(base_url=memory_server.url, timeout=10) as client:
        for headers in (bearer("alice"), SERVICE):
            assert_problem(await client.request(method, path, headers=headers, json={}), 403)
        assert_problem(await client.request(method, path, json={}), 401)


async def test_the_audit_log_filters_and_pages(spawn: Callable[..., ServerProcess]) -> None:
    server = spawn(NODE_ENV)
    for n in range(5):
        assert (await put_limits(server, {"actions_burst": 40 + n})).status_code == 200
    other = bearer("ops", "admin")
    assert (await post(server, "/v1/admin/users/nobody/disconnect", {}, other)).status_code == 200
    entries: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 2, "action": "limits.update", **({"cursor": cursor} if cursor else {})}
        page = await get(server, "/v1/admin/audit", **params)
        entries += page["entries"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [e["params"]["actions_burst"] for e in entries] == [44, 43, 42, 41, 40]
    assert [
        e["action"] for e in (await get(server, "/v1/admin/audit", actor="ops"))["entries"]
    ] == ["user.disconnect"]
    assert (await get(server, "/v1/admin/audit", target="user:nobody"))["entries"][0]["actor"] == (
        "ops"
    )
    future = (await get(server, "/v1/admin/audit", since="2999-01-01T00:00:00Z"))["entries"]
    assert future == []


async def test_the_admin_channel_carries_every_nodes_counters_while_watched(
    two_nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    a, _ = two_nodes
    ids = set(await node_ids(a, 2))

    def seconds(received: Any, node: str) -> list[int]:
        return [p["point"][0] for p in received.payloads("admin.stats") if p["node"] == node]

    async with open_stream(a.url, ADMIN, params={"channel": "admin"}) as (received, wait):
        # Three reports of each node, each with its newest point.
        await wait(lambda r: all(len(seconds(r, node)) >= 3 for node in ids), 10)
    stats = received.payloads("admin.stats")[0]
    assert set(stats) >= {"connections", "events_in", "deliveries", "resets", "outbox_pending"}
    fields = (await get(a, "/v1/admin/series"))["fields"]
    for node in ids:
        # Paced by the series: a point is never sent twice.
        assert seconds(received, node) == sorted(set(seconds(received, node)))
        assert all(len(p["point"]) == len(fields) for p in received.payloads("admin.stats"))
    async with httpx.AsyncClient(base_url=a.url, timeout=10) as client:
        refused = await client.get(
            "/v1/stream", headers=bearer("nosy"), params={"channel": "admin"}
        )
    assert_problem(refused, 403, "channel")


def points_of(answer: dict[str, Any], node: str) -> list[dict[str, Any]]:
    """A node's points in `GET /v1/admin/series`, each as an object."""
    [series] = [series for series in answer["nodes"] if series["id"] == node]
    return [dict(zip(answer["fields"], point, strict=True)) for point in series["points"]]


async def test_the_series_of_every_node_move_when_events_are_published(
    two_nodes: tuple[ServerProcess, ServerProcess],
) -> None:
    a, b = two_nodes
    a_id, b_id = await node_ids(a, 2)

    def both_reporting(answer: dict[str, Any]) -> bool:
        return {n["id"] for n in answer["nodes"]} == {a_id, b_id} and all(
            len(n["points"]) >= 2 for n in answer["nodes"]
        )

    answer = await listed(a, "/v1/admin/series", both_reporting)
    assert (answer["interval_s"], answer["partial"], answer["unreachable_nodes"]) == (1, False, [])
    assert answer["nodes"][0]["id"] == a_id  # the node that answers first
    assert {n["name"] for n in answer["nodes"]} == {"node-a", "node-b"}
    for node in (a_id, b_id):
        seconds = [point["at"] for point in points_of(answer, node)]
        assert seconds == list(range(seconds[0], seconds[0] + len(seconds)))  # one a second
        assert abs(seconds[-1] - time.time()) < 5

    async with (
        open_stream(b.url, bearer("gina")) as (_, wait),
        httpx.AsyncClient(base_url=a.url, timeout=10) as client,
    ):
        for n in range(20):
            await publish(client, "notifications:gina", "note", {"n": n})
        await wait(lambda r: len(r.payloads("note")) == 20, 10)

        def moved(answer: dict[str, Any]) -> bool:
            a_points, b_points = points_of(answer, a_id), points_of(answer, b_id)
            return (
                sum(p["published"] for p in a_points) >= 19.5  # rates over ~1 s, rounded
                and sum(p["deliveries"] for p in b_points) >= 19.5
                and sum(p["http_requests"] for p in a_points) >= 19.5  # the publishes
                and b_points[-1]["sse"] == 1
            )

        answer = await listed(a, "/v1/admin/series", moved)
    b_points = points_of(answer, b_id)
    assert sum(p["events_in"] for p in b_points) >= 19.5  # the engine brought them to b live
    assert sum(p["deliveries"] for p in points_of(answer, a_id)) < 1  # nobody listens on a
    values = [value for point in b_points for value in point.values()]
    assert all(isinstance(value, int | float) or value is None for value in values)


def test_tokens_living_longer_than_the_maximum_are_refused(memory_server: ServerProcess) -> None:
    forever = {"Authorization": f"Bearer {token('long', ttl_s=40 * 86400)}"}
    response = httpx.get(f"{memory_server.url}/v1/notifications/unread-count", headers=forever)
    assert "longer" in assert_problem(response, 401)["detail"]


async def test_tickets_of_a_revoked_token_are_refused_too(
    spawn: Callable[..., ServerProcess],
) -> None:
    server = spawn(NODE_ENV)
    issued = int(time.time()) - 5
    old = {"Authorization": f"Bearer {mint_token(SECRET, 'quinn', iat=issued, exp=issued + 600)}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        ticket = (await client.post("/v1/auth/ticket", headers=old)).json()["ticket"]
        answer = await post(server, "/v1/admin/users/quinn/disconnect", {"revoke": True})
        assert answer.status_code == 200, answer.text
        refused = await client.get("/v1/stream", params={"ticket": ticket})
        assert "revoked" in assert_problem(refused, 401)["detail"]
        assert_problem(await client.post("/v1/auth/ticket", headers=old), 401)
        fresh = (await client.post("/v1/auth/ticket", headers=bearer("quinn"))).json()["ticket"]
    async with open_stream(server.url, {}, params={"ticket": fresh}):
        pass


@pytest.mark.parametrize("raw", [b'{"actions_rate": "\xff"}', b"\xff\xfe"])
async def test_limits_body_that_is_not_utf8_is_400(
    memory_server: ServerProcess, raw: bytes
) -> None:
    """Regression: `PUT /v1/admin/limits` decoded its body without the UTF-8 check every other
    body gets, and msgspec's UnicodeDecodeError ended as a 500."""
    headers = {**ADMIN, "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=memory_server.url, timeout=10) as client:
        response = await client.put("/v1/admin/limits", content=raw, headers=headers)
        assert "UTF-8" in assert_problem(response, 400)["detail"]
        # and nothing was changed
        limits = await client.get("/v1/admin/limits", headers=ADMIN)
    assert limits.json()["actions_rate"] == 20.0

"""The notification API end to end: real server processes, on SQLite and PostgreSQL, with the
memory and the Redis engine; events read from real SSE streams."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.support import (
    OVERFLOWS_UTC,
    SERVICE,
    PrivateRedis,
    ServerProcess,
    assert_problem,
    bearer,
    nested_lists,
    open_stream,
)

pytestmark = pytest.mark.anyio

ALICE, BOB = bearer("alice"), bearer("bob")


@pytest.fixture
def server(
    spawn: Callable[..., ServerProcess], engine_env: dict[str, str], database_env: dict[str, str]
) -> ServerProcess:
    """One server per engine and database."""
    return spawn({**engine_env, **database_env})


async def create(
    client: httpx.AsyncClient,
    user: str | list[str] = "alice",
    title: str = "Build finished",
    *,
    key: str | None = None,
    expect: int = 201,
    **fields: Any,
) -> list[dict[str, Any]]:
    body = {"users" if isinstance(user, list) else "user": user, "type": "build.finished"}
    body |= {"title": title, **fields}
    headers = SERVICE | ({"Idempotency-Key": key} if key else {})
    response = await client.post("/v1/notifications", json=body, headers=headers)
    assert response.status_code == expect, response.text
    notifications: list[dict[str, Any]] = response.json()["notifications"]
    return notifications


async def test_create_reaches_every_device_and_read_state_follows(server: ServerProcess) -> None:
    """Create → both of alice's connections get it; one marks it read over REST → the other
    sees `notification.read` with the new unread count."""
    async with (
        httpx.AsyncClient(base_url=server.url) as client,
        open_stream(server.url, ALICE) as (laptop, _),
        open_stream(server.url, ALICE) as (phone, _),
    ):
        [first] = await create(client, title="Deploy done", data={"env": "prod"}, link="/runs/7")
        [second] = await create(client, title="Tests failed", severity="error")
        for device in (laptop, phone):
            await device.until(lambda r: len(r.payloads("notification.created")) == 2)
            created = device.payloads("notification.created")
            assert [c["notification"]["id"] for c in created] == [first["id"], second["id"]]
            assert [c["unread"] for c in created] == [1, 2]
            assert created[0]["notification"]["data"] == {"env": "prod"}
            assert created[0]["notification"]["link"] == "/runs/7"

        response = await client.post(f"/v1/notifications/{first['id']}/read", headers=ALICE)
        assert response.status_code == 200, response.text
        assert response.json()["unread"] == 1
        assert response.json()["notification"]["state"] == "read"
        await laptop.until(lambda r: bool(r.payloads("notification.read")))
        assert laptop.payloads("notification.read") == [{"ids": [first["id"]], "unread": 1}]

        response = await client.post(
            "/v1/notifications/dismiss", json={"ids": [second["id"]]}, headers=ALICE
        )
        assert response.json() == {"changed": [second["id"]], "unread": 0}
        await laptop.until(lambda r: bool(r.payloads("notification.dismissed")))
        assert laptop.payloads("notification.dismissed") == [{"ids": [second["id"]], "unread": 0}]

        response = await client.post(f"/v1/notifications/{first['id']}/unread", headers=ALICE)
        assert response.json()["unread"] == 1
        await phone.until(lambda r: bool(r.payloads("notification.unread")))
        assert phone.payloads("notification.unread") == [{"ids": [first["id"]], "unread": 1}]

        count = await client.get("/v1/notifications/unread-count", headers=ALICE)
        assert count.json() == {"unread": 1}


async def test_a_retried_create_creates_nothing_new(server: ServerProcess) -> None:
    async with (
        httpx.AsyncClient(base_url=server.url) as client,
        open_stream(server.url, ALICE) as (alice, _),
    ):
        [first] = await create(client, key="order-42")
        [again] = await create(client, key="order-42", expect=200)
        assert again == first
        # The same key for a different notification is a producer bug, not a retry.
        response = await client.post(
            "/v1/notifications",
            json={"user": "alice", "type": "build.finished", "title": "Something else"},
            headers=SERVICE | {"Idempotency-Key": "order-42"},
        )
        assert_problem(response, 422, "Idempotency-Key")
        # Many users, one key: a retry that adds a user creates only that user's.
        many = await create(client, ["alice", "bob"], "Maintenance", key="m-1")
        retry = await client.post(
            "/v1/notifications",
            json={
                "users": ["bob", "alice", "carol"],
                "type": "build.finished",
                "title": "Maintenance",
            },
            headers=SERVICE | {"Idempotency-Key": "m-1"},
        )
        assert retry.status_code == 201
        assert [n["user"] for n in retry.json()["notifications"]] == ["bob", "alice", "carol"]
        assert retry.json()["notifications"][1]["id"] == many[0]["id"]

        await alice.until(lambda r: len(r.payloads("notification.created")) >= 2)
        # A marker after the retries: once it arrives, nothing else can be in flight before it.
        [marker] = await create(client, title="marker")
        await alice.until(
            lambda r: r.payloads("notification.created")[-1]["notification"]["id"] == marker["id"]
        )
        ids = [c["notification"]["id"] for c in alice.payloads("notification.created")]
        assert ids == [first["id"], many[0]["id"], marker["id"]]
        count = await client.get("/v1/notifications/unread-count", headers=ALICE)
        assert count.json() == {"unread": 3}


async def test_read_all_leaves_what_arrived_during_the_click(server: ServerProcess) -> None:
    async with (
        httpx.AsyncClient(base_url=server.url) as client,
        open_stream(server.url, ALICE) as (alice, _),
    ):
        for i in range(3):
            await create(client, title=f"shown {i}")
        shown = (await client.get("/v1/notifications", headers=ALICE)).json()["notifications"]
        [late] = await create(client, title="arrived during the click")
        response = await client.post(
            "/v1/notifications/read-all", json={"before": shown[0]["cursor"]}, headers=ALICE
        )
        assert response.json() == {"marked": 3, "unread": 1}
        await alice.until(lambda r: bool(r.payloads("notification.read_all")))
        [event] = alice.payloads("notification.read_all")
        assert event == {"marked": 3, "before": shown[0]["cursor"], "unread": 1}
        unread = await client.get("/v1/notifications?state=unread", headers=ALICE)
        assert [n["id"] for n in unread.json()["notifications"]] == [late["id"]]
        # A time bound works too; without a bound, everything unread goes.
        response = await client.post(
            "/v1/notifications/read-all", json={"before": shown[0]["created"]}, headers=ALICE
        )
        assert response.json() == {"marked": 0, "unread": 1}
        response = await client.post("/v1/notifications/read-all", headers=ALICE)
        assert response.json() == {"marked": 1, "unread": 0}


async def test_history_pages_are_stable_while_notifications_arrive(
    spawn: Callable[..., ServerProcess],
) -> None:
    server = spawn()
    async with httpx.AsyncClient(base_url=server.url) as client:
        older = [(await create(client, title=f"old {i}"))[0]["id"] for i in range(7)]
        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
            page = (await client.get("/v1/notifications", params=params, headers=ALICE)).json()
            seen += [n["id"] for n in page["notifications"]]
            await create(client, title="newer, arrives between pages")
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == older[::-1]


async def test_filters(spawn: Callable[..., ServerProcess]) -> None:
    server = spawn()
    async with httpx.AsyncClient(base_url=server.url) as client:
        [info] = await create(client, title="fyi")
        [error] = await create(client, title="broken", severity="error")
        response = await client.post(
            "/v1/notifications",
            json={"user": "alice", "type": "mention", "title": "@alice"},
            headers=SERVICE,
        )
        mention = response.json()["notifications"][0]

        async def ids(**params: Any) -> list[str]:
            reply = await client.get("/v1/notifications", params=params, headers=ALICE)
            assert reply.status_code == 200, reply.text
            return [n["id"] for n in reply.json()["notifications"]]

        assert await ids() == [mention["id"], error["id"], info["id"]]
        assert await ids(type="mention") == [mention["id"]]
        assert await ids(severity="error") == [error["id"]]
        assert await ids(since=error["created"]) == [mention["id"], error["id"]]
        await client.post(f"/v1/notifications/{info['id']}/read", headers=ALICE)
        await client.post(f"/v1/notifications/{error['id']}/dismiss", headers=ALICE)
        assert await ids(state="unread") == [mention["id"]]
        assert await ids(state="read") == [info["id"]]
        assert await ids(state="dismissed") == [error["id"]]
        assert await ids() == [mention["id"], info["id"]]  # the inbox hides dismissed ones


async def test_users_reach_only_their_own_notifications(server: ServerProcess) -> None:
    async with (
        httpx.AsyncClient(base_url=server.url) as client,
        open_stream(server.url, BOB) as (bob_stream, _),
    ):
        [mine] = await create(client, "alice")
        [bobs] = await create(client, "bob")
        other = mine["id"]
        for path in (f"/v1/notifications/{other}", f"/v1/notifications/{uuid.uuid4()}"):
            assert_problem(await client.get(path, headers=BOB), 404)
        for action in ("read", "unread", "dismiss"):
            response = await client.post(f"/v1/notifications/{other}/{action}", headers=BOB)
            assert_problem(response, 404)
            response = await client.post(
                f"/v1/notifications/{action}", json={"ids": [other, bobs["id"]]}, headers=BOB
            )
            assert response.status_code == 200
            assert other not in response.json()["changed"]
        listed = (await client.get("/v1/notifications?state=dismissed", headers=BOB)).json()
        assert [n["id"] for n in listed["notifications"]] == [bobs["id"]]
        assert (await client.post("/v1/notifications/read-all", headers=BOB)).json()["marked"] == 0
        assert (await client.get("/v1/notifications/unread-count", headers=BOB)).json() == {
            "unread": 0
        }
        # Alice's notification is untouched by all of that.
        alice = (await client.get(f"/v1/notifications/{other}", headers=ALICE)).json()
        assert alice["state"] == "unread"
        assert (await client.get("/v1/notifications/unread-count", headers=ALICE)).json() == {
            "unread": 1
        }
        # Users cannot create notifications, for others or themselves.
        response = await client.post(
            "/v1/notifications", json={"user": "bob", "type": "x", "title": "x"}, headers=BOB
        )
        assert_problem(response, 403)
        # Bob's stream carried only his own events.
        [marker] = await create(client, "bob", "marker")
        await bob_stream.until(
            lambda r: r.payloads()[-1].get("notification", {}).get("id") == marker["id"]
        )
        for payload in bob_stream.payloads():
            assert other not in str(payload)


async def test_bad_input_is_refused_with_the_field_named(
    memory_server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=memory_server.url) as client:

        async def post(body: Any, headers: dict[str, str] = SERVICE) -> httpx.Response:
            return await client.post("/v1/notifications", json=body, headers=headers)

        ok = {"user": "alice", "type": "build.finished", "title": "t"}
        cases: list[tuple[Any, str | None]] = [
            ({**ok, "colour": "red"}, "colour"),
            ({"user": "alice", "type": "build.finished"}, "title"),
            ({**ok, "title": ""}, "title"),
            ({**ok, "title": "x" * 513}, "title"),
            ({**ok, "body": "x" * 8193}, "body"),
            ({**ok, "severity": "critical"}, "severity"),
            ({**ok, "type": "Not A Type"}, "type"),
            ({**ok, "user": "al ice"}, "user"),
            ({**ok, "users": ["bob"]}, "users"),
            ({"users": [], "type": "t", "title": "t"}, "users"),
            ({"users": [f"u{i}" for i in range(1001)], "type": "t", "title": "t"}, "users"),
            ({**ok, "link": "javascript:alert(1)"}, "link"),
            ({**ok, "link": "//evil.example"}, "link"),
            ({**ok, "expires_at": "2026-01-01T00:00:00"}, "expires_at"),
            ({**ok, "data": [1, 2]}, "data"),
            ({**ok, "data": {"x": "y" * 20_000}}, "data"),
            # Regressions, each a 500 before: past the limits of every request.
            ({**ok, "expires_at": OVERFLOWS_UTC[0]}, "expires_at"),
            ({**ok, "expires_at": OVERFLOWS_UTC[1]}, "expires_at"),
            ({**ok, "data": {"x": nested_lists(100)}}, "data"),
            ({**ok, "title": "a\x00b"}, "title"),
            ({**ok, "data": {"x\x00": 1}}, "data"),
        ]
        for body, field in cases:
            assert_problem(await post(body), 400, field)
        response = await client.post("/v1/notifications", content=b"{not json", headers=SERVICE)
        assert_problem(response, 400)
        deep = b'{"user": "alice", "type": "t", "title": "t", "data": {"x": ' + b"[" * 1000
        response = await client.post(
            "/v1/notifications", content=deep + b"]" * 1000 + b"}}", headers=SERVICE
        )
        assert "64 levels" in assert_problem(response, 400, "data")["detail"]
        response = await client.post(
            "/v1/notifications", json=ok, headers=SERVICE | {"Idempotency-Key": "x" * 256}
        )
        assert_problem(response, 400, "Idempotency-Key")
        response = await client.post("/v1/notifications", content=b"x" * 1_000_000, headers=SERVICE)
        assert_problem(response, 413)

        for params, field in [
            ({"state": "archived"}, "state"),
            ({"severity": "critical"}, "severity"),
            ({"limit": 0}, "limit"),
            ({"limit": 201}, "limit"),
            ({"cursor": "v1.garbage"}, "cursor"),
            ({"cursor": "nonsense"}, "cursor"),
            ({"since": "yesterday"}, "since"),
            ({"since": "2026-01-01T00:00:00"}, "since"),
            ({"since": OVERFLOWS_UTC[0]}, "since"),
            ({"since": OVERFLOWS_UTC[1]}, "since"),
            ({"type": "build\x00"}, "type"),
        ]:
            response = await client.get("/v1/notifications", params=params, headers=ALICE)
            assert_problem(response, 400, field)
        for body, field in [
            ({"ids": []}, "ids"),
            ({"ids": ["not-a-uuid"]}, "ids[0]"),
            ({"ids": [str(uuid.uuid4())] * 201}, "ids"),
            ({"ids": [str(uuid.uuid4())], "extra": 1}, "extra"),
        ]:
            response = await client.post("/v1/notifications/read", json=body, headers=ALICE)
            assert_problem(response, 400, field)
        for body, field in [
            ({"before": "v1.bad"}, "before"),
            ({"before": "soon"}, "before"),
            ({"before": OVERFLOWS_UTC[0]}, "before"),
            ({"before": OVERFLOWS_UTC[1]}, "before"),
        ]:
            response = await client.post("/v1/notifications/read-all", json=body, headers=ALICE)
            assert_problem(response, 400, field)
        response = await client.get("/v1/notifications/not-a-uuid", headers=ALICE)
        assert response.status_code in (400, 404)
        assert response.headers["content-type"] == "application/problem+json"
        assert_problem(await client.get("/v1/notifications"), 401)
        assert_problem(await client.get("/v1/notifications/unread-count"), 401)


async def test_nul_is_refused_alike_on_both_databases(
    spawn: Callable[..., ServerProcess], database_env: dict[str, str]
) -> None:
    """Regression: PostgreSQL refused NUL in text with a 500 where SQLite stored it; both now
    answer 400 naming the field, and nothing is stored."""
    server = spawn(database_env)
    async with httpx.AsyncClient(base_url=server.url) as client:
        ok = {"user": "alice", "type": "build.finished", "title": "t"}
        for fields, field in [
            ({"title": "a\x00"}, "title"),
            ({"body": "\x00"}, "body"),
            ({"link": "/x\x00"}, "link"),
            ({"data": {"k": "\x00"}}, "data"),
        ]:
            response = await client.post("/v1/notifications", json=ok | fields, headers=SERVICE)
            assert "NUL" in assert_problem(response, 400, field)["detail"]
        for params, field in [({"type": "a\x00"}, "type"), ({"since": "2026\x00"}, "since")]:
            response = await client.get("/v1/notifications", params=params, headers=ALICE)
            assert_problem(response, 400, field)
        response = await client.post(
            "/v1/notifications/read-all", json={"before": OVERFLOWS_UTC[0]}, headers=ALICE
        )
        assert_problem(response, 400, "before")
        listed = await client.get("/v1/notifications", headers=ALICE)
        assert listed.json()["notifications"] == []


async def test_outbox_delivers_what_was_created_while_redis_was_down(
    spawn: Callable[..., ServerProcess],
    private_redis: PrivateRedis,
    database_env: dict[str, str],
) -> None:
    """The database commits while Redis is down; once Redis is back, the open stream gets a
    `reset` (Redis lost everything) followed by every notification, in order, none twice."""
    server = spawn({"SINAL_REDIS_URL": private_redis.url, **database_env})
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=15) as client,
        open_stream(server.url, ALICE) as (alice, _),
    ):
        [before] = await create(client, title="before the outage")
        await alice.until(lambda r: len(r.payloads("notification.created")) == 1)
        private_redis.stop()
        during = [(await create(client, title=f"during {i}"))[0]["id"] for i in range(5)]
        private_redis.start()
        [after] = await create(client, title="after")
        expected = [before["id"], *during, after["id"]]

        def ids(received: Any) -> list[str]:
            return [c["notification"]["id"] for c in received.payloads("notification.created")]

        # `after` goes out last (one channel's events keep their order): once it is in, so is
        # everything before it, and any repeat would sit in the list.
        await alice.until(lambda r: after["id"] in ids(r), within=30)
        assert ids(alice) == expected
        assert [c["unread"] for c in alice.payloads("notification.created")] == list(range(1, 8))
        assert [e.event for e in alice.events].count("reset") >= 1

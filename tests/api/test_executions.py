"""The executions API end to end: real server processes, on SQLite and PostgreSQL, with the
memory and the Redis engine; events read from real SSE streams and long-polls."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest

from tests.support import (
    ADMIN,
    OVERFLOWS_UTC,
    SERVICE,
    ServerProcess,
    assert_problem,
    bearer,
    nested_lists,
    open_stream,
    stream_response,
)

pytestmark = pytest.mark.anyio

ALICE = bearer("alice", teams=("ml",))  # the owner, in team ml
CAROL = bearer("carol", teams=("ml", "web"))  # another member of ml
MALLORY = bearer("mallory", teams=("web",))  # another team
NON_PROGRESS = (
    "execution.step_started",
    "execution.step_finished",
    "execution.log",
    "execution.status",
    "execution.error",
)


@pytest.fixture
def server(
    spawn: Callable[..., ServerProcess], engine_env: dict[str, str], database_env: dict[str, str]
) -> ServerProcess:
    """One server per engine and database; commands come back after 1 s without an ack."""
    return spawn({**engine_env, **database_env, "SINAL_COMMAND_ACK_TIMEOUT": "1"})


async def create(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"team": "ml", "owner": "alice", "name": "train model"} | fields
    response = await client.post("/v1/executions", json=body, headers=SERVICE)
    assert response.status_code == 201, response.text
    execution: dict[str, Any] = response.json()
    return execution


async def send(
    client: httpx.AsyncClient, id: str, *events: dict[str, Any], expect: int = 200
) -> dict[str, Any]:
    response = await client.post(
        f"/v1/executions/{id}/events", json={"events": list(events)}, headers=SERVICE
    )
    assert response.status_code == expect, response.text
    body: dict[str, Any] = response.json()
    return body


def channel(id: str) -> dict[str, str]:
    return {"channel": f"execution:{id}"}


async def test_a_watcher_sees_the_whole_run_and_the_owner_is_notified(
    server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        execution = await create(client, total_steps=2)
        id = execution["id"]
        async with (
            open_stream(server.url, CAROL, params=channel(id)) as (carol, _),
            open_stream(server.url, ALICE) as (alice, _),
        ):
            reply = await send(
                client, id,
                {"type": "step_started", "seq": 1, "step": 1, "name": "fetch"},
                {"type": "progress", "seq": 2, "progress": 40},
                {"type": "log", "seq": 3, "message": "fetched 1200 rows", "step": 1,
                 "data": {"rows": 1200}},
                {"type": "step_finished", "seq": 4, "step": 1},
                {"type": "step_started", "seq": 5, "step": 2, "name": "train"},
                {"type": "error", "seq": 6, "code": "E_OOM", "message": "out of memory",
                 "step": 2, "details": {"exit_code": 137}},
            )  # fmt: skip
            assert reply == {"applied": 6, "duplicates": 0, "next_seq": 7, "status": "failed"}
            await carol.until(lambda r: len(r.of_type("execution.status")) == 2)
            types = [e.event for e in carol.events if e.event.startswith("execution.")]
            assert types == [
                "execution.status",  # queued -> running, started by the first step
                "execution.step_started",
                "execution.progress",
                "execution.log",
                "execution.step_finished",
                "execution.step_started",
                "execution.error",
                "execution.step_finished",  # the step still running ends with the execution
                "execution.status",  # -> failed
            ]
            statuses = carol.payloads("execution.status")
            assert [s["status"] for s in statuses] == ["running", "failed"]
            [error] = carol.payloads("execution.error")
            assert error == {
                "execution": id, "seq": 6, "code": "E_OOM", "message": "out of memory",
                "step": 2, "details": {"exit_code": 137},
            }  # fmt: skip
            assert carol.payloads("execution.log")[0]["data"] == {"rows": 1200}

            await alice.until(lambda r: bool(r.payloads("notification.created")))
            [created] = alice.payloads("notification.created")
            assert created["notification"]["type"] == "execution.failed"
            assert created["notification"]["link"] == f"/executions/{id}"
            assert created["notification"]["data"]["execution"] == id
            assert created["unread"] == 1

        snapshot = (await client.get(f"/v1/executions/{id}", headers=ALICE)).json()
        assert snapshot["status"] == "failed"
        assert snapshot["progress"] == 40
        assert snapshot["error"] == {
            "code": "E_OOM", "message": "out of memory", "step": 2, "details": {"exit_code": 137}
        }  # fmt: skip
        assert [(s["number"], s["name"], s["status"]) for s in snapshot["steps"]] == [
            (1, "fetch", "succeeded"),
            (2, "train", "failed"),
        ]


async def test_ingest_ignores_duplicates_and_refuses_gaps_and_bad_transitions(
    server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        id = (await create(client))["id"]
        async with open_stream(server.url, ALICE, params=channel(id)) as (alice, _):
            log = {"type": "log", "seq": 1, "message": "one"}
            await send(client, id, log, {"type": "log", "seq": 2, "message": "two"})
            # A producer retrying a batch whose answer it lost: nothing twice.
            again = await send(client, id, log, {"type": "log", "seq": 2, "message": "two"},
                               {"type": "log", "seq": 3, "message": "three"})  # fmt: skip
            assert again == {"applied": 1, "duplicates": 2, "next_seq": 4, "status": "queued"}

            gap = await client.post(
                f"/v1/executions/{id}/events",
                json={"events": [{"type": "log", "seq": 5, "message": "five"}]},
                headers=SERVICE,
            )
            body = assert_problem(gap, 409, "events")
            assert (body["expected_seq"], body["execution_status"]) == (4, "queued")

            await send(client, id, {"type": "status", "seq": 4, "status": "succeeded"},
                       expect=409)  # fmt: skip  # queued cannot succeed without running
            await send(client, id, {"type": "status", "seq": 4, "status": "running"},
                       {"type": "status", "seq": 5, "status": "succeeded"})  # fmt: skip
            late = await client.post(
                f"/v1/executions/{id}/events",
                json={"events": [{"type": "status", "seq": 5, "status": "succeeded"},  # a repeat
                                 {"type": "log", "seq": 6, "message": "after the end is fine"},
                                 {"type": "progress", "seq": 7, "progress": 10}]},
                headers=SERVICE,
            )  # fmt: skip
            body = assert_problem(late, 409, "events")
            assert (body["seq"], body["execution_status"], body["expected_seq"]) == (
                7,
                "succeeded",
                6,
            )
            # The refused batch applied nothing, not even its log line.
            await send(client, id, {"type": "log", "seq": 6, "message": "after the end is fine"})

            await alice.until(lambda r: len(r.payloads("execution.log")) == 4)
            assert [p["message"] for p in alice.payloads("execution.log")] == [
                "one", "two", "three", "after the end is fine"
            ]  # fmt: skip
        logs = (await client.get(f"/v1/executions/{id}/logs", headers=ALICE)).json()
        assert [line["seq"] for line in logs["logs"]] == [1, 2, 3, 6]


async def test_progress_is_coalesced_but_nothing_else_is_dropped(
    server: ServerProcess,
) -> None:
    """A burst of single-event batches: every step and log arrives, in order; progress ticks
    are fewer than sent, and the last value always arrives."""
    async with httpx.AsyncClient(base_url=server.url) as client:
        id = (await create(client))["id"]
        async with open_stream(server.url, CAROL, params=channel(id)) as (carol, _):
            seq = 0
            for n in range(1, 41):
                seq += 1
                await send(client, id, {"type": "progress", "seq": seq, "progress": n})
                if n % 4 == 0:
                    seq += 1
                    await send(client, id, {"type": "log", "seq": seq, "message": f"at {n}"})
            await carol.until(
                lambda r: (
                    any(p["progress"] == 40 for p in r.payloads("execution.progress"))
                    and len(r.payloads("execution.log")) >= 10
                )
            )
            ticks = [p["progress"] for p in carol.payloads("execution.progress")]
            assert ticks == sorted(ticks)
            assert len(ticks) < 40
            logs = [p["message"] for p in carol.payloads("execution.log")]
            assert logs == [f"at {n}" for n in range(4, 41, 4)]
            seqs = [p["seq"] for p in carol.payloads() if "seq" in p]
            assert seqs == sorted(seqs)


async def test_stream_and_long_poll_resume_from_the_same_cursor(
    server: ServerProcess,
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        id = (await create(client))["id"]
        await send(client, id, {"type": "log", "seq": 1, "message": "before"})
        async with open_stream(server.url, ALICE, params=channel(id)) as (alice, _):
            await send(client, id, {"type": "log", "seq": 2, "message": "live"})
            # "before" may arrive live too: the outbox relay publishes it after the ingest
            # answered, so the cursor is taken once "live" itself is in.
            await alice.until(
                lambda r: "live" in [p["message"] for p in r.payloads("execution.log")]
            )
            cursor = alice.last_id
        # Missed while away; the long-poll picks them up from the stream's cursor.
        await send(client, id, {"type": "log", "seq": 3, "message": "missed 1"},
                   {"type": "log", "seq": 4, "message": "missed 2"})  # fmt: skip
        polled = await client.get(
            f"/v1/executions/{id}/poll", params={"cursor": cursor, "wait": 5}, headers=ALICE
        )
        assert polled.status_code == 200, polled.text
        reply = polled.json()
        assert [e["data"]["message"] for e in reply["events"]] == ["missed 1", "missed 2"]
        assert reply["resets"] == []

        async def later() -> None:
            await anyio.sleep(0.3)
            await send(client, id, {"type": "log", "seq": 5, "message": "waited for"})

        async with anyio.create_task_group() as group:
            group.start_soon(later)
            waited = await client.get(
                f"/v1/executions/{id}/poll",
                params={"cursor": reply["next_cursor"], "wait": 10},
                headers=ALICE,
            )
        assert [e["data"]["message"] for e in waited.json()["events"]] == ["waited for"]
        # And the long-poll's cursor resumes the stream.
        async with open_stream(
            server.url, ALICE, params=channel(id), last_event_id=reply["next_cursor"]
        ) as (resumed, _):
            await resumed.until(lambda r: bool(r.payloads("execution.log")))
            assert [p["message"] for p in resumed.payloads("execution.log")] == ["waited for"]


async def test_who_may_see_and_command_an_execution(memory_server: ServerProcess) -> None:
    """Members of the team, admins and services read; members and admins command; anyone
    else learns nothing, not even whether the execution exists."""
    async with httpx.AsyncClient(base_url=memory_server.url) as client:
        id = (await create(client))["id"]
        await send(client, id, {"type": "log", "seq": 1, "message": "x"})
        unknown = str(uuid.uuid4())
        for who in (ALICE, CAROL, ADMIN, SERVICE):
            for path in (f"/v1/executions/{id}", f"/v1/executions/{id}/logs"):
                assert (await client.get(path, headers=who)).status_code == 200, path
            polled = await client.get(f"/v1/executions/{id}/poll", headers=who)
            assert polled.status_code == 200
            response = await stream_response(memory_server.url, who, channel(id))
            assert response.status_code == 200
        for target in (id, unknown):
            for path in (f"/v1/executions/{target}", f"/v1/executions/{target}/logs"):
                assert_problem(await client.get(path, headers=MALLORY), 404)
            for command in ("retry", "cancel"):
                response = await client.post(f"/v1/executions/{target}/{command}", headers=MALLORY)
                assert_problem(response, 404)
            poll = await client.get(f"/v1/executions/{target}/poll", headers=MALLORY)
            assert_problem(poll, 403, "channel")
            response = await stream_response(memory_server.url, MALLORY, channel(target))
            assert response.status_code == 403
        # Lists: one's own teams; another team's by name is refused.
        listed = (await client.get("/v1/executions", headers=MALLORY)).json()
        assert id not in [e["id"] for e in listed["executions"]]
        assert_problem(await client.get("/v1/executions?team=ml", headers=MALLORY), 403, "team")
        for who in (ALICE, ADMIN):
            listed = (await client.get("/v1/executions?team=ml", headers=who)).json()
            assert id in [e["id"] for e in listed["executions"]]
        # Only services ingest.
        for who in (ALICE, ADMIN):
            response = await client.post(
                "/v1/executions", json={"team": "ml", "owner": "a", "name": "n"}, headers=who
            )
            assert_problem(response, 403)
            response = await client.post(
                f"/v1/executions/{id}/events",
                json={"events": [{"type": "log", "seq": 2, "message": "x"}]},
                headers=who,
            )
            assert_problem(response, 403)
        assert_problem(await client.get(f"/v1/executions/{id}"), 401)
        # A member cancels: the command is accepted.
        response = await client.post(f"/v1/executions/{id}/cancel", headers=CAROL)
        assert response.status_code == 202, response.text
        assert response.json()["command"]["by"] == "carol"


async def test_bad_input_is_a_clear_problem(memory_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=memory_server.url) as client:
        id = (await create(client))["id"]
        path = f"/v1/executions/{id}/events"
        cases: list[tuple[Any, str | None]] = [
            ({"events": []}, "events"),
            ({"events": [{"type": "teleport", "seq": 1}]}, "events[0].type"),
            ({"events": [{"type": "log", "message": "no seq"}]}, "events[0].seq"),
            ({"events": [{"type": "log", "seq": 0, "message": "zero"}]}, "events[0].seq"),
            ({"events": [{"type": "progress", "seq": 1, "progress": 101}]}, "events[0].progress"),
            ({"events": [{"type": "log", "seq": 1, "message": "x", "level": "loud"}]},
             "events[0].level"),
            ({"events": [{"type": "log", "seq": 1, "message": "x", "extra": 1}]},
             "events[0].extra"),
            ({"events": [{"type": "log", "seq": 1, "message": "x", "data": {"b": "x" * 20000}}]},
             "events[0]"),
            ({"events": [{"type": "log", "seq": n, "message": "x"} for n in range(1, 502)]},
             "events"),
            ({"events": "all of them"}, "events"),
            # Regressions, each a 500 before: past the limits of every request.
            ({"events": [{"type": "log", "seq": 1, "message": "x", "time": OVERFLOWS_UTC[0]}]},
             "events[0].time"),
            ({"events": [{"type": "log", "seq": 1, "message": "x", "time": OVERFLOWS_UTC[1]}]},
             "events[0].time"),
            ({"events": [{"type": "log", "seq": 1, "message": "x",
                          "data": {"a": nested_lists(70)}}]}, "events[0].data"),
            ({"events": [{"type": "log", "seq": 2**63, "message": "x"}]}, "events[0].seq"),
            ({"events": [{"type": "log", "seq": 1, "message": "a\x00"}]}, "events[0].message"),
        ]  # fmt: skip
        for body, field in cases:
            response = await client.post(path, json=body, headers=SERVICE)
            assert_problem(response, 400, field)
        assert_problem(await client.post(path, content=b"{not json", headers=SERVICE), 400)
        deep = b"[" * 1000 + b"]" * 1000
        body = b'{"events": [{"type": "log", "seq": 1, "message": "x", "data": {"a": %s}}]}' % deep
        response = await client.post(path, content=body, headers=SERVICE)
        assert "64 levels" in assert_problem(response, 400, "events[0].data")["detail"]
        bulk = (
            b'{"batches": [{"execution": "%s", "events": [{"type": "error", "seq": 1, '
            % (id.encode())
            + b'"code": "E", "message": "m", "details": {"a": %s}}]}]}' % deep
        )
        response = await client.post("/v1/executions/events", content=bulk, headers=SERVICE)
        assert_problem(response, 400, "batches[0].events[0].details")
        huge = {"events": [{"type": "log", "seq": n, "message": "x" * 4000} for n in range(1, 300)]}
        assert_problem(await client.post(path, json=huge, headers=SERVICE), 413)
        missing = f"/v1/executions/{uuid.uuid4()}/events"
        response = await client.post(
            missing, json={"events": [{"type": "log", "seq": 1, "message": "x"}]}, headers=SERVICE
        )
        assert_problem(response, 404)
        assert (await client.get(f"/v1/executions/{id}", headers=ALICE)).json()["next_seq"] == 1

        for body, field in [
            ({"team": "ml", "owner": "alice"}, "name"),
            ({"team": "no spaces", "owner": "alice", "name": "n"}, "team"),
            ({"team": "ml", "owner": "alice", "name": ""}, "name"),
            ({"team": "ml", "owner": "alice", "name": "n", "total_steps": 0}, "total_steps"),
            ({"team": "ml", "owner": "alice", "name": "n", "id": "not-a-uuid"}, "id"),
        ]:
            response = await client.post("/v1/executions", json=body, headers=SERVICE)
            assert_problem(response, 400, field)
        for query, field in [
            ("status=lost", "status"),
            ("since=yesterday", "since"),
            ("until=2026-01-01T00:00:00", "until"),
            ("cursor=v1.nope", "cursor"),
            ("limit=0", "limit"),
            (f"since={OVERFLOWS_UTC[0]}", "since"),
            ("until=0001-01-01T00:00:00%2B14:00", "until"),
            ("team=ml%00", "team"),
            ("owner=alice%00", "owner"),
        ]:
            assert_problem(await client.get(f"/v1/executions?{query}", headers=ALICE), 400, field)
        for query, field in [
            ("level=loud", "level"),
            ("step=0", "step"),
            ("after=-1", "after"),
            ("after=9223372036854775808", "after"),  # past a bigint: a 500 before
            ("step=2147483648", "step"),  # past PostgreSQL's integer: a 500 there
        ]:
            response = await client.get(f"/v1/executions/{id}/logs?{query}", headers=ALICE)
            assert_problem(response, 400, field)
        response = await client.get(f"/v1/executions/{id}/poll?cursor=garbage", headers=ALICE)
        assert_problem(response, 400, "cursor")


async def test_a_service_that_reads_an_execution_is_told_it_may_not_command_it(
    memory_server: ServerProcess,
) -> None:
    """Regression: a service token got 404 on retry and cancel of an execution it reads, as
    if there were none; it is 403 naming what commands need."""
    async with httpx.AsyncClient(base_url=memory_server.url) as client:
        id = (await create(client))["id"]
        await send(client, id, {"type": "status", "seq": 1, "status": "failed"})
        for command in ("retry", "cancel"):
            response = await client.post(f"/v1/executions/{id}/{command}", headers=SERVICE)
            detail = assert_problem(response, 403)["detail"]
            assert "'admin' role" in detail, detail
            assert "team 'ml'" in detail, detail
        # A service of the team, and the team's members, do command it.
        member_service = bearer("svc", "service", teams=("ml",))
        response = await client.post(f"/v1/executions/{id}/retry", headers=member_service)
        assert response.status_code == 202, response.text


async def test_out_of_range_values_are_refused_alike_on_both_databases(
    spawn: Callable[..., ServerProcess], database_env: dict[str, str]
) -> None:
    """Regression: PostgreSQL answered 500 to NUL in text and to integers past its columns
    (`step=2147483648`, `after=2**63`) where SQLite took them; both now answer 400 naming
    the field, and nothing of a refused batch is stored."""
    server = spawn(database_env)
    async with httpx.AsyncClient(base_url=server.url) as client:
        id = (await create(client))["id"]
        for body, field in [
            ({"team": "ml", "owner": "alice", "name": "a\x00"}, "name"),
            ({"team": "ml", "owner": "alice", "name": "n", "kind": "\x00"}, "kind"),
        ]:
            response = await client.post("/v1/executions", json=body, headers=SERVICE)
            assert_problem(response, 400, field)
        for event, field in [
            ({"type": "log", "seq": 1, "message": "\x00"}, "events[0].message"),
            ({"type": "log", "seq": 1, "message": "m", "data": {"k": "\x00"}}, "events[0].data"),
            ({"type": "step_started", "seq": 1, "step": 1, "name": "\x00"}, "events[0].name"),
            ({"type": "error", "seq": 1, "code": "E\x00", "message": "m"}, "events[0].code"),
            ({"type": "step_started", "seq": 1, "step": 2**31, "name": "s"}, "events[0].step"),
            ({"type": "log", "seq": 1, "message": "m", "time": OVERFLOWS_UTC[0]},
             "events[0].time"),
        ]:  # fmt: skip
            response = await client.post(
                f"/v1/executions/{id}/events", json={"events": [event]}, headers=SERVICE
            )
            assert_problem(response, 400, field)
        for query, field in [
            ("after=9223372036854775808", "after"),
            ("step=2147483648", "step"),
            ("level=info%00", "level"),
        ]:
            response = await client.get(f"/v1/executions/{id}/logs?{query}", headers=ALICE)
            assert_problem(response, 400, field)
        for query in ("team=ml%00", "owner=a%00", f"since={OVERFLOWS_UTC[0]}"):
            response = await client.get(f"/v1/executions?{query}", headers=ADMIN)
            assert_problem(response, 400, query.partition("=")[0])
        assert (await client.get(f"/v1/executions/{id}", headers=ALICE)).json()["next_seq"] == 1


async def test_a_retried_create_answers_with_the_first(memory_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=memory_server.url) as client:
        id = str(uuid.uuid4())
        body = {"team": "ml", "owner": "alice", "name": "nightly", "id": id}
        first = await client.post("/v1/executions", json=body, headers=SERVICE)
        assert first.status_code == 201
        again = await client.post("/v1/executions", json=body, headers=SERVICE)
        assert again.status_code == 200
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.json()["id"] == id == first.json()["id"]
        other = await client.post("/v1/executions", json=body | {"name": "x"}, headers=SERVICE)
        assert_problem(other, 409, "id")


async def test_lists_filter_and_page(memory_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=memory_server.url) as client:
        team = f"t{uuid.uuid4().hex[:8]}"
        member = bearer("dana", teams=(team,))
        made = [await create(client, team=team, owner=f"o{n % 2}", name=f"n{n}") for n in range(5)]
        await send(client, made[0]["id"], {"type": "status", "seq": 1, "status": "cancelled"})
        pages: list[str] = []
        cursor = None
        while True:
            params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = (await client.get("/v1/executions", params=params, headers=member)).json()
            pages += [e["name"] for e in page["executions"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == ["n4", "n3", "n2", "n1", "n0"]
        by_owner = await client.get("/v1/executions", params={"owner": "o1"}, headers=member)
        assert [e["name"] for e in by_owner.json()["executions"]] == ["n3", "n1"]
        cancelled = await client.get(
            "/v1/executions", params={"status": "cancelled"}, headers=member
        )
        assert [e["name"] for e in cancelled.json()["executions"]] == ["n0"]
        since = made[3]["created"]
        recent = await client.get("/v1/executions", params={"since": since}, headers=member)
        assert [e["name"] for e in recent.json()["executions"]] == ["n4", "n3"]
        older = await client.get("/v1/executions", params={"until": since}, headers=member)
        assert [e["name"] for e in older.json()["executions"]] == ["n2", "n1", "n0"]


async def test_commands_reach_the_execution_service_at_least_once(server: ServerProcess) -> None:
    """Retry and cancel are recorded, shown on the channel, and taken by a consumer; one
    that dies before acknowledging has its command delivered again; an ack is final."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        failed = (await create(client))["id"]
        running = (await create(client, name="serve model"))["id"]
        await send(client, failed, {"type": "error", "seq": 1, "code": "E", "message": "boom"})
        await send(client, running, {"type": "status", "seq": 1, "status": "running"})

        async with open_stream(server.url, CAROL, params=channel(failed)) as (carol, _):
            retried = await client.post(f"/v1/executions/{failed}/retry", headers=CAROL)
            assert retried.status_code == 202, retried.text
            attempt = retried.json()["execution"]
            assert (attempt["attempt"], attempt["retry_of"], attempt["status"]) == (
                2,
                failed,
                "queued",
            )
            await carol.until(lambda r: bool(r.payloads("execution.command")))
            [shown] = carol.payloads("execution.command")
            assert (shown["command"], shown["by"]) == ("retry", "carol")
            assert shown["retry_execution"] == attempt["id"]
        # One attempt per execution: a second retry names the first one's attempt.
        twice = await client.post(f"/v1/executions/{failed}/retry", headers=ALICE)
        assert assert_problem(twice, 409)["retry_execution"] == attempt["id"]
        # Only a failed or cancelled execution is retried; a finished one is not cancelled.
        assert_problem(await client.post(f"/v1/executions/{running}/retry", headers=CAROL), 409)
        assert_problem(await client.post(f"/v1/executions/{failed}/cancel", headers=CAROL), 409)
        cancelled = await client.post(f"/v1/executions/{running}/cancel", headers=ALICE)
        assert cancelled.status_code == 202

        async def take(consumer: str, wait: float = 5) -> list[dict[str, Any]]:
            response = await client.get(
                "/v1/commands", params={"consumer": consumer, "wait": wait}, headers=SERVICE
            )
            assert response.status_code == 200, response.text
            commands: list[dict[str, Any]] = response.json()["commands"]
            return commands

        # Worker 1 takes both and dies without acknowledging.
        first: list[dict[str, Any]] = []
        with anyio.fail_after(10):
            while len(first) < 2:
                first += await take("worker-1")
        assert [(d["command"]["command"], d["deliveries"]) for d in first] == [
            ("retry", 1),
            ("cancel", 1),
        ]
        assert first[0]["command"]["retry_execution"] == attempt["id"]
        # Worker 2 gets them again once the ack timeout (1 s) has passed.
        again: list[dict[str, Any]] = []
        with anyio.fail_after(10):
            while len(again) < 2:
                again += await take("worker-2")
        assert [d["command"]["id"] for d in again] == [d["command"]["id"] for d in first]
        assert all(d["deliveries"] == 2 for d in again)
        ack = await client.post(
            "/v1/commands/ack",
            json={"deliveries": [d["delivery"] for d in again]},
            headers=SERVICE,
        )
        assert ack.json() == {"acked": 2}
        repeat = await client.post(
            "/v1/commands/ack", json={"deliveries": [again[0]["delivery"]]}, headers=SERVICE
        )
        assert repeat.json() == {"acked": 0}
        # Acknowledged: never delivered again, even after the timeout.
        assert await take("worker-3", wait=1.5) == []
        assert_problem(await client.get("/v1/commands?consumer=w", headers=ALICE), 403)
        bad = await client.post("/v1/commands/ack", json={"deliveries": ["x"]}, headers=SERVICE)
        assert_problem(bad, 400, "deliveries")


async def test_a_consumer_that_left_takes_no_commands(
    spawn: Callable[..., ServerProcess], engine_env: dict[str, str]
) -> None:
    """A long-poll for commands abandoned by its client stops claiming: the next command goes
    to a consumer that is still there, at once, instead of waiting for the ack timeout."""
    server = spawn(engine_env)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        id = (await create(client))["id"]
        await send(client, id, {"type": "status", "seq": 1, "status": "running"})
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as leaving:
            with anyio.move_on_after(1):  # the consumer gives up (and closes) mid-wait
                await leaving.get(
                    "/v1/commands", params={"consumer": "gone", "wait": 20}, headers=SERVICE
                )
        await client.post(f"/v1/executions/{id}/cancel", headers=ALICE)
        with anyio.fail_after(5):
            taken = await client.get(
                "/v1/commands", params={"consumer": "here", "wait": 4}, headers=SERVICE
            )
        [delivery] = taken.json()["commands"]
        assert (delivery["command"]["command"], delivery["deliveries"]) == ("cancel", 1)


async def test_many_executions_report_in_one_request(server: ServerProcess) -> None:
    """Each execution's batch is applied or refused on its own; watchers see the applied ones."""
    async with httpx.AsyncClient(base_url=server.url) as client:
        first, second, third = [(await create(client, name=f"n{n}"))["id"] for n in range(3)]
        unknown = str(uuid.uuid4())
        async with open_stream(server.url, ALICE, params=channel(first)) as (alice, _):
            response = await client.post(
                "/v1/executions/events",
                json={"batches": [
                    {"execution": first, "events": [
                        {"type": "step_started", "seq": 1, "step": 1, "name": "fetch"},
                        {"type": "log", "seq": 2, "message": "fetched"},
                    ]},
                    {"execution": second, "events": [{"type": "log", "seq": 2, "message": "x"}]},
                    {"execution": unknown, "events": [{"type": "log", "seq": 1, "message": "x"}]},
                    {"execution": third, "events": [
                        {"type": "status", "seq": 1, "status": "running"},
                        {"type": "status", "seq": 2, "status": "succeeded"},
                    ]},
                ]},
                headers=SERVICE,
            )  # fmt: skip
            assert response.status_code == 200, response.text
            applied, gap, missing, done = response.json()["results"]
            assert applied == {"execution": first, "applied": 2, "duplicates": 0,
                               "next_seq": 3, "status": "running"}  # fmt: skip
            assert gap["execution"] == second
            assert (gap["error"]["status"], gap["error"]["expected_seq"]) == (409, 1)
            assert (missing["execution"], missing["error"]["status"]) == (unknown, 404)
            assert (done["status"], done["next_seq"]) == ("succeeded", 3)
            await alice.until(lambda r: bool(r.payloads("execution.log")))
            assert [p["message"] for p in alice.payloads("execution.log")] == ["fetched"]
        refused = await client.get(f"/v1/executions/{second}", headers=ALICE)
        assert refused.json()["next_seq"] == 1

        log = {"type": "log", "seq": 1, "message": "x"}
        for body, field in [
            ({"batches": []}, "batches"),
            ({"batches": [{"execution": first, "events": [log]}] * 2}, "batches[1].execution"),
            ({"batches": [{"execution": "nope", "events": [log]}]}, "batches[0].execution"),
            ({"batches": [{"execution": first, "events": [{"type": "log", "seq": 0}]}]},
             "batches[0].events[0].seq"),
            ({"batches": [{"execution": str(uuid.uuid4()), "events": [log] * 500}
                          for _ in range(11)]}, "batches"),
        ]:  # fmt: skip
            response = await client.post("/v1/executions/events", json=body, headers=SERVICE)
            assert_problem(response, 400, field)
        response = await client.post(
            "/v1/executions/events",
            json={"batches": [{"execution": first, "events": [log]}]},
            headers=ALICE,
        )
        assert_problem(response, 403)

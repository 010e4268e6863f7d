"""`api.client` against a real server: batches land once, retries change nothing, refusals
cost only the refused event, many executions share a request; commands go round; and
`sinal demo` end to end.

A few cases a real server cannot be made to produce on demand (a 503, an outage, a server
without the bulk endpoint) run against an `httpx.MockTransport` that plays the ingest
endpoints."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx
import pytest

from api.client import (
    BufferFull,
    Command,
    ExecutionClient,
    ExecutionRejected,
    PublishRejected,
    RequestRejected,
    ServerUnavailable,
)
from streams.cursor import decode_cursor
from tests.support import ROOT, SECRET, ServerProcess, bearer, token

pytestmark = pytest.mark.anyio

SERVICE_TOKEN = token("worker", "service")
TEAM = "t1"
MEMBER = bearer("alice", teams=(TEAM,))


def client_for(server: ServerProcess, **options: Any) -> ExecutionClient:
    return ExecutionClient(server.url, SERVICE_TOKEN, **options)


def read(server: ServerProcess, path: str, headers: dict[str, str] = MEMBER, **params: Any) -> Any:
    response = httpx.get(server.url + path, headers=headers, params=params, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def logs_of(server: ServerProcess, id: str) -> list[dict[str, Any]]:
    logs: list[dict[str, Any]] = read(server, f"/v1/executions/{id}/logs", limit=1000)["logs"]
    return logs


def is_bulk(request: httpx.Request) -> bool:
    return request.url.path == "/v1/executions/events"


def batches_of(request: httpx.Request) -> list[dict[str, Any]]:
    """The bulk request's batches: [{"execution": id, "events": [...]}, ...]."""
    batches: list[dict[str, Any]] = json.loads(request.content)["batches"]
    return batches


class LoseFirstAnswer(httpx.AsyncBaseTransport):
    """Passes requests to the server; the first answer to a request `matching` is lost on the
    way back (the request went through), as with a connection reset after the server wrote."""

    def __init__(self, matching: Callable[[httpx.Request], bool], *, lose: bool = True) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.matching = matching
        self.sent: list[httpx.Request] = []
        self.lost = not lose  # lose=False: only record the requests matching

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if self.matching(request):
            self.sent.append(request)
            if not self.lost:
                self.lost = True
                await response.aread()
                await response.aclose()
                raise httpx.ReadError("connection reset by peer", request=request)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


# -- against a real server -------------------------------------------------------------------


async def test_emitted_events_reach_the_snapshot_and_the_logs(memory_server: ServerProcess) -> None:
    async with client_for(memory_server) as client:
        run = await client.create(team=TEAM, owner="alice", name="nightly build", kind="build")
        assert run.status == "queued"
        assert run.next_seq == 1
        run.step_started(1, "checkout", total_steps=2)
        run.log("cloned", step=1, data={"commit": "4f2a9c1"})
        run.progress(40)
        run.step_finished(1)
        run.step_started(2, "compile")
        run.log("3 errors", level="error", step=2, data={"files": ["a.c"]})
        run.step_finished(2, outcome="failed")
        run.fail(code="E_COMPILE", message="compilation failed", step=2, details={"exit": 2})
        await run.flush()
        assert run.pending == 0
        assert run.status == "failed"

    view = read(memory_server, f"/v1/executions/{run.id}")
    assert view["status"] == "failed"
    assert view["progress"] == 40
    assert view["total_steps"] == 2
    assert view["next_seq"] == 9
    assert view["error"] == {
        "code": "E_COMPILE", "message": "compilation failed", "step": 2, "details": {"exit": 2},
    }  # fmt: skip
    assert [(s["number"], s["name"], s["status"]) for s in view["steps"]] == [
        (1, "checkout", "succeeded"),
        (2, "compile", "failed"),
    ]
    logs = logs_of(memory_server, run.id)
    assert [(line["seq"], line["level"], line["message"], line["data"]) for line in logs] == [
        (2, "info", "cloned", {"commit": "4f2a9c1"}),
        (6, "error", "3 errors", {"files": ["a.c"]}),
    ]


async def test_many_events_go_in_batches_and_in_order(memory_server: ServerProcess) -> None:
    async with client_for(memory_server, batch_size=50) as client:
        run = await client.create(team=TEAM, owner="alice", name="chatty")
        for number in range(1, 1201):
            run.log(f"line {number}", data={"n": number})
        await run.flush()
        run.succeed()
    # Leaving the context sent the last event.
    logs = logs_of(memory_server, run.id)
    assert [line["data"]["n"] for line in logs] == list(range(1, 1001))  # one page
    view = read(memory_server, f"/v1/executions/{run.id}")
    assert (view["status"], view["next_seq"]) == ("succeeded", 1203)


async def test_a_batch_whose_answer_was_lost_is_resent_and_not_doubled(
    memory_server: ServerProcess,
) -> None:
    transport = LoseFirstAnswer(is_bulk)
    async with client_for(memory_server, transport=transport, backoff_s=0.01) as client:
        run = await client.create(team=TEAM, owner="alice", name="flaky network")
        other = await client.create(team=TEAM, owner="alice", name="in the same request")
        for number in range(3):
            run.log(f"line {number}")
        run.progress(50)
        other.log("shared")
        await client.flush()
        run.log("after the retry")
        await run.flush()

    first, second = (batches_of(request) for request in transport.sent[:2])
    assert first == second  # the same events with the same numbers
    assert sorted(batch["execution"] for batch in first) == sorted([run.id, other.id])
    [events] = [batch["events"] for batch in first if batch["execution"] == run.id]
    assert [event["seq"] for event in events] == [1, 2, 3, 4]
    assert [line["message"] for line in logs_of(memory_server, other.id)] == ["shared"]
    logs = logs_of(memory_server, run.id)
    assert [(line["seq"], line["message"]) for line in logs] == [
        (1, "line 0"), (2, "line 1"), (3, "line 2"), (5, "after the retry"),
    ]  # fmt: skip
    assert read(memory_server, f"/v1/executions/{run.id}")["progress"] == 50


async def test_executions_share_a_request_and_a_gap_in_one_spares_the_other(
    memory_server: ServerProcess,
) -> None:
    """The events of two executions travel in one request. The server lacks the first events
    of one (as if another producer's had been lost): it refuses that batch, stores the other's,
    and the refused execution is reported, numbered from where the server is, and resent."""
    transport = LoseFirstAnswer(is_bulk, lose=False)
    async with client_for(memory_server, transport=transport) as client:
        gappy = await client.create(team=TEAM, owner="alice", name="gap")
        fine = await client.create(team=TEAM, owner="alice", name="no gap")
        gappy.next_seq = 3  # the server expects 1
        gappy.log("three")
        gappy.log("four")
        fine.log("one")
        fine.progress(30)
        fine.log("two")
        with pytest.raises(ExecutionRejected) as rejected:
            await client.flush()
        assert rejected.value.execution == gappy.id
        assert rejected.value.status_code == 409
        assert rejected.value.problem["expected_seq"] == 1
        await fine.flush()  # nothing to report for the other one
        await gappy.flush()  # reported once; its events were resent as 1 and 2
        assert (gappy.next_seq, fine.next_seq) == (3, 4)

    first, second = (batches_of(request) for request in transport.sent)
    assert {batch["execution"]: [e["seq"] for e in batch["events"]] for batch in first} == {
        gappy.id: [3, 4], fine.id: [1, 2, 3],
    }  # fmt: skip
    [resent] = second
    assert resent["execution"] == gappy.id
    assert [(event["seq"], event["message"]) for event in resent["events"]] == [
        (1, "three"), (2, "four"),
    ]  # fmt: skip
    assert [(line["seq"], line["message"]) for line in logs_of(memory_server, gappy.id)] == [
        (1, "three"), (2, "four"),
    ]  # fmt: skip
    assert [(line["seq"], line["message"]) for line in logs_of(memory_server, fine.id)] == [
        (1, "one"), (3, "two"),
    ]  # fmt: skip
    assert read(memory_server, f"/v1/executions/{fine.id}")["progress"] == 30


async def test_a_create_whose_answer_was_lost_is_replayed(memory_server: ServerProcess) -> None:
    transport = LoseFirstAnswer(lambda request: request.url.path == "/v1/executions")
    async with client_for(memory_server, transport=transport, backoff_s=0.01) as client:
        run = await client.create(team=TEAM, owner="alice", name="created once")
    ids = {json.loads(request.content)["id"] for request in transport.sent}
    assert len(transport.sent) == 2
    assert ids == {run.id}
    listed = read(memory_server, "/v1/executions", team=TEAM, limit=200)["executions"]
    assert [e["id"] for e in listed].count(run.id) == 1
    assert not [e for e in listed if e["name"] == "created once" and e["id"] != run.id]


async def test_attach_resumes_numbering_and_create_with_the_same_id_replays(
    memory_server: ServerProcess,
) -> None:
    id = str(uuid.uuid4())
    async with client_for(memory_server) as client:
        run = await client.create(team=TEAM, owner="alice", name="resumed", id=id)
        run.log("first life")
        await run.flush()
    async with client_for(memory_server) as client:
        again = await client.create(team=TEAM, owner="alice", name="resumed", id=id)
        assert (again.id, again.next_seq) == (id, 2)
        resumed = await client.attach(id)
        assert resumed.next_seq == 2
        resumed.log("second life")
        resumed.start()
        resumed.succeed()
        await resumed.flush()
        with pytest.raises(RequestRejected) as refused:
            await client.create(team=TEAM, owner="bob", name="resumed", id=id)
        assert refused.value.status_code == 409
    assert [line["message"] for line in logs_of(memory_server, id)] == ["first life", "second life"]


async def test_a_refused_event_is_reported_and_only_it_is_dropped(
    memory_server: ServerProcess,
) -> None:
    """Progress after success is a caller's bug: `flush()` raises it; the log lines in the same
    batch, before and after it, are stored."""
    async with client_for(memory_server) as client:
        run = await client.create(team=TEAM, owner="alice", name="too late")
        run.start()
        run.log("before")
        run.succeed()
        run.progress(10)  # refused: the execution has succeeded
        run.log("after")
        with pytest.raises(ExecutionRejected) as rejected:
            await run.flush()
        assert rejected.value.status_code == 409
        assert rejected.value.problem["execution_status"] == "succeeded"
        assert rejected.value.events == [{"type": "progress", "progress": 10, "seq": 4}]
        run.log("later")
        await run.flush()  # the refusal was reported once
    view = read(memory_server, f"/v1/executions/{run.id}")
    assert (view["status"], view["progress"], view["next_seq"]) == ("succeeded", 100, 6)
    messages = [(line["seq"], line["message"]) for line in logs_of(memory_server, run.id)]
    assert messages == [(2, "before"), (4, "after"), (5, "later")]


async def test_a_bad_event_named_by_a_400_is_the_only_one_dropped(
    memory_server: ServerProcess,
) -> None:
    """The server caps step numbers (the client does not know the cap): the 400 names the
    event ("batches[i].events[1]...": it refuses the whole request), and its neighbours in the
    batch, and another execution's batch in the same request, are stored."""
    async with client_for(memory_server) as client:
        run = await client.create(team=TEAM, owner="alice", name="bad step")
        neighbour = await client.create(team=TEAM, owner="alice", name="next to a bad step")
        run.log("before")
        run.step_started(10**6, "too far")
        run.log("after")
        neighbour.log("unaffected")
        with pytest.raises(ExecutionRejected) as rejected:
            await client.flush()
        assert rejected.value.execution == run.id
        assert rejected.value.status_code == 400
        assert rejected.value.problem["field"].startswith("events[1]")
        assert [event["seq"] for event in rejected.value.events] == [2]
        await neighbour.flush()
    messages = [(line["seq"], line["message"]) for line in logs_of(memory_server, run.id)]
    assert messages == [(1, "before"), (2, "after")]
    assert [line["message"] for line in logs_of(memory_server, neighbour.id)] == ["unaffected"]


async def test_large_events_go_in_requests_under_the_size_limit(
    memory_server: ServerProcess,
) -> None:
    """300 events of ~16 KB: the server takes at most 1 MiB a request, so they go in several."""
    async with client_for(memory_server, batch_size=500) as client:
        run = await client.create(team=TEAM, owner="alice", name="big")
        for number in range(300):
            run.log("m" * 4000, data={"n": number, "blob": "x" * 12_000})
        await run.flush()
    logs = logs_of(memory_server, run.id)
    assert [line["data"]["n"] for line in logs] == list(range(300))


async def test_a_refusal_is_raised_by_the_next_emit(memory_server: ServerProcess) -> None:
    async with client_for(memory_server) as client:
        run = await client.create(team=TEAM, owner="alice", name="emit raises")
        run.cancelled()
        await run.flush()
        run.progress(5)
        with anyio.fail_after(5):
            while run.pending:  # noqa: ASYNC110 (waiting without flush(), which would raise)
                await anyio.sleep(0.01)
        with pytest.raises(ExecutionRejected):
            run.log("not buffered: the refusal comes first")
        run.log("buffered")
    assert [line["message"] for line in logs_of(memory_server, run.id)] == ["buffered"]


@pytest.fixture(params=["memory", "redis"])
def start_server(
    request: pytest.FixtureRequest, spawn: Callable[..., ServerProcess]
) -> Callable[..., ServerProcess]:
    """Start a server on each engine; Redis is a private redis-server (the command queue is a
    consumer group there)."""

    def start(env: dict[str, str] | None = None) -> ServerProcess:
        engine = {}
        if request.param == "redis":
            engine["SINAL_REDIS_URL"] = request.getfixturevalue("private_redis").url
        return spawn({**engine, **(env or {})})

    return start


async def test_commands_round_trip_with_ack(start_server: Callable[..., ServerProcess]) -> None:
    server = start_server()
    consumer = f"worker-{uuid.uuid4().hex[:8]}"
    async with client_for(server) as client, httpx.AsyncClient() as http:
        running = await client.create(team=TEAM, owner="alice", name="to cancel")
        running.start()
        failed = await client.create(team=TEAM, owner="alice", name="to retry")
        failed.fail(code="E", message="boom")
        await client.flush()

        base = server.url + "/v1/executions"
        cancel = await http.post(f"{base}/{running.id}/cancel", headers=MEMBER)
        assert cancel.status_code == 202, cancel.text
        retry = await http.post(f"{base}/{failed.id}/retry", headers=MEMBER)
        assert retry.status_code == 202, retry.text
        attempt = retry.json()["execution"]["id"]

        received = []
        async for command in client.commands(consumer, wait_s=5):
            received.append(command)
            if command.command == "cancel":
                running.cancelled()
            else:
                assert command.retry_execution is not None
                new = await client.attach(command.retry_execution)
                new.succeed()  # started first: queued → succeeded is no transition
            await command.ack()
            if len(received) == 2:
                break
        assert [(c.command, c.execution, c.by, c.deliveries) for c in received] == [
            ("cancel", running.id, "alice", 1),
            ("retry", failed.id, "alice", 1),
        ]
        assert received[0].id == cancel.json()["command"]["id"]
        assert received[1].retry_execution == attempt
        await client.flush()

        answer = await http.get(
            server.url + "/v1/commands",
            params={"consumer": consumer, "wait": 0},
            headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
        )
        assert answer.json() == {"commands": []}  # acknowledged: not delivered again
    assert read(server, f"/v1/executions/{running.id}")["status"] == "cancelled"
    assert read(server, f"/v1/executions/{attempt}")["status"] == "succeeded"


async def test_an_unacknowledged_command_comes_back(
    start_server: Callable[..., ServerProcess],
) -> None:
    server = start_server({"SINAL_COMMAND_ACK_TIMEOUT": "0.5"})
    async with client_for(server) as client, httpx.AsyncClient() as http:
        run = await client.create(team=TEAM, owner="alice", name="crashy consumer")
        run.start()
        await run.flush()
        response = await http.post(f"{server.url}/v1/executions/{run.id}/cancel", headers=MEMBER)
        assert response.status_code == 202, response.text

        first = await first_command(client, "crashed")
        assert first.deliveries == 1  # and then the consumer dies without acking
        again = await first_command(client, "survivor")
        assert (again.id, again.deliveries) == (first.id, 2)
        assert await client.ack(again) == 1


async def test_a_refused_token_ends_the_command_stream(memory_server: ServerProcess) -> None:
    async with ExecutionClient(memory_server.url, token("alice", teams=(TEAM,))) as client:
        with pytest.raises(RequestRejected) as refused:
            await first_command(client, "not-a-service")
    assert refused.value.status_code == 403


async def first_command(client: ExecutionClient, consumer: str) -> Command:
    async with contextlib.aclosing(client.commands(consumer, wait_s=5)) as commands:
        return await anext(commands)


# -- against a fake ingest endpoint ----------------------------------------------------------


class FakeIngest:
    """The ingest endpoints' sequencing, per execution, failing with `outage` statuses while
    they last; `bulk=False` plays a server from before the bulk endpoint (404 to it)."""

    def __init__(self, outage: list[int] | None = None, *, bulk: bool = True) -> None:
        self.next_seq: dict[str, int] = {}
        self.stored: list[dict[str, Any]] = []  # every execution's, as applied
        self.outage = outage or []
        self.bulk = bulk
        self.requests = 0
        self.sent: list[httpx.Request] = []  # ingest requests past the outage

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if request.url.path == "/v1/executions":
            body = json.loads(request.content)
            self.next_seq[body["id"]] = 1
            return httpx.Response(201, json={**body, "status": "queued", "next_seq": 1})
        if self.outage:
            return httpx.Response(self.outage.pop(0), headers={"Retry-After": "0"})
        self.sent.append(request)
        if not is_bulk(request):
            id = request.url.path.split("/")[3]
            return httpx.Response(200, json=self.apply(id, json.loads(request.content)["events"]))
        if not self.bulk:
            return httpx.Response(404, json={"status": 404, "detail": "Not Found"})
        results = [self.apply(batch["execution"], batch["events"]) for batch in batches_of(request)]
        return httpx.Response(200, json={"results": results})

    def apply(self, id: str, events: list[dict[str, Any]]) -> dict[str, Any]:
        for event in events:
            if event["seq"] == self.next_seq[id]:
                self.stored.append({**event, "execution": id})
                self.next_seq[id] += 1
        return {"execution": id, "applied": 0, "duplicates": 0, "next_seq": self.next_seq[id],
                "status": "x"}  # fmt: skip


def fake_client(fake: FakeIngest, **options: Any) -> ExecutionClient:
    options = {"backoff_s": 0.001, **options}
    return ExecutionClient("http://fake", "t", transport=httpx.MockTransport(fake), **options)


async def test_5xx_and_429_are_retried_with_the_same_events() -> None:
    fake = FakeIngest(outage=[503, 429, 500])
    async with fake_client(fake) as client:
        run = await client.create(team=TEAM, owner="alice", name="x")
        run.log("one")
        run.log("two")
        await run.flush()
    assert [event["message"] for event in fake.stored] == ["one", "two"]
    assert fake.requests == 1 + 4


async def test_a_long_outage_keeps_the_events_and_flush_says_so() -> None:
    fake = FakeIngest(outage=[503] * 3)
    async with fake_client(fake, max_retries=1) as client:
        run = await client.create(team=TEAM, owner="alice", name="x")
        run.log("kept")
        with pytest.raises(ServerUnavailable):
            await run.flush()
        assert run.pending == 1
        await run.flush()  # the server is back: the next flush delivers
    assert [event["message"] for event in fake.stored] == ["kept"]


async def test_a_full_buffer_refuses_more_until_flushed() -> None:
    fake = FakeIngest()
    async with fake_client(fake, batch_size=2, max_buffer=3) as client:
        run = await client.create(team=TEAM, owner="alice", name="x")
        for number in range(3):
            run.log(str(number))
        with pytest.raises(BufferFull):
            run.log("3")
        await run.flush()
        run.log("3")
    assert [event["message"] for event in fake.stored] == ["0", "1", "2", "3"]


@pytest.mark.parametrize(
    ("executions", "events", "blob"),
    [(1001, 1, 0), (11, 500, 0), (6, 60, 12_000)],
    ids=["executions", "events", "bytes"],
)
async def test_a_tick_over_the_limits_of_a_request_goes_in_several(
    executions: int, events: int, blob: int
) -> None:
    """At most 1000 executions, 5000 events and 4 MiB a request: one flush of more than that
    sends two requests, each execution in one of them, its events in order."""
    fake = FakeIngest()
    async with fake_client(fake, batch_size=500) as client:
        runs = [
            await client.create(team=TEAM, owner="alice", name=str(x)) for x in range(executions)
        ]
        for run in runs:
            for number in range(events):
                run.log(str(number), data={"blob": "x" * blob} if blob else None)
        await client.flush()
    assert len(fake.sent) == 2
    for request in fake.sent:
        batches = batches_of(request)
        assert len(batches) <= 1000
        assert sum(len(batch["events"]) for batch in batches) <= 5000
        assert len(request.content) <= 4 * 1024 * 1024
    ids = [batch["execution"] for request in fake.sent for batch in batches_of(request)]
    assert sorted(ids) == sorted(run.id for run in runs)
    for run in runs:
        stored = [event["message"] for event in fake.stored if event["execution"] == run.id]
        assert stored == [str(number) for number in range(events)]


async def test_a_server_without_the_bulk_endpoint_gets_a_request_per_execution() -> None:
    fake = FakeIngest(bulk=False)
    async with fake_client(fake) as client:
        first = await client.create(team=TEAM, owner="alice", name="x")
        second = await client.create(team=TEAM, owner="alice", name="y")
        first.log("one")
        second.log("two")
        await client.flush()
        first.log("three")
        await first.flush()
    paths = [request.url.path for request in fake.sent]
    assert paths[0] == "/v1/executions/events"  # answered 404: tried once only
    assert sorted(paths[1:3]) == sorted(f"/v1/executions/{r.id}/events" for r in (first, second))
    assert paths[3:] == [f"/v1/executions/{first.id}/events"]
    stored = {(event["execution"], event["seq"], event["message"]) for event in fake.stored}
    assert stored == {(first.id, 1, "one"), (second.id, 1, "two"), (first.id, 2, "three")}


async def test_bad_arguments_fail_at_the_call() -> None:
    async with fake_client(FakeIngest()) as client:
        run = await client.create(team=TEAM, owner="alice", name="x")
        with pytest.raises(ValueError, match="progress"):
            run.progress(101)
        with pytest.raises(ValueError, match="level"):
            run.log("x", level="loud")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="JSON-serialisable"):
            run.log("x", data={"when": datetime.now(UTC)})
        with pytest.raises(ValueError, match="bytes as JSON"):
            run.fail(code="E", message="x", details={"dump": "x" * 20_000})
        assert run.pending == 0


# -- sinal demo ------------------------------------------------------------------------------


class DemoProcess:
    """`python -m api demo` with its stdout read line by line in a thread."""

    def __init__(self, server: ServerProcess, *args: str) -> None:
        command = [sys.executable, "-m", "api", "demo", "--url", server.url, *args]
        env = {**os.environ, "SINAL_JWT_SECRET": SECRET}
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def until(self, pattern: str, within: float = 30.0) -> re.Match[str]:
        """The first line from now on matching `pattern`."""
        deadline = time.monotonic() + within
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}:\n" + self.text) from None
            if line is None:
                raise AssertionError(f"demo ended before {pattern!r}:\n" + self.text)
            self.output.append(line)
            found = re.search(pattern, line)
            if found:
                return found

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        self.reader.join(5)
        assert self.process.stdout is not None
        self.process.stdout.close()

    def wait(self, within: float = 60.0) -> int:
        try:
            code = self.process.wait(within)
        finally:
            self.process.kill()
        while (line := self.lines.get(timeout=5)) is not None:
            self.output.append(line)
        return code

    @property
    def text(self) -> str:
        return "\n".join(self.output)


@pytest.fixture
def demo(memory_server: ServerProcess) -> Iterator[Callable[..., DemoProcess]]:
    started: list[DemoProcess] = []

    def start(*args: str) -> DemoProcess:
        process = DemoProcess(memory_server, *args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()


def test_demo_once_runs_a_round_and_obeys_cancel_and_retry(
    memory_server: ServerProcess, demo: Callable[..., DemoProcess]
) -> None:
    """Four executions; the test cancels the first while it runs and retries the one that
    fails; the demo exits when all, the retry included, have finished."""
    team = f"demo{uuid.uuid4().hex[:6]}"
    member = bearer("alice", teams=(team,))
    process = demo("--once", "--speed", "4", "--team", team, "--owner", "alice")
    watch = process.until(r"watch: curl -N .*channel=execution:([0-9a-f-]{36})")
    first = watch.group(1)
    assert f"sinal token --sub alice --team {team}" in process.text
    answer = httpx.post(f"{memory_server.url}/v1/executions/{first}/cancel", headers=member)
    assert answer.status_code == 202, answer.text
    process.until(r"\] failed at step \d+: E_\w+")
    failed_id = process.until(r"retry: curl .*/v1/executions/([0-9a-f-]{36})/retry").group(1)
    answer = httpx.post(f"{memory_server.url}/v1/executions/{failed_id}/retry", headers=member)
    assert answer.status_code == 202, answer.text
    attempt = answer.json()["execution"]["id"]
    process.until(rf"attempt 2 \(retry of {failed_id}\): execution {attempt}")
    assert process.wait() == 0, process.text
    assert process.text.splitlines()[-1] == "done"

    executions = {
        e["id"]: e for e in read(memory_server, "/v1/executions", member, team=team)["executions"]
    }
    assert len(executions) == 5  # four, and the retry's attempt
    statuses = {id: e["status"] for id, e in executions.items()}
    assert statuses[first] == "cancelled"
    assert statuses[failed_id] == "failed"
    assert statuses[attempt] == "succeeded"
    assert set(statuses.values()) <= {"succeeded", "failed", "cancelled"}
    error = read(memory_server, f"/v1/executions/{failed_id}", member)["error"]
    assert error["code"].startswith("E_")
    assert error["details"]
    assert error["step"]
    for id in executions:
        logs = read(memory_server, f"/v1/executions/{id}/logs", member)["logs"]
        assert logs, f"no logs for {id}"
        assert logs[0]["message"] == "picked up"


def test_demo_stops_cleanly_on_sigterm(
    memory_server: ServerProcess, demo: Callable[..., DemoProcess]
) -> None:
    """Stopped mid-run, the demo reports its running executions cancelled before it exits."""
    team = f"demo{uuid.uuid4().hex[:6]}"
    member = bearer("alice", teams=(team,))
    process = demo("--team", team, "--owner", "alice", "--executions", "2")
    id = process.until(r"channel=execution:([0-9a-f-]{36})").group(1)
    process.until(r"step 1/")
    process.process.terminate()
    assert process.wait(30) == 128 + signal.SIGTERM, process.text
    assert "stopped" in process.text
    view = read(memory_server, f"/v1/executions/{id}", member)
    assert view["status"] == "cancelled"
    assert view["steps"][-1]["status"] == "skipped"  # not left "running"


# -- publishing ------------------------------------------------------------------------------


async def test_publish_and_publish_many_in_requests_of_at_most_1000(
    memory_server: ServerProcess,
) -> None:
    recorder = LoseFirstAnswer(lambda request: request.url.path == "/v1/publish", lose=False)
    channels = ["notifications:ann", "execution:e-9", "broadcast"]
    events = [
        {"channel": channels[n % 3], "type": "svc.tick", "data": {"n": n}} for n in range(2500)
    ]
    async with client_for(memory_server, transport=recorder) as client:
        one = await client.publish("notifications:ann", "svc.hello", {"hi": True})
        many = await client.publish_many(events)
        assert await client.publish_many([]) == []
    assert [len(json.loads(request.content)) for request in recorder.sent[1:]] == [1000, 1000, 500]
    assert json.loads(recorder.sent[0].content) == {
        "channel": "notifications:ann",
        "type": "svc.hello",
        "data": {"hi": True},
    }
    assert one.channel == "notifications:ann"
    assert one.ts.endswith("Z")
    assert [published.channel for published in many] == [event["channel"] for event in events]
    last: dict[str, Any] = {}
    for published in [one, *many]:
        [(channel, position)] = decode_cursor(published.cursor).items()
        assert channel == published.channel
        assert position.offset > last.get(channel, (0, 0))
        last[channel] = position.offset


async def test_a_refused_publish_names_the_event_and_keeps_what_went_out(
    memory_server: ServerProcess,
) -> None:
    events = [{"channel": "broadcast", "type": "svc.tick", "data": n} for n in range(1500)]
    events[1200] = {"channel": "broadcast", "type": "Not.A.Type"}
    async with client_for(memory_server) as client:
        with pytest.raises(PublishRejected) as raised:
            await client.publish_many(events)
        with pytest.raises(PublishRejected) as single:
            await client.publish("nowhere", "svc.tick")
        with pytest.raises(ValueError, match="not JSON"):
            await client.publish("broadcast", "svc.tick", {"when": object()})
    assert raised.value.status_code == 400
    assert raised.value.index == 1200
    assert raised.value.problem["field"] == "[200].type"
    assert len(raised.value.published) == 1000  # the first request went out whole
    assert (single.value.status_code, single.value.index) == (400, None)
    assert single.value.problem["field"] == "channel"


class FakePublish:
    """`POST /v1/publish` answering `answers` in turn (a status, or an exception raised)."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        answer = self.answers.pop(0) if self.answers else 201
        if isinstance(answer, Exception):
            raise answer
        if answer != 201:
            return httpx.Response(answer, json={"status": answer, "detail": "no"},
                                  headers={"Retry-After": "0"})  # fmt: skip
        return httpx.Response(201, json={"cursor": "c", "ts": "t"})


@pytest.mark.parametrize(
    ("answers", "requests"),
    [
        ([429, 429], 3),  # over the rate: nothing was published, retried
        ([httpx.ConnectError("refused")], 2),  # never sent, retried
    ],
)
async def test_a_publish_is_retried_only_where_nothing_was_published(
    answers: list[int | Exception], requests: int
) -> None:
    fake = FakePublish(*answers)
    transport = httpx.MockTransport(fake)
    async with ExecutionClient("http://fake", "t", transport=transport, backoff_s=0.001) as client:
        assert (await client.publish("broadcast", "svc.tick")).cursor == "c"
    assert fake.requests == requests


@pytest.mark.parametrize("answer", [503, 500, httpx.ReadError("reset after the request went")])
async def test_a_publish_that_may_have_gone_out_is_not_retried(answer: int | Exception) -> None:
    fake = FakePublish(answer)
    transport = httpx.MockTransport(fake)
    async with ExecutionClient("http://fake", "t", transport=transport, backoff_s=0.001) as client:
        with pytest.raises(ServerUnavailable, match="not retried"):
            await client.publish_many([{"channel": "broadcast", "type": "svc.tick"}])
    assert fake.requests == 1

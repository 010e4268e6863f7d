"""Locust users for Sinal: SSE subscribers that time publish→receive, and publishers.

    SINAL_JWT_SECRET=<the server's secret> uv run locust -f loadtests/locustfile.py \\
        --headless -u 50 -r 10 -t 20s --host http://127.0.0.1:8000

`SubscriberUser` holds `GET /v1/stream` open, parses the SSE frames and reports every event that
carries a send timestamp as a request named `publish→receive` (type `SSE`) whose response time is
the delivery latency; after `SINAL_LOCUST_STREAM_SECONDS` it reconnects with `Last-Event-ID`, so
resume is exercised too (a `reset` frame is reported as a failure: it means a gap).
`PublisherUser` posts to `/v1/publish` at `SINAL_LOCUST_PUBLISH_RATE` events/s per user.
`NotifierUser` creates notifications (`POST /v1/notifications`, as a service) for the subscribers'
users at `SINAL_LOCUST_CREATE_RATE` per second per user (`0`: as fast as the server answers).
Name classes on the command line to run only some (`... NotifierUser`).

Locust's per-request overhead caps it at a few thousand deliveries/s per core: it shows
behaviour under a realistic mix (latency percentiles, errors, reconnects), not Sinal's ceiling;
`python -m loadtests.fanout` measures that. Where one Locust process is the bottleneck, run it
distributed: `python -m loadtests.locust_distributed --workers K` (a master and K workers).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from typing import Any

from locust import FastHttpUser, HttpUser, constant, constant_throughput, events, task

from api.auth import mint_token

CHANNEL = os.environ.get("SINAL_LOCUST_CHANNEL", "broadcast")
PUBLISH_RATE = float(os.environ.get("SINAL_LOCUST_PUBLISH_RATE", "2"))
STREAM_SECONDS = float(os.environ.get("SINAL_LOCUST_STREAM_SECONDS", "15"))
CREATE_RATE = float(os.environ.get("SINAL_LOCUST_CREATE_RATE", "1"))
# Notifications go to the users `locust-0 … locust-<N-1>`, the subscribers' names.
CREATE_USERS = int(os.environ.get("SINAL_LOCUST_CREATE_USERS", "1000"))
EVENT_TYPE = "loadtest.locust"

_user_ids = itertools.count()


def secret() -> str:
    value = os.environ.get("SINAL_JWT_SECRET", "")
    if len(value) < 32:
        raise SystemExit("set SINAL_JWT_SECRET to the server's secret (at least 32 characters)")
    return value


SECRET = secret()


def bearer(sub: str, *roles: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(SECRET, sub, roles, ttl_s=3600)}"}


class SseFrame:
    """The fields of one SSE frame as lines arrive; `complete` at the blank line."""

    __slots__ = ("data", "event", "id")

    def __init__(self) -> None:
        self.id: str | None = None
        self.event = "message"
        self.data: list[str] = []

    def feed(self, line: str) -> None:
        if line.startswith(":"):
            return  # comment (heartbeat)
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self.data.append(value)
        elif name == "event":
            self.event = value
        elif name == "id":
            self.id = value


class SubscriberUser(HttpUser):
    weight = 9
    wait_time = constant(0)  # reconnect at once, as EventSource would after `retry:`

    def on_start(self) -> None:
        self.headers = {**bearer(f"locust-{next(_user_ids)}"), "Accept": "text/event-stream"}
        self.last_event_id: str | None = None

    @task
    def stream(self) -> None:
        headers = dict(self.headers)
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        # Read timeout above the 15 s heartbeat: a silent stream is a dead stream.
        # catch_response: the request is reported when the headers arrive (its response time is
        # the time to open the stream), not when the stream ends.
        with self.client.get(
            "/v1/stream",
            headers=headers,
            stream=True,
            name="/v1/stream",
            timeout=(5, 40),
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}: {response.text[:200]}")
                return
            response.success()
            deadline = time.monotonic() + STREAM_SECONDS
            frame = SseFrame()
            # chunk_size=None: hand over each chunk as it arrives instead of waiting for 512 B.
            for raw in response.iter_lines(chunk_size=None):
                line = raw.decode()
                if line:
                    frame.feed(line)
                    continue
                self.on_frame(frame)
                frame = SseFrame()
                if time.monotonic() > deadline:
                    break

    def on_frame(self, frame: SseFrame) -> None:
        if frame.id is not None:
            self.last_event_id = frame.id
        if not frame.data:
            return  # `retry:` only, or a heartbeat
        text = "\n".join(frame.data)
        if frame.event == "reset":
            self.report("stream reset", 0, len(text), RuntimeError(f"reset: {text}"))
            return
        if frame.event != EVENT_TYPE:
            return
        sent_ns = json.loads(text)["data"].get("t")
        if isinstance(sent_ns, int):
            self.report("publish→receive", (time.time_ns() - sent_ns) / 1e6, len(text))

    def report(self, name: str, ms: float, length: int, exception: Exception | None = None) -> None:
        events.request.fire(  # type: ignore[no-untyped-call]
            request_type="SSE",
            name=name,
            response_time=ms,
            response_length=length,
            exception=exception,
            context={},
        )


class PublisherUser(HttpUser):
    weight = 1
    wait_time = constant_throughput(PUBLISH_RATE)

    def on_start(self) -> None:
        self.sub = f"locust-publisher-{next(_user_ids)}"
        self.headers = bearer(self.sub, "service")

    @task
    def publish(self) -> None:
        body: dict[str, Any] = {
            "channel": CHANNEL,
            "type": EVENT_TYPE,
            # Same machine, same clock: subscribers subtract this from their receive time.
            "data": {"t": time.time_ns(), "by": self.sub},
        }
        self.client.post("/v1/publish", json=body, headers=self.headers, name="/v1/publish")


class NotifierUser(FastHttpUser):
    """A service creating notifications. FastHttpUser (geventhttpclient) costs the generator a
    fraction of what `requests` does per call: this user is the one driven to high rates."""

    weight = 1
    wait_time = constant_throughput(CREATE_RATE) if CREATE_RATE > 0 else constant(0)

    def on_start(self) -> None:
        self.sub = f"locust-notifier-{next(_user_ids)}"
        self.headers = bearer(self.sub, "service")
        self.random = random.Random(self.sub)

    @task
    def create(self) -> None:
        body = {
            "user": f"locust-{self.random.randrange(CREATE_USERS)}",
            "type": "loadtest.notification",
            "title": "Locust notification",
            "data": {"t": time.time_ns(), "by": self.sub},
        }
        self.client.post(
            "/v1/notifications", json=body, headers=self.headers, name="/v1/notifications"
        )

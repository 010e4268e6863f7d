"""The nodes sharing one engine, and questions asked of all of them, over the control bus.

Every process is a node. It announces itself on the engine's control bus (`Engine.control_send`)
with a heartbeat every `heartbeat_s`; every node keeps the table of the nodes it heard, and a node
not heard for `GONE_AFTER` heartbeats is gone (a process killed with SIGKILL says nothing; its
absence is what tells). A starting node says hello, and every node answers with its heartbeat at
once, so the table is complete within a round trip instead of an interval. Nothing is stored:
the bus is live only, and so is the table. A heartbeat may also carry the node's latest figures
(`figures`, bytes the layer above encodes and reads: the in-app alerts' metrics snapshot), so that
one node can see the whole cluster's without asking.

A *survey* asks every node (or one) a question and gathers the answers until each node that was
known when it was asked has answered, or the deadline passes. A node that did not answer in time
is reported (`Survey.unreachable`), never silently left out. Questions and answers are small JSON
objects; what they mean is the layer above's (`api/cluster.py`), which registers one answering
function per kind of question with `answer`.

Message shapes on the bus (JSON):
- `{"t": "beat", "node": Info, "w": watching?, "m": figures?}`, `{"t": "hello", "node": Info}`,
  `{"t": "bye", "id": …}`;
- `{"t": "ask", "id": survey id, "from": node, "q": question}`, answered to `from` with
  `{"t": "ans", "id": survey id, "from": node, "a": answer}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from streams.engine import Engine
from streams.errors import Unavailable
from streams.tasks import cancel_and_wait, finish_or_cancel

log = logging.getLogger("sinal.cluster")

# A node not heard for this many heartbeat intervals is gone.
GONE_AFTER = 3
# How long `stop` waits for a heartbeat or an answer in hand to finish.
STOP_WAIT_S = 2.0

Answerer = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class Info(msgspec.Struct, frozen=True):
    """What a node says of itself in every heartbeat."""

    id: str
    name: str
    pid: int
    version: str
    started_at: float


class _Message(msgspec.Struct, omit_defaults=True):
    t: str
    node: Info | None = None
    id: str | None = None
    frm: str | None = msgspec.field(default=None, name="from")
    q: dict[str, Any] | None = None
    a: dict[str, Any] | None = None
    w: bool = False  # in a heartbeat: an administrator watches live counters on this node
    # In a heartbeat: the node's figures (`Cluster.figures`); empty when it sent none.
    # (msgspec reads a Raw alone, not in a union with None.)
    m: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_Message).decode


@dataclass(slots=True)
class Seen:
    info: Info
    last_seen: float  # wall clock, seconds since the epoch
    watching: bool = False
    figures: bytes | None = None  # from its last heartbeat; None for this node


@dataclass(slots=True)
class Survey:
    """The answers to one question, by node id, and the nodes that did not answer in time."""

    answers: dict[str, dict[str, Any]] = field(default_factory=dict)
    unreachable: list[str] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        return bool(self.unreachable)


class _Pending:
    __slots__ = ("answers", "complete", "expected")

    def __init__(self, expected: set[str]) -> None:
        self.expected = expected
        self.answers: dict[str, dict[str, Any]] = {}
        self.complete = asyncio.Event()

    def add(self, node: str, answer: dict[str, Any]) -> None:
        self.answers[node] = answer
        if self.expected <= self.answers.keys():
            self.complete.set()


def new_node_id() -> str:
    return secrets.token_hex(6)


class Cluster:
    """This node's view of the cluster; owned by the app's lifespan (`start`, `stop`)."""

    def __init__(
        self,
        engine: Engine,
        info: Info,
        *,
        heartbeat_s: float = 2.0,
        survey_timeout_s: float = 1.0,
    ) -> None:
        self.engine = engine
        self.info = info
        self.heartbeat_s = heartbeat_s
        self.survey_timeout_s = survey_timeout_s
        self._nodes: dict[str, Seen] = {}
        self._answerers: dict[str, Answerer] = {}
        self._pending: dict[str, _Pending] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._beat: asyncio.Task[None] | None = None
        self._started = False
        self._stopping = asyncio.Event()
        # Whether someone on this node watches the live counters; said in every heartbeat, so
        # that every node publishes its counters only while someone, anywhere, watches.
        self.watching: Callable[[], bool] = lambda: False
        # This node's figures for its heartbeats (JSON), or None to send none.
        self.figures: Callable[[], bytes | None] = lambda: None
        # Nodes that said goodbye: they stopped, they did not fail (`take_departed`).
        self._departed: set[str] = set()

    @property
    def node_id(self) -> str:
        return self.info.id

    def answer(self, kind: str, answerer: Answerer) -> None:
        """Answer questions `{"kind": kind, ...}` with `answerer` (on this node)."""
        self._answerers[kind] = answerer

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on the bus and say hello; call after the engine is connected."""
        self._stopping = asyncio.Event()
        self.engine.on_control(self.node_id, self._received)
        self._nodes[self.node_id] = Seen(self.info, time.time())
        self._started = True
        with contextlib.suppress(Unavailable):
            await self._send({"t": "hello", "node": self.info})
        self._beat = asyncio.create_task(self._beat_forever(), name="sinal-cluster-heartbeat")

    async def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        # Let the heartbeat and the answers in hand finish rather than cancel them midway: a
        # command cut off mid-flight can leave its connection out of the pool, never closed.
        if self._beat is not None:
            await finish_or_cancel(self._beat, self._stopping, STOP_WAIT_S)
            self._beat = None
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=STOP_WAIT_S)
        for task in list(self._tasks):
            await cancel_and_wait(task)
        with contextlib.suppress(Unavailable):
            await self._send({"t": "bye", "id": self.node_id})

    async def _beat_forever(self) -> None:
        while not self._stopping.is_set():
            watching = self.watching()
            self._nodes[self.node_id] = Seen(self.info, time.time(), watching)
            try:
                await self._send(self._beat_message(watching))
            except Unavailable as error:
                log.debug("heartbeat not sent: %s", error.detail)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.heartbeat_s)

    def _beat_message(self, watching: bool) -> dict[str, Any]:
        message: dict[str, Any] = {"t": "beat", "node": self.info, "w": watching}
        figures = self.figures()
        if figures is not None:
            message["m"] = msgspec.Raw(figures)
        return message

    # -- the table of nodes ----------------------------------------------------------------

    def nodes(self) -> list[Seen]:
        """The nodes heard within the last `GONE_AFTER` heartbeats, this one first."""
        horizon = time.time() - GONE_AFTER * self.heartbeat_s
        for node_id in [n for n, seen in self._nodes.items() if seen.last_seen < horizon]:
            if node_id != self.node_id:
                del self._nodes[node_id]
        me = self._nodes[self.node_id] = Seen(self.info, time.time(), self.watching())
        return [me, *(seen for n, seen in self._nodes.items() if n != self.node_id)]

    def take_departed(self) -> set[str]:
        """The ids of the nodes that said goodbye since the last call."""
        departed, self._departed = self._departed, set()
        return departed

    def anyone_watching(self) -> bool:
        """Whether a node (this one included) said in its last heartbeat that someone watches
        its live counters."""
        return any(seen.watching for seen in self.nodes())

    # -- surveys -----------------------------------------------------------------------------

    async def survey(
        self, question: dict[str, Any], to: str | None = None, timeout_s: float | None = None
    ) -> Survey:
        """Ask every node (or node `to`) `question`; gather answers until all the expected
        nodes have answered or `timeout_s` (the survey timeout) passes."""
        expected = {seen.info.id for seen in self.nodes()} if to is None else {to}
        survey_id = secrets.token_hex(8)
        pending = self._pending[survey_id] = _Pending(expected)
        try:
            await self._send({"t": "ask", "id": survey_id, "from": self.node_id, "q": question}, to)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s or self.survey_timeout_s):
                    await pending.complete.wait()
        finally:
            del self._pending[survey_id]
        unreachable = sorted(expected - pending.answers.keys())
        return Survey(dict(pending.answers), unreachable)

    # -- the bus -----------------------------------------------------------------------------

    async def _send(self, message: dict[str, Any], to: str | None = None) -> None:
        await self.engine.control_send(_encode(message), to)

    def _received(self, raw: bytes) -> None:
        if not self._started:
            return  # stopping: nothing more is answered, and no task is spawned after `stop`
        try:
            message = _decode(raw)
        except msgspec.DecodeError:
            log.warning("ignored a control message that is not Sinal's")
            return
        match message.t:
            case "beat" | "hello" if message.node is not None:
                node = message.node
                self._nodes[node.id] = Seen(node, time.time(), message.w, bytes(message.m) or None)
                if message.t == "hello" and node.id != self.node_id:
                    self._spawn(self._send(self._beat_message(self.watching()), node.id))
            case "bye" if message.id is not None and message.id != self.node_id:
                self._nodes.pop(message.id, None)
                self._departed.add(message.id)
            case "ask" if message.q is not None and message.id and message.frm:
                self._spawn(self._answer(message.id, message.frm, message.q))
            case "ans" if message.a is not None and message.id and message.frm:
                pending = self._pending.get(message.id)
                if pending is not None:
                    pending.add(message.frm, message.a)

    async def _answer(self, survey_id: str, asker: str, question: dict[str, Any]) -> None:
        answerer = self._answerers.get(str(question.get("kind")))
        if answerer is None:
            answer: dict[str, Any] = {"error": f"unknown question {question.get('kind')!r}"}
        else:
            try:
                answer = await answerer(question)
            except Exception as error:
                log.exception("answering a %s survey failed", question.get("kind"))
                answer = {"error": str(error) or error.__class__.__name__}
        reply = {"t": "ans", "id": survey_id, "from": self.node_id, "a": answer}
        try:
            await self._send(reply, asker)
        except Unavailable as error:
            log.warning("an answer to %s was not sent: %s", asker, error.detail)

    def _spawn(self, work: Awaitable[None]) -> None:
        # Owned here, cancelled by `stop`: the bus handler must not block, so what awaits runs
        # in a task of its own.
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

"""The control plane of one node: what it answers when asked, and what it keeps in step.

Every process answers the admin API's questions about itself over the control bus
(`streams/cluster.py`): its connections, filtered and paged; orders to disconnect a connection
or a user (applying a revocation first); new runtime limits. The node that received the HTTP
request asks every node, itself included, and merges (api/admin.py).

What must survive a node missing a message on the bus (it was restarting, or its bus
connection was down) is stored in the database: the runtime limits and the revocations are
read at start-up and again every `SYNC_EVERY_S`, so a node that missed an order catches up
within that time. Counting that is not worth a database write each time (revoked tokens
refused, connections cut by a limit) is gathered here and written to the audit log once a
minute, one row per user.

While an administrator watches the live counters anywhere (the `admin` channel; the heartbeats
say so), every node publishes its counters there once a second, with the newest point of its
series (`api/series.py`): the loop is paced by the series, so each point goes out once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from api.auth import Authenticator
from api.series import Series, SeriesPoint
from db import audit, outbox, revocations
from db import limits as stored_limits
from db.engine import DATABASE_ERRORS, Database
from streams.access import Principal
from streams.admission import Admission, Limits, stored
from streams.channels import ADMIN
from streams.cluster import Cluster
from streams.disconnect import DisconnectReason
from streams.engine import Engine
from streams.errors import Unavailable
from streams.hub import Hub
from streams.registry import TRANSPORTS, Filter, Registry, Transport, iso
from streams.sockets import ActionSockets
from streams.tasks import cancel_and_wait

log = logging.getLogger("sinal.control")

STATS_EVERY_S = 1.0
SYNC_EVERY_S = 10.0
AUDIT_EVERY_S = 60.0
SYSTEM = "sinal"  # the actor of what Sinal records on its own
# What the loop waits out: the engine or the database being down.
TRANSIENT: tuple[type[Exception], ...] = (Unavailable, *DATABASE_ERRORS)

_encode = msgspec.json.Encoder().encode


class NodeStats(msgspec.Struct):
    """`admin.stats`: one node's live counters, once a second per node while an administrator
    watches the `admin` channel. The counts are since the node started: a rate is the
    difference of two reports over their `at`."""

    node: Annotated[str, Meta(description="The node's id (`GET /v1/admin/nodes`).")]
    name: Annotated[str, Meta(description="The node's name, for people.")]
    at: Annotated[
        str,
        Meta(
            description="When the counters were read, ISO 8601 UTC with milliseconds.",
            extra_json_schema={"format": "date-time"},
        ),
    ]
    connections: Annotated[
        dict[str, int],
        Meta(description="Open connections by transport: `sse`, `longpoll`, `ws`."),
    ]
    events_in: Annotated[
        int,
        Meta(description="Events that reached this node's fan-out, each counted once."),
    ]
    deliveries: Annotated[
        int, Meta(description="Events handed to connections, one per connection.")
    ]
    resets: Annotated[
        int,
        Meta(
            description="Resets the engine announced to open streams, after catching up from "
            "a lost Redis connection."
        ),
    ]
    slow_consumer_closes: Annotated[
        int, Meta(description="Streams cut because their buffer filled.")
    ]
    outbox_pending: Annotated[
        int, Meta(description="Events committed to the database but not yet published.")
    ]
    point: Annotated[
        SeriesPoint | None,
        Meta(
            description="The newest point of this node's series, one second's figures as an "
            "array in the order of `GET /v1/admin/series`'s `fields`; null before the first."
        ),
    ] = None


class Control:
    """Owned by the app's lifespan: `start` once the engine is connected, `stop` before it
    closes."""

    def __init__(
        self,
        *,
        engine: Engine,
        hub: Hub,
        database: Database,
        cluster: Cluster,
        registry: Registry,
        auth: Authenticator,
        admission: Admission,
        actions: ActionSockets,
        defaults: Limits,
        series: Series,
    ) -> None:
        self.engine = engine
        self.hub = hub
        self.database = database
        self.cluster = cluster
        self.registry = registry
        self.auth = auth
        self.admission = admission
        self.actions = actions
        self.defaults = defaults
        self.series = series
        # Connections cut by a runtime limit since the last audit write, by user.
        self.cut: Counter[str] = Counter()
        self._task: asyncio.Task[None] | None = None
        cluster.watching = lambda: hub.watched(ADMIN)
        cluster.answer("node", self._answer_node)
        cluster.answer("connections", self._answer_connections)
        cluster.answer("disconnect", self._answer_disconnect)
        cluster.answer("limits", self._answer_limits)
        cluster.answer("series", self._answer_series)

    @property
    def node_id(self) -> str:
        return self.cluster.node_id

    async def start(self) -> None:
        try:
            await self.sync()
        except DATABASE_ERRORS as error:
            log.warning("limits and revocations not read, will retry: %s", error)
        await self.cluster.start()
        self._task = asyncio.create_task(self._run(), name="sinal-control")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        with contextlib.suppress(*DATABASE_ERRORS):
            await self.write_counts()
        await self.cluster.stop()

    # -- kept in step with the database ------------------------------------------------------

    async def sync(self) -> None:
        """Read the runtime limits and the revocations in force; end the connections that a
        revocation this node had not heard of covers (it missed the order on the bus)."""
        self.apply(stored(await stored_limits.load(self.database), self.defaults))
        active = await revocations.active(self.database)
        known, self.auth.revoked = (
            self.auth.revoked,
            {user: before.timestamp() for user, before in active.items()},
        )
        for user, before in self.auth.revoked.items():
            if known.get(user) != before:
                self.end_revoked(user, before)

    def end_revoked(self, user: str, before: float) -> int:
        """End `user`'s connections opened with a token issued before `before`."""
        ended = 0
        for connection in self.registry.of_user(user):
            issued = connection.principal.issued_at
            if issued is None or issued < before:
                connection.handle.disconnect("revoked")
                ended += 1
        return ended

    def apply(self, limits: Limits) -> None:
        self.admission.apply(limits)
        self.actions.rate = limits.actions_rate
        self.actions.burst = float(limits.actions_burst)

    async def write_counts(self) -> None:
        """One audit row per user for the revoked tokens refused and the connections cut by a
        limit since the last call."""
        refused, self.auth.refused = self.auth.refused, Counter()
        cut, self.cut = self.cut, Counter()
        rows = [("token.revoked", user, count) for user, count in refused.items()]
        rows += [("limit.cut", user, count) for user, count in cut.items()]
        if not rows:
            return
        for action, user, count in rows:
            await audit.record(
                self.database,
                actor=SYSTEM,
                action=action,
                target=f"user:{user}",
                params={},
                result={"count": count},
                node=self.node_id,
            )

    async def _run(self) -> None:
        last_sync = last_audit = time.monotonic()
        while True:
            # Right after the series' next point (a second), so each point is published once;
            # a little longer when the sampler is not keeping time.
            await self.series.next_point(STATS_EVERY_S * 1.5)
            now = time.monotonic()
            try:
                if self.cluster.anyone_watching():
                    await self.publish_stats()
                if now - last_sync >= SYNC_EVERY_S:
                    last_sync = now
                    await self.sync()
                if now - last_audit >= AUDIT_EVERY_S:
                    last_audit = now
                    await self.write_counts()
            except TRANSIENT as error:
                log.warning("control plane step failed, will retry: %s", error)

    # -- live counters -----------------------------------------------------------------------

    async def stats(self) -> NodeStats:
        hub = self.hub.stats
        point = self.series.latest  # the one just made, however long the outbox takes to count
        return NodeStats(
            node=self.node_id,
            name=self.cluster.info.name,
            at=iso(time.time()),
            connections=self.registry.counts(),
            events_in=hub.events_in,
            deliveries=hub.deliveries,
            resets=hub.resets,
            slow_consumer_closes=hub.slow_consumer_closes,
            outbox_pending=await outbox.pending(self.database),
            point=point,
        )

    async def publish_stats(self) -> None:
        await self.engine.publish(ADMIN, "admin.stats", _encode(await self.stats()))

    # -- answers to surveys ------------------------------------------------------------------

    async def _answer_node(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"connections": self.registry.counts()}

    async def _answer_series(self, _: dict[str, Any]) -> dict[str, Any]:
        return {"points": list(self.series.points)}

    async def _answer_connections(self, question: dict[str, Any]) -> dict[str, Any]:
        after = question.get("after")
        transport = question.get("transport")
        where = Filter(
            user=question.get("user"),
            prefix=question.get("prefix"),
            channel=question.get("channel"),
            transport=transport if transport in TRANSPORTS else None,
            after=(after[0], after[1]) if after else None,
        )
        found, more = self.registry.find(where, int(question.get("limit", 100)))
        return {"connections": [c.view() for c in found], "more": more}

    async def _answer_disconnect(self, question: dict[str, Any]) -> dict[str, Any]:
        reason: DisconnectReason = "revoked" if question.get("reason") == "revoked" else "kicked"
        user = question.get("user")
        before = question.get("revoked_before")
        if question.get("id") is not None:
            return {"closed": int(self.registry.disconnect(question["id"], reason))}
        if user is None:
            return {"closed": 0}
        if before is None:
            return {"closed": self.registry.disconnect_user(user, reason)}
        # Refused before the connections end: a client that reconnects at once must be.
        before = max(float(before), self.auth.revoked.get(user, 0.0))
        self.auth.revoked[user] = before
        return {"closed": self.end_revoked(user, before)}

    async def _answer_limits(self, question: dict[str, Any]) -> dict[str, Any]:
        limits = stored(question.get("limits"), self.defaults)
        self.apply(limits)
        return {"limits": limits.view()}

    # -- limits at connection time -------------------------------------------------------------

    def over_limit(self, principal: Principal, transport: Transport) -> None:
        """Note a connection cut by a runtime limit, for the audit log."""
        self.cut[principal.sub] += 1
        log.info("a %s connection of %s was cut by a limit", transport, principal.sub)

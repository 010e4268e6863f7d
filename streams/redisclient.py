"""Redis clients built from `SINAL_REDIS_URL`: the one place that reads the URL.

- `redis://[user:password@]host:port/db` (`rediss://` for TLS): a standalone Redis.
- `redis+cluster://[user:password@]host:port[,host:port…]` (`rediss+cluster://`): a Redis
  Cluster; any reachable node of the list bootstraps the slot map, and redis-py's cluster
  client follows the cluster from there. A cluster has only database 0: a path, if given,
  must be `/0`.

Everything in Sinal that talks to Redis gets its client from `client` (commands) or
`node_client` (a connection to one given node, for sharded pub/sub), so that another kind of
deployment is added here once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster

Client = aioredis.Redis | RedisCluster

STANDALONE_SCHEMES = ("redis", "rediss")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What a Redis URL designates."""

    url: str
    kind: Literal["standalone", "cluster"]
    nodes: tuple[tuple[str, int], ...]  # the standalone server, or the cluster's seed nodes
    db: int
    username: str | None
    password: str | None
    ssl: bool

    @property
    def cluster(self) -> bool:
        return self.kind == "cluster"


def parse(url: str) -> RedisTarget:
    """The target of `url`; ValueError saying what is expected when it is not one."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in STANDALONE_SCHEMES:
        if not parts.hostname:
            raise ValueError("expected redis://host:port/db")
        try:
            port = parts.port or 6379
            db = int(parts.path.strip("/") or 0)
        except ValueError:
            raise ValueError("expected redis://host:port/db (numeric port and db)") from None
        return RedisTarget(
            url, "standalone", ((parts.hostname, port),), db,
            _unquoted(parts.username), _unquoted(parts.password), scheme == "rediss",
        )  # fmt: skip
    if scheme in CLUSTER_SCHEMES:
        credentials, _, hosts = parts.netloc.rpartition("@")
        username, password = None, None
        if credentials:
            user, has_password, secret = credentials.partition(":")
            username = unquote(user) or None
            password = unquote(secret) if has_password else None
        nodes = tuple(_node(text) for text in hosts.split(",")) if hosts else ()
        if not nodes:
            raise ValueError("expected redis+cluster://host:port[,host:port...]")
        if parts.path.strip("/") not in ("", "0") or parts.query:
            raise ValueError("a Redis Cluster has only database 0: drop the path")
        return RedisTarget(
            url, "cluster", nodes, 0, username, password, scheme.startswith("rediss")
        )
    raise ValueError("expected redis://host:port/db or redis+cluster://host:port[,host:port...]")


def _node(text: str) -> tuple[str, int]:
    host, separator, port = text.strip().rpartition(":")
    if not separator or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port in the cluster's node list, not {text!r}")
    return host.strip("[]"), int(port)


def _unquoted(text: str | None) -> str | None:
    return None if text is None else unquote(text)


def client(target: RedisTarget, **options: Any) -> Client:
    """A command client: a pool for a standalone Redis, a cluster client for a cluster.

    `options` are redis-py connection options (timeouts, `max_connections`, which a cluster
    client applies per node).
    """
    if target.cluster:
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            username=target.username,
            password=target.password,
            ssl=target.ssl,
            **options,
        )
    return aioredis.Redis.from_url(target.url, **options)


def node_client(target: RedisTarget, host: str, port: int, **options: Any) -> aioredis.Redis:
    """A client of one node of the target (a cluster's node, for sharded pub/sub), with the
    target's credentials."""
    return aioredis.Redis(
        host=host,
        port=port,
        db=target.db,
        username=target.username,
        password=target.password,
        ssl=target.ssl,
        **options,
    )

"""Redis clients built from `SINAL_REDIS_URL`: the one place that reads the URL.

- `redis://[user:password@]host:port/db` (`rediss://` for TLS): a standalone Redis.
- `redis+cluster://[user:password@]host:port[,host:port…]` (`rediss+cluster://`): a Redis
  Cluster; any reachable node of the list bootstraps the slot map, and redis-py's cluster
  client follows the cluster from there. A cluster has only database 0: a path, if given,
  must be `/0`.
- `redis+sentinel://[[user]:password@]host[:port][,host[:port]…]/service[?db=N]`: the primary
  that the Sentinels (port 26379 when omitted) name for `service`, asked again each time a
  connection is opened, so that every connection follows a failover. The user and password
  are the primary's; `sentinel_username` and `sentinel_password` in the query, the
  Sentinels' own, when they require authentication.

Everything in Sinal that talks to Redis gets its client from `client` (commands) or
`node_client` (a connection to one given node, for sharded pub/sub), so that another kind of
deployment is added here once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

Client = aioredis.Redis | RedisCluster

STANDALONE_SCHEMES = ("redis", "rediss")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379
SENTINEL_OPTIONS = ("db", "sentinel_username", "sentinel_password")
# The Sentinels answer where the primary is: a dead one must not hold a connection for long.
SENTINEL_TIMEOUT_S = 2.0
EXPECTED = (
    "expected redis://host:port/db, redis+cluster://host:port[,host:port...] or "
    "redis+sentinel://host:port[,host:port...]/service_name[?db=N]"
)


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What a Redis URL designates."""

    url: str
    kind: Literal["standalone", "cluster", "sentinel"]
    # The standalone server, the cluster's seed nodes, or the Sentinels.
    nodes: tuple[tuple[str, int], ...]
    db: int
    username: str | None
    password: str | None
    ssl: bool
    # Sentinel only: the primary's service name, and the Sentinels' own credentials.
    service: str = ""
    sentinel_username: str | None = None
    sentinel_password: str | None = None

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
        username, password, hosts = _userinfo(parts.netloc)
        nodes = _nodes(hosts, None, "the cluster's node list") if hosts else ()
        if not nodes:
            raise ValueError("expected redis+cluster://host:port[,host:port...]")
        if parts.path.strip("/") not in ("", "0") or parts.query:
            raise ValueError("a Redis Cluster has only database 0: drop the path")
        return RedisTarget(
            url, "cluster", nodes, 0, username, password, scheme.startswith("rediss")
        )
    if scheme == SENTINEL_SCHEME:
        return _sentinel(url)
    raise ValueError(EXPECTED)


def _sentinel(url: str) -> RedisTarget:
    parts = urlsplit(url)
    username, password, hosts = _userinfo(parts.netloc)
    if not hosts:
        raise ValueError("expected redis+sentinel://host:port[,host:port...]/service_name")
    nodes = _nodes(hosts, SENTINEL_PORT, "the Sentinels' list")
    service = unquote(parts.path.removeprefix("/"))
    if not service or "/" in service:
        raise ValueError("name the primary's service after the addresses: .../service_name")
    query = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    unknown = set(query) - set(SENTINEL_OPTIONS)
    if unknown:
        raise ValueError(
            f"unknown option(s) {sorted(unknown)}; known: {', '.join(SENTINEL_OPTIONS)}"
        )
    db = query.get("db", "0")
    if not db.isdigit():
        raise ValueError(f"db must be a whole number, not {db!r}")
    return RedisTarget(
        url, "sentinel", nodes, int(db), username, password, False,
        service, query.get("sentinel_username"), query.get("sentinel_password"),
    )  # fmt: skip


def _userinfo(netloc: str) -> tuple[str | None, str | None, str]:
    """The user, the password and the host list of a URL naming several hosts (which
    `urlsplit` cannot take apart: its port is the last host's, or an error)."""
    credentials, _, hosts = netloc.rpartition("@")
    user, has_password, secret = credentials.partition(":")
    return unquote(user) or None, unquote(secret) if has_password else None, hosts


def _nodes(hosts: str, default_port: int | None, what: str) -> tuple[tuple[str, int], ...]:
    return tuple(_node(text, default_port, what) for text in hosts.split(","))


def _node(text: str, default_port: int | None, what: str) -> tuple[str, int]:
    """`host:port` (`[IPv6]:port`), or a host alone when there is a `default_port`."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        separator, port = rest[:1], rest[1:]
        if rest and separator != ":":
            host = ""  # something after the brackets that is not a port
    elif text.count(":") == 1 or default_port is None:
        host, separator, port = text.rpartition(":")
    else:  # a host alone
        host, separator, port = text, "", ""
    if not separator and default_port is not None:
        separator, port = ":", str(default_port)
    if not separator or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port in {what}, not {text!r}")
    return host.strip("[]"), int(port)


def _unquoted(text: str | None) -> str | None:
    return None if text is None else unquote(text)


def client(target: RedisTarget, **options: Any) -> Client:
    """A command client: a pool for a standalone Redis or a Sentinel-managed primary, a
    cluster client for a cluster.

    `options` are redis-py connection options (timeouts, `max_connections`, which a cluster
    client applies per node).
    """
    if target.kind == "cluster":
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            username=target.username,
            password=target.password,
            ssl=target.ssl,
            **options,
        )
    if target.kind == "sentinel":
        return _sentinel_client(target, **options)
    return aioredis.Redis.from_url(target.url, **options)


class _SentinelRedis(aioredis.Redis):
    """The primary's client, which closes the connections to its Sentinels with its own."""

    sentinels: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            if self.sentinels is not None:
                await self.sentinels.aclose()


def _sentinel_client(target: RedisTarget, **options: Any) -> aioredis.Redis:
    """The primary's client: each connection it opens asks the Sentinels, in turn, where the
    primary is, so that after a failover new connections reach the new primary (the old
    primary's connections fail, and their users reconnect)."""
    sentinels = Sentinel(  # type: ignore[no-untyped-call]
        list(target.nodes),
        sentinel_kwargs={
            "socket_timeout": SENTINEL_TIMEOUT_S,
            "socket_connect_timeout": SENTINEL_TIMEOUT_S,
            "username": target.sentinel_username,
            "password": target.sentinel_password,
        },
    )
    primary: _SentinelRedis = sentinels.master_for(
        target.service,
        redis_class=_SentinelRedis,
        db=target.db,
        username=target.username,
        password=target.password,
        **options,
    )
    primary.sentinels = sentinels
    return primary


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

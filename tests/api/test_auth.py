"""Authentication and channel authorization, against a real server process.

Where the engine cannot matter (credentials are checked before any engine call), the tests share
one memory-engine server; what involves a stream runs on both engines.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import anyio
import httpx
import jwt
import pytest

from tests.support import (
    ADMIN,
    SECRET,
    SERVICE,
    ServerProcess,
    assert_problem,
    bearer,
    open_stream,
    publish,
    stream_response,
    stream_until,
    token,
)

pytestmark = pytest.mark.anyio

ALICE = bearer("alice")


def signed(claims: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    """A JWT with exactly these claims (plus a future `exp` unless given)."""
    return jwt.encode({"exp": int(time.time()) + 600, **claims}, secret, algorithm=algorithm)


def ready_channels(received: Any) -> list[str]:
    (ready,) = received.of_type("ready")
    channels: list[str] = ready.json()["channels"]
    return channels


async def get_ticket(base_url: str, headers: dict[str, str]) -> str:
    async with httpx.AsyncClient(base_url=base_url) as client:
        response = await client.post("/v1/auth/ticket", headers=headers)
    assert response.status_code == 200, response.text
    ticket: str = response.json()["ticket"]
    return ticket


async def call(
    base_url: str,
    endpoint: str,
    headers: dict[str, str],
    params: dict[str, str] | None = None,
) -> httpx.Response:
    """One request to `endpoint`; a stream's body is read only when it is not a stream."""
    if endpoint == "stream":
        return await stream_response(base_url, headers, params)
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        if endpoint == "publish":
            body = {"channel": "broadcast", "type": "broadcast", "data": {}}
            return await client.post("/v1/publish", json=body, headers=headers, params=params)
        if endpoint == "ticket":
            return await client.post("/v1/auth/ticket", headers=headers, params=params)
        return await client.get("/v1/admin/stats", headers=headers, params=params)


ENDPOINTS = ["stream", "publish", "ticket", "stats"]


def assert_unauthorized(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    return body


# -- missing and malformed credentials -----------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_no_credentials_is_401_problem_with_challenge(
    memory_server: ServerProcess, endpoint: str
) -> None:
    body = assert_unauthorized(await call(memory_server.url, endpoint, {}))
    assert "credentials" in body["detail"]


@pytest.mark.parametrize(
    "authorization",
    ["Basic YWxpY2U6c2VjcmV0", "Bearer", "Token abc", "bearer-abc"],
)
@pytest.mark.parametrize("endpoint", ["stream", "publish"])
async def test_malformed_authorization_header_is_401(
    memory_server: ServerProcess, endpoint: str, authorization: str
) -> None:
    response = await call(memory_server.url, endpoint, {"Authorization": authorization})
    assert "Bearer <token>" in assert_unauthorized(response)["detail"]


@pytest.mark.parametrize("endpoint", ["stream", "publish"])
async def test_token_that_is_not_a_jwt_is_401(memory_server: ServerProcess, endpoint: str) -> None:
    response = await call(memory_server.url, endpoint, {"Authorization": "Bearer not.a.jwt"})
    assert "invalid" in assert_unauthorized(response)["detail"]


@pytest.mark.parametrize("endpoint", ["stream", "publish"])
async def test_bad_signature_is_401(memory_server: ServerProcess, endpoint: str) -> None:
    forged = signed({"sub": "svc", "roles": ["service"]}, secret="another-secret-" + "x" * 32)
    response = await call(memory_server.url, endpoint, {"Authorization": f"Bearer {forged}"})
    assert "Signature verification failed" in assert_unauthorized(response)["detail"]


@pytest.mark.parametrize("endpoint", ["stream", "publish"])
async def test_expired_token_is_401(memory_server: ServerProcess, endpoint: str) -> None:
    expired = token("svc", "service", ttl_s=-30)
    response = await call(memory_server.url, endpoint, {"Authorization": f"Bearer {expired}"})
    assert "expired" in assert_unauthorized(response)["detail"]


async def test_unsigned_token_is_401(memory_server: ServerProcess) -> None:
    unsigned = jwt.encode(
        {"sub": "svc", "roles": ["service"], "exp": int(time.time()) + 600}, None, "none"
    )
    response = await call(memory_server.url, "publish", {"Authorization": f"Bearer {unsigned}"})
    assert_unauthorized(response)


@pytest.mark.parametrize(
    ("claims", "named"),
    [
        ({"sub": "svc", "roles": "service"}, "roles"),
        ({"sub": "svc", "roles": {"service": True}}, "roles"),
        ({"sub": "svc", "roles": ["service", 1]}, "roles"),
        ({"sub": "svc", "roles": ["service"], "teams": "t1"}, "teams"),
        ({"sub": "svc", "roles": ["service"], "teams": None}, "teams"),
        ({"roles": ["service"]}, "sub"),
        ({"sub": 42, "roles": ["service"]}, "sub"),
        ({"sub": "svc/../../x", "roles": ["service"]}, "subject"),
        ({"sub": "", "roles": ["service"]}, "subject"),
    ],
)
async def test_token_with_ill_typed_claims_is_401(
    memory_server: ServerProcess, claims: dict[str, Any], named: str
) -> None:
    """A string `roles` must not be read as a set of roles: it is refused outright."""
    response = await call(
        memory_server.url, "publish", {"Authorization": f"Bearer {signed(claims)}"}
    )
    assert named in assert_unauthorized(response)["detail"].lower()


@pytest.mark.parametrize(
    ("claims", "said"),
    [
        # A 500: PyJWT took it, then it overflowed as a float.
        ({"exp": 10**400}, "'exp' must be a number"),
        # Accepted: PyJWT reads these claims as `int(value)`.
        ({"exp": "9999999999"}, "'exp' must be a number"),
        ({"nbf": "0"}, "'nbf' must be a number"),
        ({"iat": "0"}, "'iat' must be a number"),
        ({"exp": 253_402_300_800}, "'exp' must be a number"),  # after year 9999
        ({"nbf": 10**400}, "(nbf)"),  # PyJWT: not yet valid
        ({"iat": 10**400}, "(iat)"),
    ],
    ids=["exp-huge", "exp-text", "nbf-text", "iat-text", "exp-after-9999", "nbf-huge", "iat-huge"],
)
async def test_time_claims_must_be_numbers_of_seconds(
    memory_server: ServerProcess, claims: dict[str, Any], said: str
) -> None:
    """Regression: RFC 7519 times are JSON numbers; text was accepted and a huge number was a
    500. Each is now refused with 401 naming the claim."""
    bad = signed({"sub": "svc", "roles": ["service"], **claims})
    response = await call(memory_server.url, "publish", {"Authorization": f"Bearer {bad}"})
    detail = assert_unauthorized(response)["detail"]
    assert said in detail, detail


async def test_time_claims_that_are_numbers_are_accepted(memory_server: ServerProcess) -> None:
    now = time.time()
    good = signed({"sub": "svc", "roles": ["service"], "iat": now, "nbf": int(now) - 5,
                   "exp": now + 600.5})  # fmt: skip
    response = await call(memory_server.url, "publish", {"Authorization": f"Bearer {good}"})
    assert response.status_code == 201, response.text


async def test_token_without_exp_is_401(memory_server: ServerProcess) -> None:
    forever = jwt.encode({"sub": "svc", "roles": ["service"]}, SECRET, algorithm="HS256")
    response = await call(memory_server.url, "publish", {"Authorization": f"Bearer {forever}"})
    assert "exp" in assert_unauthorized(response)["detail"]


# -- cookie ----------------------------------------------------------------------------------


async def test_cookie_authenticates_a_stream(memory_server: ServerProcess) -> None:
    cookie = {"Cookie": f"sinal_token={token('carol')}"}
    received = await stream_until(memory_server.url, cookie, lambda r: bool(r.of_type("ready")))
    assert ready_channels(received) == ["notifications:carol", "broadcast"]


async def test_cookie_with_a_bad_token_is_401(memory_server: ServerProcess) -> None:
    cookie = {"Cookie": f"sinal_token={token('carol', ttl_s=-30)}"}
    assert (
        "expired" in assert_unauthorized(await call(memory_server.url, "stream", cookie))["detail"]
    )


# -- stream tickets ----------------------------------------------------------------------------


async def test_ticket_endpoint_returns_ticket_and_lifetime(memory_server: ServerProcess) -> None:
    async with httpx.AsyncClient(base_url=memory_server.url) as client:
        response = await client.post("/v1/auth/ticket", headers=ALICE)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"ticket", "expires_in"}
    assert body["expires_in"] == 60
    assert isinstance(body["ticket"], str)
    assert body["ticket"]


async def test_ticket_opens_a_stream_that_delivers(server: ServerProcess) -> None:
    ticket = await get_ticket(server.url, ALICE)
    async with (
        httpx.AsyncClient(base_url=server.url) as client,
        open_stream(server.url, {}, params={"ticket": ticket}) as (received, wait),
    ):
        await publish(client, "notifications:alice", "notification.created", {"n": 1})
        await wait(lambda r: len(r.payloads()) == 1, 10)
    assert ready_channels(received) == ["notifications:alice", "broadcast"]
    assert received.payloads() == [{"n": 1}]


async def test_ticket_carries_the_roles_of_its_owner(memory_server: ServerProcess) -> None:
    params = [("channel", "execution:x")]
    admin_ticket = await get_ticket(memory_server.url, ADMIN)
    received = await stream_until(
        memory_server.url,
        {},
        lambda r: bool(r.of_type("ready")),
        params=[*params, ("ticket", admin_ticket)],
    )
    assert "execution:x" in ready_channels(received)

    user_ticket = await get_ticket(memory_server.url, ALICE)
    response = await stream_response(memory_server.url, {}, [*params, ("ticket", user_ticket)])
    assert_problem(response, 403, field="channel")


@pytest.mark.parametrize("endpoint", ["publish", "ticket", "stream", "stats"])
async def test_ticket_is_not_accepted_as_bearer_token(
    memory_server: ServerProcess, endpoint: str
) -> None:
    """A ticket must not stand in for a JWT: not to publish, nor to mint a fresh ticket."""
    ticket = await get_ticket(memory_server.url, bearer("svc", "service", "admin"))
    response = await call(memory_server.url, endpoint, {"Authorization": f"Bearer {ticket}"})
    assert_unauthorized(response)


@pytest.mark.parametrize("endpoint", ["publish", "ticket", "stream"])
async def test_ticket_is_not_accepted_as_cookie(
    memory_server: ServerProcess, endpoint: str
) -> None:
    ticket = await get_ticket(memory_server.url, SERVICE)
    response = await call(memory_server.url, endpoint, {"Cookie": f"sinal_token={ticket}"})
    assert_unauthorized(response)


@pytest.mark.parametrize("endpoint", ["publish", "ticket", "stats"])
async def test_ticket_query_parameter_is_ignored_outside_streams(
    memory_server: ServerProcess, endpoint: str
) -> None:
    ticket = await get_ticket(memory_server.url, bearer("svc", "service", "admin"))
    response = await call(memory_server.url, endpoint, {}, params={"ticket": ticket})
    assert "credentials" in assert_unauthorized(response)["detail"]


async def test_jwt_is_not_accepted_as_ticket(memory_server: ServerProcess) -> None:
    response = await stream_response(memory_server.url, {}, {"ticket": token("alice")})
    assert "ticket is invalid" in assert_unauthorized(response)["detail"]


async def test_garbage_ticket_is_401(memory_server: ServerProcess) -> None:
    response = await stream_response(memory_server.url, {}, {"ticket": "garbage"})
    assert_unauthorized(response)


async def test_ticket_expires(spawn: Callable[..., ServerProcess]) -> None:
    """Regression: `exp` was the issue time truncated to the second plus the TTL, so a ticket
    lived anywhere between TTL-1 and TTL seconds; with a TTL of 1 it could be dead on arrival.
    """
    server = spawn({"SINAL_TICKET_TTL": "1"})
    asked_at = time.time()
    async with httpx.AsyncClient(base_url=server.url) as client:
        response = await client.post("/v1/auth/ticket", headers=ALICE)
    assert response.json()["expires_in"] == 1
    ticket = response.json()["ticket"]
    expires_at = jwt.decode(ticket, options={"verify_signature": False})["exp"]
    assert expires_at >= asked_at + 1  # at least the promised lifetime
    assert expires_at <= time.time() + 2

    ready = await stream_until(
        server.url, {}, lambda r: bool(r.of_type("ready")), params={"ticket": ticket}
    )
    assert ready_channels(ready) == ["notifications:alice", "broadcast"]

    # The expiry is known: wait for it, not for a guess.
    await anyio.sleep(max(0.0, expires_at - time.time()) + 0.05)
    response = await stream_response(server.url, {}, {"ticket": ticket})
    assert "expired" in assert_unauthorized(response)["detail"]


# -- channel authorization -----------------------------------------------------------------------


async def test_own_notifications_by_either_name(memory_server: ServerProcess) -> None:
    for name in ("notifications", "notifications:alice"):
        received = await stream_until(
            memory_server.url, ALICE, lambda r: bool(r.of_type("ready")), params={"channel": name}
        )
        assert ready_channels(received) == ["notifications:alice", "broadcast"]


async def test_another_users_notifications_are_403(server: ServerProcess) -> None:
    response = await stream_response(server.url, ALICE, {"channel": "notifications:bob"})
    body = assert_problem(response, 403, field="channel")
    assert "notifications:bob" in body["detail"]


async def test_admins_and_services_may_not_read_users_notifications(
    memory_server: ServerProcess,
) -> None:
    for headers in (ADMIN, SERVICE):
        response = await stream_response(
            memory_server.url, headers, {"channel": "notifications:bob"}
        )
        assert_problem(response, 403, field="channel")


async def test_plain_user_may_not_watch_an_execution(server: ServerProcess) -> None:
    response = await stream_response(server.url, ALICE, {"channel": "execution:x"})
    assert_problem(response, 403, field="channel")


@pytest.mark.parametrize("role", ["admin", "service"])
async def test_admin_and_service_may_watch_an_execution(server: ServerProcess, role: str) -> None:
    async with (
        httpx.AsyncClient(base_url=server.url) as client,
        open_stream(server.url, bearer("ops", role), params={"channel": "execution:x"}) as (
            received,
            wait,
        ),
    ):
        await publish(client, "execution:x", "execution.progress", {"progress": 50})
        await wait(lambda r: len(r.payloads()) == 1, 10)
    assert ready_channels(received) == ["notifications:ops", "broadcast", "execution:x"]
    assert received.payloads() == [{"progress": 50}]


@pytest.mark.parametrize("roles", [(), ("admin",), ("auditor",)])
async def test_publishing_needs_the_service_role(
    memory_server: ServerProcess, roles: tuple[str, ...]
) -> None:
    response = await call(memory_server.url, "publish", bearer("mallory", *roles))
    assert "'service'" in assert_problem(response, 403)["detail"]


async def test_stats_need_the_admin_role(memory_server: ServerProcess) -> None:
    assert_problem(await call(memory_server.url, "stats", SERVICE), 403)
    response = await call(memory_server.url, "stats", ADMIN)
    assert response.status_code == 200


# -- secrets stay out of the log -----------------------------------------------------------------


async def test_tickets_and_tokens_are_not_logged(spawn: Callable[..., ServerProcess]) -> None:
    server = spawn({})
    jwt_token = token("alice")
    ticket = await get_ticket(server.url, {"Authorization": f"Bearer {jwt_token}"})
    await stream_until(
        server.url,
        {},
        lambda r: bool(r.of_type("ready")),
        params=[("channel", "notifications"), ("ticket", ticket)],
    )
    rejected = [token("bob", ttl_s=-30), token("carol") + "x"]
    for secret in rejected:
        assert_unauthorized(await stream_response(server.url, {}, {"ticket": secret}))
        assert_unauthorized(
            await call(server.url, "publish", {"Authorization": f"Bearer {secret}"})
        )
    assert_unauthorized(await call(server.url, "publish", {}, params={"ticket": ticket}))

    # Proof the requests were logged: an access line each, the stream's once the server has
    # seen it close.
    with anyio.fail_after(10):
        while True:
            logs = server.logs()
            if logs.count("ticket=[redacted]") >= 4:
                break
            await anyio.sleep(0.05)
    assert logs.count("ticket=[redacted]") == 4, logs
    for secret in (jwt_token, ticket, *rejected, SECRET):
        assert secret not in logs
        # Nor any recognisable part of one (a JWT's signature is its last segment).
        assert secret.rsplit(".", 1)[-1] not in logs


def test_a_cached_verification_ends_when_the_token_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Verified tokens are remembered, but never past their `exp`."""
    from api import auth
    from api.settings import Settings

    authenticator = auth.Authenticator(Settings(jwt_secret=SECRET))
    now = time.time()
    token = signed({"sub": "alice", "exp": int(now) + 60})
    assert authenticator.verify_token(token).sub == "alice"
    assert authenticator.verify_token(token).sub == "alice"  # from the cache
    later = now + 61  # both clocks, ours and PyJWT's, move past `exp`
    monkeypatch.setattr(auth.time, "time", lambda: later)

    class Later(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Later:
            return cls.fromtimestamp(later, tz)

    monkeypatch.setattr(jwt.api_jwt, "datetime", Later)
    with pytest.raises(auth.Unauthorized, match="expired"):
        authenticator.verify_token(token)
    # A different (forged) string is never served from the cache.
    with pytest.raises(auth.Unauthorized):
        authenticator.verify_token(token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))

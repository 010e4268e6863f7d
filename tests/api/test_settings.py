"""Settings: `SINAL_*` variables validated loudly, the CLI refusing bad ones, and key material.

A bad value raises `SettingsError` naming the variable; `sinal serve` prints it and exits non-zero
without starting. Without `SINAL_JWT_SECRET`, a development secret is kept in the working
directory and `sinal token` signs with it. RS256 servers verify with a public key file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from api.settings import Settings, SettingsError, redact_url
from streams import redisclient
from tests.support import SECRET, ServerProcess, assert_problem, stream_until

SINAL = str(Path(sys.executable).with_name("sinal"))


def env_without_sinal(**overrides: str) -> dict[str, str]:
    """The test process's environment with no `SINAL_*` variable but `overrides`."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("SINAL_")}
    return {**clean, **overrides}


def run_sinal(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # A bad setting must stop start-up at once: a server that starts would hit the timeout.
    return subprocess.run(
        [SINAL, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=20, check=False
    )


def pem_public(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def pem_private(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def rsa_public_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Path:
    path = tmp_path / "jwt-public.pem"
    path.write_bytes(pem_public(rsa_key))
    return path


TICKET_SECRET = "ticket-secret-that-is-long-enough-too"


# -- Settings.from_env ----------------------------------------------------------------------------


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.database_url == "sqlite:///./sinal.db"
    assert settings.redis_url is None
    assert settings.jwt_algorithm == "HS256"
    assert (settings.max_channels, settings.max_payload_bytes) == (16, 65536)
    assert (settings.actions_rate, settings.actions_burst) == (20.0, 40)
    assert settings.actions_idle_timeout_s == 300.0
    assert settings.log_format == "text"


def test_values_are_parsed_and_empty_means_unset() -> None:
    settings = Settings.from_env(
        {
            "SINAL_PORT": " 9000 ",
            "SINAL_REDIS_URL": "redis://cache:6380/2",
            "SINAL_DATABASE_URL": "postgresql://sinal@db:5432/sinal",
            "SINAL_JWT_SECRET": SECRET,
            "SINAL_HEARTBEAT_INTERVAL": "0.5",
            "SINAL_STREAM_MAX_AGE": "0",
            "SINAL_LOG_LEVEL": "debug",
            "SINAL_LOG_FORMAT": "JSON",
            "SINAL_MAX_CHANNELS": "",
        }
    )
    assert settings.port == 9000
    assert settings.redis_url == "redis://cache:6380/2"
    assert settings.database_url == "postgresql://sinal@db:5432/sinal"
    assert settings.heartbeat_s == 0.5
    assert settings.stream_max_age_s == 0
    assert settings.log_level == "DEBUG"
    assert settings.log_format == "json"
    assert settings.max_channels == 16


def test_a_redis_cluster_is_named_by_any_of_its_nodes() -> None:
    url = "redis+cluster://sinal:s3cret@10.0.0.1:7000,10.0.0.2:7001,[::1]:7002"
    settings = Settings.from_env({"SINAL_REDIS_URL": url})
    assert settings.redis_url == url
    target = redisclient.parse(url)
    assert target.cluster
    assert target.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001), ("::1", 7002))
    assert (target.username, target.password, target.db) == ("sinal", "s3cret", 0)
    assert redisclient.parse("rediss+cluster://h:7000/0").ssl
    standalone = redisclient.parse("redis://cache:6380/2")
    assert (standalone.cluster, standalone.nodes, standalone.db) == (False, (("cache", 6380),), 2)


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database() -> None:
    url = "redis+sentinel://:pw@10.0.0.1:26379,sentinel-b,[::1]:26380/primary?db=3"
    settings = Settings.from_env({"SINAL_REDIS_URL": url, "SINAL_JWT_SECRET": SECRET})
    assert settings.redis_url == url
    target = redisclient.parse(url)
    assert target.kind == "sentinel"
    assert target.nodes == (("10.0.0.1", 26379), ("sentinel-b", 26379), ("::1", 26380))
    assert (target.service, target.db, target.password) == ("primary", 3, "pw")


POSITIVE_INTS = [
    "SINAL_TICKET_TTL",
    "SINAL_RETRY_MS",
    "SINAL_BUFFER_SIZE",
    "SINAL_MAX_CHANNELS",
    "SINAL_MAX_PAYLOAD_BYTES",
    "SINAL_STREAM_MAX_LEN",
    "SINAL_ACTIONS_BURST",
]

BAD_VALUES = [
    *[("SINAL_PORT", value) for value in ("abc", "0", "-1", "65536", "80.5")],
    *[
        ("SINAL_REDIS_URL", value)
        for value in (
            "localhost:6379",
            "http://127.0.0.1:6379",
            "redis://",
            "redis:///0",
            "redis://cache:6379/x",
            "redis+cluster://",
            "redis+cluster://a:7000,b",
            "redis+cluster://a:7000,:7001",
            "redis+cluster://a:70000",
            "redis+cluster://a:7000/2",
            "redis+sentinels://a:7000",
            "redis+sentinel://127.0.0.1:26379",  # no service name
            "redis+sentinel:///primary",
            "redis+sentinel://127.0.0.1:26379,/primary",
            "redis+sentinel://127.0.0.1:sentinel/primary",
            "redis+sentinel://127.0.0.1:26379/primary?db=two",
            "redis+sentinel://127.0.0.1:26379/primary?pasword=typo",
        )
    ],
    *[
        ("SINAL_DATABASE_URL", value)
        for value in (
            "sinal.db",
            "sqlite://sinal.db",
            "sqlite:///",
            "mysql://u@h/db",
            "postgresql:///db",
        )
    ],
    ("SINAL_JWT_SECRET", "short"),
    ("SINAL_JWT_SECRET", "x" * 31),
    *[("SINAL_JWT_ALGORITHM", value) for value in ("none", "hs256", "HS512", "PS256")],
    *[(name, value) for name in POSITIVE_INTS for value in ("0", "-5", "ten", "1.5")],
    # Infinity is a regression: it passed, then overflowed turning seconds into milliseconds.
    *[("SINAL_HEARTBEAT_INTERVAL", value) for value in ("0", "-1", "nan", "inf", "soon")],
    *[("SINAL_STREAM_MAX_AGE", value) for value in ("-1", "nan", "inf", "-inf")],
    *[("SINAL_AUTH_GRACE", value) for value in ("-1", "nan", "inf", "30s")],
    *[
        (name, value)
        for name in ("SINAL_ACTIONS_RATE", "SINAL_ACTIONS_IDLE_TIMEOUT")
        for value in ("0", "-1", "nan", "inf", "fast")
    ],
    ("SINAL_LOG_LEVEL", "verbose"),
    *[("SINAL_LOG_FORMAT", value) for value in ("xml", "jsonl", "plain")],
    ("SINAL_TICKET_SECRET", "short"),
]


@pytest.mark.parametrize(("variable", "value"), BAD_VALUES)
def test_bad_value_raises_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"SINAL_JWT_SECRET": SECRET, variable: value})
    assert raised.value.variable == variable
    assert str(raised.value).startswith(f"{variable}: ")


def test_alert_recipients_are_user_ids() -> None:
    assert Settings.from_env({}).alert_recipients == ()
    settings = Settings.from_env({"SINAL_ALERT_RECIPIENTS": " ops , root,ops"})
    assert settings.alert_recipients == ("ops", "root")
    for bad in ("ops,,root", "ops root", "a" * 129, "ops,bad/id"):
        with pytest.raises(SettingsError) as raised:
            Settings.from_env({"SINAL_ALERT_RECIPIENTS": bad})
        assert raised.value.variable == "SINAL_ALERT_RECIPIENTS"
        assert "user ids" in str(raised.value)


@pytest.mark.parametrize("variable", ["SINAL_JWT_SECRET", "SINAL_TICKET_SECRET"])
def test_secret_values_are_not_shown(variable: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({variable: "hunter2-short"})
    assert "hunter2" not in str(raised.value)


def test_rs256_needs_a_public_key_file() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"SINAL_JWT_ALGORITHM": "RS256", "SINAL_TICKET_SECRET": TICKET_SECRET})
    assert raised.value.variable == "SINAL_JWT_PUBLIC_KEY_FILE"


def test_public_key_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(
            {
                "SINAL_JWT_ALGORITHM": "RS256",
                "SINAL_JWT_PUBLIC_KEY_FILE": str(tmp_path / "missing.pem"),
                "SINAL_TICKET_SECRET": TICKET_SECRET,
            }
        )
    assert raised.value.variable == "SINAL_JWT_PUBLIC_KEY_FILE"


def test_rs256_needs_a_ticket_secret(rsa_public_file: Path) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(
            {"SINAL_JWT_ALGORITHM": "RS256", "SINAL_JWT_PUBLIC_KEY_FILE": str(rsa_public_file)}
        )
    assert raised.value.variable == "SINAL_TICKET_SECRET"


def test_public_key_file_needs_an_asymmetric_algorithm(rsa_public_file: Path) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"SINAL_JWT_PUBLIC_KEY_FILE": str(rsa_public_file)})
    assert raised.value.variable == "SINAL_JWT_PUBLIC_KEY_FILE"


@pytest.mark.parametrize(
    ("algorithm", "content"),
    [
        ("RS256", b"not a key"),
        ("RS256", b""),
        ("RS256", b"\xff\xfe"),
        ("ES256", "rsa-public"),  # an RSA key where an EC key belongs
        ("RS256", "rsa-private"),  # would verify nothing: every request was a 500
    ],
)
def test_unusable_public_key_file_stops_start_up(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, algorithm: str, content: bytes | str
) -> None:
    """Regression: the key file was read but not parsed until a request came, so start-up
    succeeded with a key that failed every request."""
    if content == "rsa-public":
        content = pem_public(rsa_key)
    elif content == "rsa-private":
        content = pem_private(rsa_key)
    assert isinstance(content, bytes)
    path = tmp_path / "key.pem"
    path.write_bytes(content)
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(
            {
                "SINAL_JWT_ALGORITHM": algorithm,
                "SINAL_JWT_PUBLIC_KEY_FILE": str(path),
                "SINAL_TICKET_SECRET": TICKET_SECRET,
            }
        )
    assert raised.value.variable == "SINAL_JWT_PUBLIC_KEY_FILE"


def test_es256_public_key_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    path.write_bytes(pem_public(ec.generate_private_key(ec.SECP256R1())))
    settings = Settings.from_env(
        {
            "SINAL_JWT_ALGORITHM": "ES256",
            "SINAL_JWT_PUBLIC_KEY_FILE": str(path),
            "SINAL_TICKET_SECRET": TICKET_SECRET,
        }
    )
    assert settings.jwt_public_key_file == path


def test_dev_secret_file_is_private_and_reused(tmp_path: Path) -> None:
    settings = Settings.from_env({"SINAL_DEV_SECRET_FILE": str(tmp_path / "dev-secret")})
    first, created = settings.with_dev_secret()
    assert created
    assert first.jwt_secret is not None
    assert len(first.jwt_secret) >= 32
    assert stat.S_IMODE((tmp_path / "dev-secret").stat().st_mode) == 0o600
    again, created = settings.with_dev_secret()
    assert not created
    assert again.jwt_secret == first.jwt_secret


def test_unusable_dev_secret_file_names_the_variable(tmp_path: Path) -> None:
    for path in (tmp_path / "missing-dir" / "secret", tmp_path):
        settings = Settings.from_env({"SINAL_DEV_SECRET_FILE": str(path)})
        with pytest.raises(SettingsError) as raised:
            settings.with_dev_secret()
        assert raised.value.variable == "SINAL_DEV_SECRET_FILE"


# -- the CLI ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SINAL_PORT", "eighty"),
        ("SINAL_PORT", "70000"),
        ("SINAL_REDIS_URL", "localhost:6379"),
        ("SINAL_REDIS_URL", "redis+sentinel://127.0.0.1:26379"),
        ("SINAL_DATABASE_URL", "mysql://u@h/db"),
        ("SINAL_JWT_SECRET", "too-short"),
        ("SINAL_JWT_ALGORITHM", "none"),
        ("SINAL_MAX_CHANNELS", "0"),
        ("SINAL_STREAM_MAX_AGE", "inf"),
        ("SINAL_LOG_FORMAT", "yaml"),
    ],
)
def test_serve_with_a_bad_value_exits_naming_it(tmp_path: Path, variable: str, value: str) -> None:
    result = run_sinal("serve", cwd=tmp_path, env=env_without_sinal(**{variable: value}))
    assert result.returncode == 2
    assert variable in result.stderr
    assert "Traceback" not in result.stderr
    if variable == "SINAL_JWT_SECRET":
        assert value not in result.stderr
    assert not (tmp_path / ".sinal-dev-secret").exists()


def test_serve_rs256_without_key_file_exits_naming_it(tmp_path: Path) -> None:
    env = env_without_sinal(SINAL_JWT_ALGORITHM="RS256", SINAL_TICKET_SECRET=TICKET_SECRET)
    result = run_sinal("serve", cwd=tmp_path, env=env)
    assert result.returncode == 2
    assert "SINAL_JWT_PUBLIC_KEY_FILE" in result.stderr


@pytest.mark.anyio
async def test_dev_secret_is_created_and_shared_with_sinal_token(
    tmp_path: Path, spawn: Callable[..., ServerProcess]
) -> None:
    server = spawn({"SINAL_JWT_SECRET": None})
    secret_file = tmp_path / ".sinal-dev-secret"
    assert secret_file.is_file()
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert "created a development secret" in server.logs()

    result = run_sinal("token", "--sub", "alice", cwd=tmp_path, env=env_without_sinal())
    assert result.returncode == 0, result.stderr
    dev_token = result.stdout.strip()
    headers = {"Authorization": f"Bearer {dev_token}"}
    assert jwt.decode(dev_token, secret_file.read_text().strip(), algorithms=["HS256"])["sub"] == (
        "alice"
    )

    received = await stream_until(server.url, headers, lambda r: bool(r.of_type("ready")))
    assert received.of_type("ready")[0].json()["channels"] == ["notifications:alice", "broadcast"]
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.post("/v1/auth/ticket", headers=headers)).status_code == 200
        # The test suite's usual secret is not the one in use.
        other = jwt.encode(
            {"sub": "alice", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256"
        )
        response = await client.post(
            "/v1/auth/ticket", headers={"Authorization": f"Bearer {other}"}
        )
        assert_problem(response, 401)
    assert secret_file.read_text().strip() not in server.logs()

    server.restart()  # the same file, the same secret: earlier tokens stay valid
    async with httpx.AsyncClient(base_url=server.url) as client:
        assert (await client.post("/v1/auth/ticket", headers=headers)).status_code == 200
    assert "created a development secret" not in server.logs().split("Finished server")[-1]


# -- RS256 --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_rs256_server_accepts_only_tokens_signed_with_the_private_key(
    spawn: Callable[..., ServerProcess], rsa_key: rsa.RSAPrivateKey, rsa_public_file: Path
) -> None:
    server = spawn(
        {
            "SINAL_JWT_ALGORITHM": "RS256",
            "SINAL_JWT_PUBLIC_KEY_FILE": str(rsa_public_file),
            "SINAL_TICKET_SECRET": TICKET_SECRET,
            "SINAL_JWT_SECRET": None,
        }
    )
    claims: dict[str, Any] = {"sub": "alice", "roles": [], "exp": int(time.time()) + 600}

    def bearer_of(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    good = jwt.encode(claims, pem_private(rsa_key), algorithm="RS256")
    public_pem = pem_public(rsa_key)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        response = await client.post("/v1/auth/ticket", headers=bearer_of(good))
        assert response.status_code == 200, response.text
        ticket = response.json()["ticket"]

        stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        rejected = {
            "HS256 with the usual secret": jwt.encode(claims, SECRET, algorithm="HS256"),
            # The classic confusion: the public key used as an HMAC secret.
            "HS256 keyed with the public key": hs256_by_hand(claims, public_pem),
            "RS256 from another key": jwt.encode(claims, pem_private(stranger), algorithm="RS256"),
        }
        for name, token in rejected.items():
            response = await client.post("/v1/auth/ticket", headers=bearer_of(token))
            assert response.status_code == 401, name

    for headers, params in ((bearer_of(good), None), ({}, {"ticket": ticket})):
        received = await stream_until(
            server.url, headers, lambda r: bool(r.of_type("ready")), params=params
        )
        assert received.of_type("ready")[0].json()["channels"][0] == "notifications:alice"


def hs256_by_hand(claims: dict[str, Any], key: bytes) -> str:
    """PyJWT refuses to HMAC-sign with a PEM key; an attacker would not: sign by hand."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims).encode())
    signature = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


def test_config_hides_passwords_in_urls(tmp_path: Path) -> None:
    env = env_without_sinal(
        SINAL_REDIS_URL="redis://:hunter2-redis@127.0.0.1:6379/0",
        SINAL_DATABASE_URL="postgresql://app:hunter2-pg@127.0.0.1:5432/test",
        SINAL_JWT_SECRET="s" * 40,
    )
    result = run_sinal("config", cwd=tmp_path, env=env)
    assert result.returncode == 0
    assert "hunter2" not in result.stdout
    assert "s" * 40 not in result.stdout
    assert "redis://:***@127.0.0.1:6379/0" in result.stdout
    env["SINAL_REDIS_URL"] = (
        "redis+sentinel://:hunter2-redis@127.0.0.1:26379,127.0.0.1:26380/primary"
        "?db=1&sentinel_password=hunter2-sentinel"
    )
    result = run_sinal("config", cwd=tmp_path, env=env)
    assert result.returncode == 0
    assert "hunter2" not in result.stdout
    assert "redis+sentinel://:***@127.0.0.1:26379,127.0.0.1:26380/primary" in result.stdout
    assert "postgresql://app:***@127.0.0.1:5432/test" in result.stdout


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("rediss://user:pw@h:6379/1", "rediss://user:***@h:6379/1"),
        ("redis+cluster://user:pw@a:7000,b:7001", "redis+cluster://user:***@a:7000,b:7001"),
        (
            "redis+sentinel://:pw@a:26379,[::1]/svc?db=2&sentinel_password=pw2",
            "redis+sentinel://:***@a:26379,[::1]/svc?db=2&sentinel_password=***",
        ),
        ("redis+cluster://a:7000,b:7001", "redis+cluster://a:7000,b:7001"),
    ],
)
def test_every_redis_url_form_is_shown_without_its_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown

"""The `sinal` command as a newcomer meets it: start-up failures in one line that names the
setting, plain messages for bad numbers, where the server can be reached, and development
secrets that do not silently differ between `sinal token` and `sinal serve`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import get_type_hints

import httpx
import pytest

from api.settings import Settings, SettingsError
from tests.api.test_settings import env_without_sinal, run_sinal
from tests.support import SECRET, ServerProcess, assert_problem, free_port, token

# Every setting that holds a number, with a default or without one.
NUMERIC = [
    spec.metadata["env"]
    for spec in fields(Settings)
    if get_type_hints(Settings)[spec.name] in (int, float, int | None, float | None)
]
PYTHON_WORDING = ("invalid literal", "could not convert", "base 10")


@pytest.mark.parametrize("variable", NUMERIC)
@pytest.mark.parametrize("value", ["abc", "1e", "12 apples"])
def test_a_bad_number_gets_a_plain_message(variable: str, value: str) -> None:
    """Bug: `SINAL_PORT=abc` answered with Python's `int()` wording ("invalid literal for
    int() with base 10")."""
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"SINAL_JWT_SECRET": SECRET, variable: value})
    message = str(raised.value)
    assert message.startswith(f"{variable}: must be "), message
    assert message.endswith(f"(got {value!r})"), message
    assert not any(words in message for words in PYTHON_WORDING), message


def test_port_message_says_the_range(tmp_path: Path) -> None:
    result = run_sinal("serve", cwd=tmp_path, env=env_without_sinal(SINAL_PORT="abc"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "sinal: configuration error: SINAL_PORT: must be a whole number between 1 and 65535 "
        "(got 'abc')"
    )
    result = run_sinal("serve", "--port", "abc", cwd=tmp_path, env=env_without_sinal())
    assert result.returncode == 2
    assert "must be a whole number between 1 and 65535 (got 'abc')" in result.stderr
    assert not any(words in result.stderr for words in PYTHON_WORDING)


@pytest.mark.parametrize(
    ("variable", "url"),
    [
        ("SINAL_REDIS_URL", "redis://:hunter2@127.0.0.1:{port}/0"),
        ("SINAL_DATABASE_URL", "postgresql://sinal:hunter2@127.0.0.1:{port}/sinal"),
    ],
)
def test_an_unreachable_server_at_start_up_is_one_line_naming_the_setting(
    tmp_path: Path, variable: str, url: str
) -> None:
    """Bug: an unreachable Redis at start-up printed a 90-line traceback of the failed
    application start-up (PostgreSQL got one line, but without the setting's name)."""
    env = env_without_sinal(SINAL_JWT_SECRET=SECRET, **{variable: url.format(port=free_port())})
    result = run_sinal("serve", "--port", str(free_port()), cwd=tmp_path, env=env)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("sinal: ")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"sinal: {variable}: cannot "), errors
    assert ":***@127.0.0.1:" in errors[0]
    assert "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.splitlines()) <= 3, result.stderr  # with the info lines before


def test_serve_says_where_the_pages_and_the_api_are(
    spawn: Callable[..., ServerProcess],
) -> None:
    """Bug: `sinal serve` never printed the address of the pages (`/app/`)."""
    server = spawn()
    assert f"the pages are at {server.url}/app/, the API at {server.url}/v1/" in server.logs()


def test_sinal_token_warns_when_it_creates_a_development_secret(tmp_path: Path) -> None:
    """Bug: `sinal token` run in another directory than the server's silently made a new
    development secret, and the server then refused its tokens."""
    env = env_without_sinal()
    first = run_sinal("token", "--sub", "alice", cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count(".") == 2  # the token alone on stdout, fit for $(...)
    secret_file = tmp_path / ".sinal-dev-secret"
    assert f"created a new development secret in {secret_file}" in first.stderr
    assert "sinal serve" in first.stderr

    again = run_sinal("token", "--sub", "alice", cwd=tmp_path, env=env)
    assert again.returncode == 0
    assert again.stderr == ""


@pytest.mark.anyio
async def test_a_token_of_another_development_secret_gets_a_401_that_says_why(
    tmp_path: Path, spawn: Callable[..., ServerProcess]
) -> None:
    """Bug: a token from `sinal token` run elsewhere (another development secret) got only
    "Signature verification failed", with no hint that the two secrets differ."""
    server = spawn({"SINAL_JWT_SECRET": None})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = run_sinal("token", "--sub", "alice", cwd=elsewhere, env=env_without_sinal())
    assert "created a new development secret" in result.stderr
    headers = {"Authorization": f"Bearer {result.stdout.strip()}"}
    async with httpx.AsyncClient(base_url=server.url) as client:
        body = assert_problem(await client.get("/v1/notifications", headers=headers), 401)
    assert "Signature verification failed" in body["detail"]
    assert str(tmp_path / ".sinal-dev-secret") in body["detail"]
    assert "sinal token" in body["detail"]


@pytest.mark.anyio
async def test_with_a_configured_secret_a_bad_signature_gets_no_development_hint(
    memory_server: ServerProcess,
) -> None:
    headers = {"Authorization": f"Bearer {token('alice')[:-4]}AAAA"}
    async with httpx.AsyncClient(base_url=memory_server.url) as client:
        body = assert_problem(await client.get("/v1/notifications", headers=headers), 401)
    assert "Signature verification failed" in body["detail"]
    assert "development" not in body["detail"]

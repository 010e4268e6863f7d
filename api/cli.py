"""The `sinal` command: `serve`, `token`, `migrate`, `config`, `demo`."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import replace

from api.settings import Settings, SettingsError, parse_port, redact_url

log = logging.getLogger("sinal")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sinal", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--host", help="address to listen on (default: SINAL_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="port (default: SINAL_PORT or 8000)")

    token = commands.add_parser("token", help="print a JWT for trying things out")
    token.add_argument("--sub", required=True, help="user id")
    token.add_argument("--role", action="append", default=[], help="admin or service; repeatable")
    token.add_argument("--team", action="append", default=[], help="team id; repeatable")
    token.add_argument(
        "--ttl", type=_positive_int, default=3600, help="lifetime in seconds (default 3600)"
    )

    commands.add_parser("migrate", help="apply pending database migrations (SINAL_DATABASE_URL)")
    commands.add_parser("config", help="show the settings in effect (secrets hidden)")

    demo = commands.add_parser("demo", help="simulate an execution service against a server")
    demo.add_argument(
        "--url", default="http://127.0.0.1:8000", help="server (default: %(default)s)"
    )
    demo.add_argument("--executions", type=_positive_int, default=4, help="at a time (default: 4)")
    demo.add_argument("--team", default="demo", help="team that owns them (default: demo)")
    demo.add_argument(
        "--owner", default=_default_owner(), help="their owner (default: %(default)s)"
    )
    demo.add_argument("--speed", type=_positive_float, default=1.0, help="2 runs twice as fast")
    demo.add_argument("--once", action="store_true", help="one round of executions, then exit")

    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        if args.command == "serve":
            return _serve(settings, args.host, args.port)
        if args.command == "token":
            return _token(settings, args.sub, args.role, args.team, args.ttl)
        if args.command == "migrate":
            return _migrate(settings)
        if args.command == "demo":
            return _demo(settings, args)
        return _config(settings)
    except SettingsError as error:
        print(f"sinal: configuration error: {error}", file=sys.stderr)
        return 2


def _serve(settings: Settings, host: str | None, port: int | None) -> int:
    from api import logs
    from api.app import create_app
    from api.server import serve

    logs.configure(settings.log_level, settings.log_format)
    uses_dev_secret = settings.jwt_secret is None and settings.jwt_algorithm == "HS256"
    settings, created = settings.with_dev_secret()
    if created:
        log.warning(
            "no SINAL_JWT_SECRET set: created a development secret in %s "
            "(`sinal token` uses it; set SINAL_JWT_SECRET in production)",
            settings.dev_secret_file,
        )
    elif uses_dev_secret:
        log.info("using the development JWT secret in %s", settings.dev_secret_file)
    if settings.redis_url and _reach_redis(settings.redis_url) != 0:
        return 1
    if _migrate(settings, quiet=True) != 0:
        return 1
    engine = (
        f"redis ({redact_url(settings.redis_url)})" if settings.redis_url else "memory (embedded)"
    )
    log.info("engine: %s", engine)
    # The address in the settings too: a node is named after it unless SINAL_NODE_NAME says.
    settings = replace(settings, host=host or settings.host, port=port or settings.port)
    serve(create_app(settings), settings.host, settings.port, settings.log_level)
    return 0


def _token(settings: Settings, sub: str, roles: list[str], teams: list[str], ttl: int) -> int:
    from api.auth import mint_token
    from streams.channels import is_valid_identifier

    if settings.jwt_algorithm != "HS256":
        print("sinal: `sinal token` signs HS256 tokens only", file=sys.stderr)
        return 2
    if not is_valid_identifier(sub):
        print("sinal: --sub must be 1-128 characters of A-Z a-z 0-9 _ @ . -", file=sys.stderr)
        return 2
    settings = _signing_settings(settings)
    assert settings.jwt_secret is not None  # with_dev_secret guarantees one for HS256
    print(mint_token(settings.jwt_secret, sub, roles, teams, ttl))
    return 0


def _signing_settings(settings: Settings) -> Settings:
    """The settings with the secret to sign with, saying so when a new one was made: a token
    signed with a secret the server does not use is refused, so a token made in another
    directory than the server's must not pass unnoticed."""
    settings, created = settings.with_dev_secret()
    if created:
        print(
            f"sinal: no SINAL_JWT_SECRET set: created a new development secret in "
            f"{settings.dev_secret_file.resolve()}; a server only accepts this token if it "
            "uses the same file (run `sinal token` in the directory of `sinal serve`)",
            file=sys.stderr,
        )
    return settings


def _reach_redis(url: str) -> int:
    """Ping the Redis of SINAL_REDIS_URL before serving: one line that names the setting,
    instead of the traceback of a failed application start-up."""
    import asyncio

    from redis.exceptions import RedisError

    from streams.redis import redis_client

    async def ping() -> None:
        client = redis_client(url, socket_connect_timeout=5, socket_timeout=5)
        try:
            await client.ping()
        finally:
            await client.aclose()

    try:
        asyncio.run(ping())
    except (RedisError, OSError) as error:
        print(
            f"sinal: SINAL_REDIS_URL: cannot reach {redact_url(url)}: {_line(error)}",
            file=sys.stderr,
        )
        return 1
    return 0


def _line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _migrate(settings: Settings, *, quiet: bool = False) -> int:
    """Apply pending migrations; `sinal serve` does it too, before it listens."""
    import asyncio

    from db.engine import DATABASE_ERRORS
    from db.migrate import migrate

    where = redact_url(settings.database_url)
    try:
        applied = asyncio.run(migrate(settings.database_url))
    except DATABASE_ERRORS as error:
        print(f"sinal: SINAL_DATABASE_URL: cannot migrate {where}: {_line(error)}", file=sys.stderr)
        return 1
    if quiet:
        if applied:
            log.info("database %s: applied %s", where, ", ".join(applied))
        return 0
    for name in applied:
        print(f"applied {name}")
    print(f"{len(applied)} migration(s) applied to {where}")
    return 0


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    """Run `api.demo` with a service token signed like `sinal token` signs one."""
    import asyncio

    from api.auth import mint_token
    from api.demo import Options, run_demo
    from streams.channels import is_valid_identifier

    if settings.jwt_algorithm != "HS256":
        print("sinal: `sinal demo` signs HS256 tokens only", file=sys.stderr)
        return 2
    for flag, value in (("--owner", args.owner), ("--team", args.team)):
        if not is_valid_identifier(value):
            print(f"sinal: {flag} must be 1-128 characters of A-Z a-z 0-9 _ @ . -", file=sys.stderr)
            return 2
    settings = _signing_settings(settings)
    assert settings.jwt_secret is not None  # with_dev_secret guarantees one for HS256
    token = mint_token(settings.jwt_secret, "demo-service", ["service"], [args.team], 7 * 86400)
    options = Options(args.url, args.executions, args.team, args.owner, args.speed, args.once)

    def say(line: str) -> None:
        print(line, flush=True)

    return asyncio.run(run_demo(options, token, say))


def _default_owner() -> str:
    from streams.channels import is_valid_identifier

    user = os.environ.get("USER", "")
    return user if is_valid_identifier(user) else "alice"


def _config(settings: Settings) -> int:
    for variable, value, default in settings.describe():
        print(f"{variable:28} {value:32} (default: {default})")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1 (got {text!r})")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a number above 0 (got {text!r})")
    return value


def _port(text: str) -> int:
    try:
        return parse_port(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{error} (got {text!r})") from None


if __name__ == "__main__":
    sys.exit(main())

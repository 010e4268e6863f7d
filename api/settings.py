"""Settings: read once from `SINAL_*` variables into one validated object.

Nothing reads the environment at import time; `Settings.from_env()` is called by the CLI (or a
test) and the result is passed to `create_app(settings)`. A bad value stops start-up with a
message naming the variable.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from streams import redisclient
from streams.channels import IDENTIFIER, is_valid_identifier


class SettingsError(ValueError):
    """A `SINAL_*` variable holds a value Sinal cannot use."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


def _whole_number(text: str, problem: str) -> int:
    """`int(text)`, with `problem` as the message instead of Python's `int()` wording."""
    try:
        return int(text)
    except ValueError:
        raise ValueError(problem) from None


def _number(text: str, problem: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(problem) from None


def _positive_int(text: str) -> int:
    problem = "must be a whole number of at least 1"
    value = _whole_number(text, problem)
    if value <= 0:
        raise ValueError(problem)
    return value


def _non_negative_int(text: str) -> int:
    problem = "must be a whole number of at least 0"
    value = _whole_number(text, problem)
    if value < 0:
        raise ValueError(problem)
    return value


def _non_negative_float(text: str) -> float:
    problem = "must be a finite number of at least 0"
    value = _number(text, problem)
    # Infinity would pass `>= 0` and then overflow where seconds become integer milliseconds.
    if not (value >= 0 and math.isfinite(value)):  # also rejects NaN
        raise ValueError(problem)
    return value


def _positive_float(text: str) -> float:
    problem = "must be a finite number above 0"
    value = _number(text, problem)
    if not (value > 0 and math.isfinite(value)):  # also rejects NaN
        raise ValueError(problem)
    return value


def parse_port(text: str) -> int:
    problem = "must be a whole number between 1 and 65535"
    value = _whole_number(text, problem)
    if not 0 < value < 65536:
        raise ValueError(problem)
    return value


def _database_url(text: str) -> str:
    scheme = urlsplit(text).scheme
    if scheme == "sqlite" and text.startswith("sqlite:///") and len(text) > len("sqlite:///"):
        return text
    if scheme in ("postgresql", "postgres") and urlsplit(text).hostname:
        return text
    raise ValueError("expected sqlite:///path/file.db or postgresql://user@host:port/db")


def redact_url(text: str) -> str:
    """A URL fit for logs: any password replaced (a Sentinel's in the query too)."""
    parts = urlsplit(text)
    if not parts.scheme:
        return text
    if parts.password is not None:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        parts = parts._replace(netloc=netloc)
    if parts.query:
        query = re.sub(r"((?:^|&)[a-z_]*password=)[^&]*", r"\1***", parts.query)
        parts = parts._replace(query=query)
    return parts.geturl()


def _redis_url(text: str) -> str:
    redisclient.parse(text)  # raises ValueError saying what is expected
    return text


DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_origin(text: str) -> str:
    """`scheme://host[:port]`, lowercase and without a default port; ValueError if `text` is
    not an origin (a path, query, credentials or another scheme than http(s))."""
    parts = urlsplit(text.strip())
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{text!r} is not an origin like https://app.example.com[:port]")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise ValueError(f"{text!r} is not an origin: give scheme, host and port only")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r} has an invalid port") from None
    host = parts.hostname.lower()
    if ":" in host:  # an IPv6 address keeps its brackets
        host = f"[{host}]"
    return (
        f"{scheme}://{host}"
        if port in (None, DEFAULT_PORTS[scheme])
        else f"{scheme}://{host}:{port}"
    )


def _origins(text: str) -> tuple[str, ...]:
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise ValueError("expected comma-separated origins, e.g. https://app.example.com")
    return tuple(dict.fromkeys(normalize_origin(item) for item in items))


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(text: str) -> tuple[IPNetwork, ...]:
    try:
        return tuple(ipaddress.ip_network(item.strip()) for item in text.split(","))
    except ValueError:
        raise ValueError(
            "expected comma-separated addresses or networks, e.g. 10.0.0.1,192.168.0.0/16"
        ) from None


def _node_name(text: str) -> str:
    if not 0 < len(text) <= 128 or not text.isprintable():
        raise ValueError("must be 1 to 128 printable characters")
    return text


def _algorithm(text: str) -> str:
    if text not in ("HS256", "RS256", "ES256"):
        raise ValueError("expected HS256, RS256 or ES256")
    return text


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("expected debug, info, warning or error")
    return level


def _switch(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "on", "yes"):
        return True
    if value in ("0", "false", "off", "no"):
        return False
    raise ValueError("expected on or off (or true/false, 1/0)")


def _log_format(text: str) -> str:
    if text.lower() not in ("text", "json"):
        raise ValueError("expected text or json")
    return text.lower()


def _user_ids(text: str) -> tuple[str, ...]:
    items = [item.strip() for item in text.split(",")]
    if not all(is_valid_identifier(item) for item in items):
        raise ValueError(f"expected comma-separated user ids, each matching {IDENTIFIER}")
    return tuple(dict.fromkeys(items))


def _path(text: str) -> Path:
    return Path(text)


def _env(
    name: str, parse: Callable[[str], Any] = str, default: Any = None, *, secret: bool = False
) -> Any:
    """Field metadata: which variable fills a setting and how its text is parsed."""
    return field(default=default, metadata={"env": name, "parse": parse, "secret": secret})


@dataclass(frozen=True)
class Settings:
    host: str = _env("SINAL_HOST", str, "127.0.0.1")
    port: int = _env("SINAL_PORT", parse_port, 8000)
    database_url: str = _env("SINAL_DATABASE_URL", _database_url, "sqlite:///./sinal.db")
    redis_url: str | None = _env("SINAL_REDIS_URL", _redis_url, None)
    # Replicas that must hold a publish before it is acknowledged (Redis `WAIT`), and how long
    # to wait for them: see docs/deployment.md, "Replication and acknowledged events".
    redis_wait_replicas: int = _env("SINAL_REDIS_WAIT_REPLICAS", _non_negative_int, 0)
    redis_wait_ms: float = _env("SINAL_REDIS_WAIT_MS", _positive_float, 100.0)
    jwt_secret: str | None = _env("SINAL_JWT_SECRET", str, None, secret=True)
    jwt_algorithm: str = _env("SINAL_JWT_ALGORITHM", _algorithm, "HS256")
    jwt_public_key_file: Path | None = _env("SINAL_JWT_PUBLIC_KEY_FILE", _path, None)
    jwt_issuer: str | None = _env("SINAL_JWT_ISSUER", str, None)
    jwt_audience: str | None = _env("SINAL_JWT_AUDIENCE", str, None)
    ticket_secret: str | None = _env("SINAL_TICKET_SECRET", str, None, secret=True)
    ticket_ttl_s: int = _env("SINAL_TICKET_TTL", _positive_int, 60)
    # A connection ends this long after the credential that opened it expired.
    auth_grace_s: float = _env("SINAL_AUTH_GRACE", _non_negative_float, 30.0)
    dev_secret_file: Path = _env("SINAL_DEV_SECRET_FILE", _path, Path(".sinal-dev-secret"))
    heartbeat_s: float = _env("SINAL_HEARTBEAT_INTERVAL", _positive_float, 15.0)
    retry_ms: int = _env("SINAL_RETRY_MS", _positive_int, 2000)
    buffer_size: int = _env("SINAL_BUFFER_SIZE", _positive_int, 1024)
    coalesce_ms: float = _env("SINAL_COALESCE_MS", _non_negative_float, 5.0)
    max_channels: int = _env("SINAL_MAX_CHANNELS", _positive_int, 16)
    max_payload_bytes: int = _env("SINAL_MAX_PAYLOAD_BYTES", _positive_int, 65536)
    stream_max_len: int = _env("SINAL_STREAM_MAX_LEN", _positive_int, 10_000)
    stream_max_age_s: float = _env("SINAL_STREAM_MAX_AGE", _non_negative_float, 86400.0)
    notification_retention_days: float = _env(
        "SINAL_NOTIFICATION_RETENTION_DAYS", _non_negative_float, 90.0
    )
    audit_retention_days: float = _env("SINAL_AUDIT_RETENTION_DAYS", _non_negative_float, 365.0)
    purge_interval_s: float = _env("SINAL_PURGE_INTERVAL", _positive_float, 3600.0)
    progress_interval_ms: float = _env("SINAL_PROGRESS_INTERVAL_MS", _non_negative_float, 100.0)
    command_ack_timeout_s: float = _env("SINAL_COMMAND_ACK_TIMEOUT", _positive_float, 30.0)
    actions_rate: float = _env("SINAL_ACTIONS_RATE", _positive_float, 20.0)
    actions_burst: int = _env("SINAL_ACTIONS_BURST", _positive_int, 40)
    actions_idle_timeout_s: float = _env("SINAL_ACTIONS_IDLE_TIMEOUT", _positive_float, 300.0)
    log_level: str = _env("SINAL_LOG_LEVEL", _log_level, "INFO")
    log_format: str = _env("SINAL_LOG_FORMAT", _log_format, "text")
    # Access lines per second written in full; above, one request in k is logged (0: all).
    access_log_sample_above: int = _env("SINAL_ACCESS_LOG_SAMPLE_ABOVE", _non_negative_int, 100)
    # Unset: a cookie-authenticated request must come from the origin it was sent to.
    allowed_origins: tuple[str, ...] | None = _env("SINAL_ALLOWED_ORIGINS", _origins, None)
    header_timeout_s: float = _env("SINAL_HEADER_TIMEOUT", _positive_float, 10.0)
    body_timeout_s: float = _env("SINAL_BODY_TIMEOUT", _positive_float, 30.0)
    # Unset: 50,000, or fewer where the open-file limit allows fewer (`api.connections`).
    max_connections: int | None = _env("SINAL_MAX_CONNECTIONS", _positive_int, None)
    # Stream and action-socket handshakes in progress at once; past it they queue briefly, then
    # get 503 (streams/admission.py). 0: no bound.
    max_handshakes: int = _env("SINAL_MAX_HANDSHAKES", _non_negative_int, 100)
    # The longest `exp - iat` a token may have; a revocation of a user's tokens is kept as long.
    max_token_lifetime_s: int = _env("SINAL_MAX_TOKEN_LIFETIME", _positive_int, 30 * 86400)
    # Unset: host:port.
    node_name: str | None = _env("SINAL_NODE_NAME", _node_name, None)
    node_heartbeat_s: float = _env("SINAL_NODE_HEARTBEAT", _positive_float, 2.0)
    survey_timeout_s: float = _env("SINAL_SURVEY_TIMEOUT", _positive_float, 1.0)
    # Addresses of proxies whose `X-Forwarded-For` is believed (connection listings).
    trusted_proxies: tuple[IPNetwork, ...] = _env("SINAL_TRUSTED_PROXIES", _networks, ())
    # `/metrics` and the sampled histograms; off, the data path measures nothing.
    metrics: bool = _env("SINAL_METRICS", _switch, True)
    # When set, `/metrics` wants it as a bearer token.
    metrics_token: str | None = _env("SINAL_METRICS_TOKEN", str, None, secret=True)
    # One delivery in this many has its lag measured.
    metrics_sample: int = _env("SINAL_METRICS_SAMPLE", _positive_int, 64)
    # Users who receive the in-app alerts besides the administrators seen on the admin API.
    alert_recipients: tuple[str, ...] = _env("SINAL_ALERT_RECIPIENTS", _user_ids, ())

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for spec in fields(cls):
            name = spec.metadata["env"]
            text = environ.get(name)
            if text is None or text == "":
                continue
            try:
                values[spec.name] = spec.metadata["parse"](text.strip())
            except ValueError as error:
                shown = "(hidden)" if spec.metadata["secret"] else repr(text)
                raise SettingsError(name, f"{error} (got {shown})") from None
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        if self.jwt_algorithm == "HS256" and self.jwt_public_key_file is not None:
            raise SettingsError(
                "SINAL_JWT_PUBLIC_KEY_FILE", "needs SINAL_JWT_ALGORITHM=RS256 or ES256"
            )
        if self.jwt_algorithm != "HS256":
            if self.jwt_public_key_file is None:
                raise SettingsError(
                    "SINAL_JWT_PUBLIC_KEY_FILE", f"required with {self.jwt_algorithm}"
                )
            if not self.jwt_public_key_file.is_file():
                raise SettingsError(
                    "SINAL_JWT_PUBLIC_KEY_FILE", f"no such file: {self.jwt_public_key_file}"
                )
            self._check_public_key(self.jwt_public_key_file)
            if self.ticket_secret is None:
                raise SettingsError(
                    "SINAL_TICKET_SECRET",
                    f"required with {self.jwt_algorithm} (signs tickets)",
                )
        if self.jwt_secret is not None and len(self.jwt_secret) < 32:
            raise SettingsError(
                "SINAL_JWT_SECRET", "must be at least 32 characters (HS256 key length)"
            )
        if self.ticket_secret is not None and len(self.ticket_secret) < 32:
            raise SettingsError(
                "SINAL_TICKET_SECRET", "must be at least 32 characters (HS256 key length)"
            )

    def _check_public_key(self, path: Path) -> None:
        """The key must load now: a bad one would otherwise fail every request (a private key
        even with a 500, since it cannot verify)."""
        try:
            key = jwt.get_algorithm_by_name(self.jwt_algorithm).prepare_key(path.read_text())
        except (OSError, UnicodeDecodeError, jwt.PyJWTError) as error:
            raise SettingsError(
                "SINAL_JWT_PUBLIC_KEY_FILE",
                f"{path} holds no {self.jwt_algorithm} public key in PEM ({error})",
            ) from None
        if not isinstance(key, RSAPublicKey | EllipticCurvePublicKey):
            raise SettingsError(
                "SINAL_JWT_PUBLIC_KEY_FILE", f"{path} holds a private key; give the public key"
            )

    def with_dev_secret(self) -> tuple[Settings, bool]:
        """Fill in a development JWT secret kept in `dev_secret_file`, creating it if needed.

        Returns the settings and whether the file was created just now.
        """
        if self.jwt_secret is not None or self.jwt_algorithm != "HS256":
            return self, False
        path = self.dev_secret_file
        try:
            secret, created = _read_or_create_secret(path)
        except OSError as error:
            raise SettingsError("SINAL_DEV_SECRET_FILE", f"cannot use {path}: {error}") from None
        if len(secret) < 16:
            raise SettingsError("SINAL_DEV_SECRET_FILE", f"{path} holds no usable secret")
        return replace(self, jwt_secret=secret), created

    def dev_secret_in_use(self) -> bool:
        """Whether the JWT secret is the development one kept in `dev_secret_file`."""
        if self.jwt_secret is None or self.jwt_algorithm != "HS256":
            return False
        try:
            return self.dev_secret_file.read_text().strip() == self.jwt_secret
        except (OSError, UnicodeDecodeError):
            return False

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, value, default) rows for docs and `sinal config`; secrets are hidden."""
        rows = []
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.metadata["secret"] and value:
                shown = "(set)"
            elif isinstance(value, tuple):
                shown = ",".join(str(item) for item in value)
            else:
                shown = redact_url(str(value))
            rows.append((spec.metadata["env"], shown, str(spec.default)))
        return rows


def _read_or_create_secret(path: Path) -> tuple[str, bool]:
    try:
        # Readable by the owner only from the start, and created exclusively: `sinal serve` and
        # `sinal token` starting together must not end up with two different secrets.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip(), False
    with os.fdopen(fd, "w") as file:
        secret = secrets.token_urlsafe(32)
        file.write(secret + "\n")
    return secret, True

"""Logging for `sinal serve`: one handler for every logger, and no secret in any line.

Uvicorn logs the WebSocket handshake's path with its query (`?ticket=`), and at `debug` its
headers one by one (`authorization`, `cookie`); the access log (`api/requests.py`) has queries
too. Rather than filter each logger that may say such things, every record goes through one
handler whose formatter redacts what it writes: the message, its arguments and any traceback
alike, whichever library wrote it; in JSON, every string value.

Two formats (`SINAL_LOG_FORMAT`): `text`, a line per record for people, and `json`, one JSON
object per line for log shippers. A record written while a request is handled carries that
request's id, method, route and caller (`RequestContext`), in both.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any
from urllib.parse import unquote_plus

from api import requests

REDACTED = "[redacted]"
SECRET_PARAMS = frozenset({"ticket", "token", "access_token"})
FORMAT = "%(levelname)s %(name)s: %(message)s"
# What a record may carry besides its message (`RequestContext`, the access log), in the order
# JSON lines list them; the text format appends the request id and the caller.
FIELDS = ("request_id", "method", "route", "status", "duration_ms", "sub", "sampled")
TEXT_FIELDS = ("request_id", "sub", "sampled")

_QUERY_PARAM = re.compile(r"([?&;])([^=&;\s]*)=([^&;\s'\"]*)")
# A header's value, as a handshake line (`< cookie: ...`), an ASGI header pair
# (`(b'cookie', b'...')`) or a mapping (`'cookie': '...'`).
_SECRET_HEADER = re.compile(
    r"""(?ix)
    \b(authorization|proxy-authorization|cookie|set-cookie)
    (\s*:\s*|['"]?,\s*b?['"]|['"]\s*:\s*b?['"])
    ([^'"\r\n]*)
    """
)
# Any JWT (tokens and tickets are JWTs): three base64url parts, the first a JSON object's.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
# The cookie's value on its own, in case it is no JWT.
_COOKIE_VALUE = re.compile(r"(sinal_token=)[^;\s'\"]*")


def redact(text: str) -> str:
    """`text` without credentials: secret query parameters (however their names are
    percent-encoded), credential headers, the cookie's value and anything shaped like a JWT."""

    # Each pattern needs one of these: most lines (and JSON values) have none, and skip them.
    if "=" not in text and ":" not in text and "," not in text and "eyJ" not in text:
        return text

    def hide_param(match: re.Match[str]) -> str:
        if unquote_plus(match.group(2)).lower() in SECRET_PARAMS:
            return f"{match.group(1)}{match.group(2)}={REDACTED}"
        return match.group(0)

    text = _QUERY_PARAM.sub(hide_param, text)
    text = _SECRET_HEADER.sub(lambda match: f"{match.group(1)}{match.group(2)}{REDACTED}", text)
    text = _COOKIE_VALUE.sub(rf"\1{REDACTED}", text)
    return _JWT.sub(REDACTED, text)


class RedactingFormatter(logging.Formatter):
    """`level logger: message`, then `request_id=… sub=…` (and a sampled access line's
    `sampled=k`) when the record has them, then any traceback; all of it redacted."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        context = [
            f"{name}={value}"
            for name in TEXT_FIELDS
            if (value := getattr(record, name, None)) is not None
        ]
        return f"{line} {' '.join(context)}" if context else line

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: `time` (UTC, milliseconds), `level`, `logger`,
    `message`, the request's fields when known (`FIELDS`), and `exc` (the traceback) or
    `stack`. Every string in it is redacted."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, Any] = {
            "time": f"{seconds}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = redact(value) if isinstance(value, str) else value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = redact(record.exc_text)
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(line)


class RequestContext(logging.Filter):
    """Gives a record written while a request is handled the request's id, method, route (once
    routed) and caller (once authenticated)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exchange = requests.current()
        if exchange is not None:
            record.request_id = exchange.request_id
            record.method = exchange.method
            record.route = exchange.route_template()
            record.sub = exchange.sub
        return True


class QuietDenials(logging.Filter):
    """Drop the error uvicorn's websockets-sansio protocol logs after every upgrade refused with
    an HTTP response (the `websocket.http.response` extension), though the refusal went out as
    it should: https://github.com/Kludex/uvicorn/pull/3138. `/v1/actions` refuses bad credentials
    that way, and nothing else in this app returns from a WebSocket without an answer."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "ASGI callable returned without completing handshake."


def configure(level: str, format: str = "text") -> None:
    """Every logger, uvicorn's included (`uvicorn.Config(log_config=None)`), writes through
    one redacting handler on the root logger, to standard error, in `format` (`text`, `json`).
    Python's warnings too: in JSON, a line of another shape would trouble the log shipper."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if format == "json" else RedactingFormatter(FORMAT))
    handler.addFilter(RequestContext())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.captureWarnings(True)
    logging.getLogger("uvicorn.error").addFilter(QuietDenials())
    # Piccolo announces the SQLite version at every engine it builds: noise in service logs.
    logging.getLogger("piccolo").setLevel(max(logging.WARNING, logging.getLevelName(level)))

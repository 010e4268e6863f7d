"""Logging for `sinal serve`: one handler for every logger, and no secret in any line.

Uvicorn logs request lines with their query (`?ticket=`), and at `debug` the WebSocket handshake
header by header (`authorization`, `cookie`). Rather than filter each logger that may say such
things, every record goes through one handler whose formatter redacts the finished line: the
message, its arguments and any traceback alike, whichever library wrote it.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

REDACTED = "[redacted]"
SECRET_PARAMS = frozenset({"ticket", "token", "access_token"})
FORMAT = "%(levelname)s %(name)s: %(message)s"

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

    def hide_param(match: re.Match[str]) -> str:
        if unquote_plus(match.group(2)).lower() in SECRET_PARAMS:
            return f"{match.group(1)}{match.group(2)}={REDACTED}"
        return match.group(0)

    text = _QUERY_PARAM.sub(hide_param, text)
    text = _SECRET_HEADER.sub(lambda match: f"{match.group(1)}{match.group(2)}{REDACTED}", text)
    text = _COOKIE_VALUE.sub(rf"\1{REDACTED}", text)
    return _JWT.sub(REDACTED, text)


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class QuietDenials(logging.Filter):
    """Drop the error uvicorn's websockets-sansio protocol logs after every upgrade refused with
    an HTTP response (the `websocket.http.response` extension), though the refusal went out as
    it should: https://github.com/Kludex/uvicorn/pull/3138. `/v1/actions` refuses bad credentials
    that way, and nothing else in this app returns from a WebSocket without an answer."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "ASGI callable returned without completing handshake."


def configure(level: str) -> None:
    """Every logger, uvicorn's included (`uvicorn.Config(log_config=None)`), writes through
    one redacting handler on the root logger, to standard error."""
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter(FORMAT))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("uvicorn.error").addFilter(QuietDenials())
    # Piccolo announces the SQLite version at every engine it builds: noise in service logs.
    logging.getLogger("piccolo").setLevel(max(logging.WARNING, logging.getLevelName(level)))

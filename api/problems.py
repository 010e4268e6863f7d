"""The one place where errors become RFC 9457 `application/problem+json` responses."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.types import Send

from api.requests import response_start
from api.transport import send_response
from db.engine import UNAVAILABLE_DATABASE, note_database_error
from streams.errors import SinalError

log = logging.getLogger("sinal.api")

PROBLEM_JSON = "application/problem+json"

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    408: "Request timeout",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}


def problem(status: int, detail: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    body.update({key: value for key, value in extra.items() if value is not None})
    return body


def problem_of(error: SinalError) -> dict[str, Any]:
    return problem(error.status, error.detail, field=error.field, **error.extra)


def headers_of(error: SinalError) -> dict[str, str]:
    """The headers that go with the problem of `error`: how to authenticate, when to retry."""
    if error.retry_after_s is not None:
        return {"Retry-After": str(error.retry_after_s)}
    if error.status == 401:
        return {"WWW-Authenticate": "Bearer"}
    return {}


def render(error: Exception, where: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The problem body and headers for any error, wherever it is answered: Litestar's
    responses, the SSE handler's and the action WebSocket's replies. `where` (a method and
    path, or an action) goes to the log when the error is not the caller's."""
    if isinstance(error, SinalError):
        return problem_of(error), headers_of(error)
    if isinstance(error, ValidationException):
        errors = error.extra if isinstance(error.extra, list) else []
        field = next((item.get("key") for item in errors if isinstance(item, dict)), None)
        detail = "; ".join(
            f"{item.get('key') or 'body'}: {item.get('message')}"
            for item in errors
            if isinstance(item, dict)
        )
        return problem(400, detail or error.detail, field=field), {}
    if isinstance(error, HTTPException):
        return problem(error.status_code, error.detail), dict(error.headers or {})
    if isinstance(error, UNAVAILABLE_DATABASE):
        # The database is down or locked up: worth a retry, not a 500.
        note_database_error()
        log.warning("database error on %s: %s", where, error)
        return problem(503, "the database is unavailable; retry shortly"), {"Retry-After": "1"}
    log.error("unhandled error on %s", where, exc_info=error)
    return problem(500, "an unexpected error occurred; it has been logged"), {}


def encode_problem(body: dict[str, Any]) -> bytes:
    return msgspec.json.encode(body)


async def send_problem(
    send: Send, details: dict[str, Any], extra_headers: Mapping[str, str] | None = None
) -> None:
    """Answer with a problem, from a handler that writes its own response (`render` gives
    `details` and the headers)."""
    body = encode_problem(details)
    headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
        *((name.lower().encode(), value.encode()) for name, value in (extra_headers or {}).items()),
    ]
    await send_response(send, response_start(details["status"], headers), body)


def handle_error(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    body, headers = render(error, f"{request.method} {request.url.path}")
    return Response(
        content=body, status_code=body["status"], media_type=PROBLEM_JSON, headers=headers or None
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {Exception: handle_error}

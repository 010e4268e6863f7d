"""One exception hierarchy for Sinal; `api.problems` maps it to RFC 9457 responses.

The classes carry an HTTP status as a plain number so that the framework-free core can say
*what kind* of failure happened without knowing about any web framework.
"""

from __future__ import annotations

from collections.abc import Mapping


class SinalError(Exception):
    """Base of every error Sinal reports to a caller."""

    status = 500
    title = "Internal error"
    # Seconds after which a retry may succeed, for the `Retry-After` header (None: no header).
    retry_after_s: int | None = None

    def __init__(
        self, detail: str, *, field: str | None = None, extra: Mapping[str, object] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.extra = dict(extra or {})  # more members of the problem, e.g. what a conflict expected


class BadRequest(SinalError):
    status = 400
    title = "Bad request"


class Unauthorized(SinalError):
    status = 401
    title = "Unauthorized"


class Forbidden(SinalError):
    status = 403
    title = "Forbidden"


class NotFound(SinalError):
    status = 404
    title = "Not found"


class Conflict(SinalError):
    status = 409
    title = "Conflict"


class Unprocessable(SinalError):
    """Well-formed, but not acceptable: e.g. an idempotency key reused for another request."""

    status = 422
    title = "Unprocessable content"


class PayloadTooLarge(SinalError):
    status = 413
    title = "Payload too large"


class UnsupportedMediaType(SinalError):
    status = 415
    title = "Unsupported media type"


class TooManyRequests(SinalError):
    """A runtime limit (streams/admission.py) refused the request for now."""

    status = 429
    title = "Too many requests"

    def __init__(self, detail: str, *, retry_after_s: int, field: str | None = None) -> None:
        super().__init__(detail, field=field, extra={"retry_after": retry_after_s})
        self.retry_after_s = retry_after_s


class Unavailable(SinalError):
    status = 503
    title = "Service unavailable"
    # What is unavailable (the engine, the database, a draining process) comes back or moves
    # quickly.
    retry_after_s: int | None = 1

    def __init__(
        self,
        detail: str,
        *,
        field: str | None = None,
        extra: Mapping[str, object] | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        super().__init__(detail, field=field, extra=extra)
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s

"""`POST /v1/auth/ticket`: a short-lived credential for `?ticket=` on stream endpoints.

`EventSource` cannot send an `Authorization` header; a ticket in the URL is the alternative to a
cookie. It expires quickly, never after the token it was minted from, works only on GET stream
endpoints and is never logged. A connection opened with it ends when that token expires.
"""

from __future__ import annotations

import msgspec
from litestar import post

from api.runtime import Runtime
from streams.access import Principal


class TicketResponse(msgspec.Struct):
    ticket: str
    expires_in: int


@post("/v1/auth/ticket", status_code=200, summary="Get a stream ticket", tags=["auth"])
async def issue_ticket(runtime: Runtime, principal: Principal) -> TicketResponse:
    """`expires_in` is the ticket's true lifetime: `SINAL_TICKET_TTL`, or less when the token
    expires sooner (a ticket never outlives its token)."""
    ticket, expires_in = runtime.auth.issue_ticket(principal)
    return TicketResponse(ticket=ticket, expires_in=expires_in)

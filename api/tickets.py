"""`POST /v1/auth/ticket`: a short-lived credential for `?ticket=` on stream endpoints.

`EventSource` cannot send an `Authorization` header; a ticket in the URL is the alternative to a
cookie. It expires quickly, works only on GET stream endpoints and is never logged.
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
    return TicketResponse(
        ticket=runtime.auth.issue_ticket(principal), expires_in=runtime.settings.ticket_ttl_s
    )

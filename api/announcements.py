"""`GET /v1/announcements`: what administrators announced to everyone and is still in force.

Pages show these as banners (docs/user-guide.md); new ones also arrive live on `broadcast`, so a
page reads this list once when it opens and a user who was offline sees what was announced.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import get

from api.runtime import Runtime
from db import announcements
from streams.access import Principal


class Announcements(msgspec.Struct):
    announcements: list[dict[str, Any]]  # newest first


@get("/v1/announcements", summary="Announcements in force, newest first", tags=["notifications"])
async def list_announcements(runtime: Runtime, principal: Principal) -> Announcements:
    del principal  # any signed-in user
    found = await announcements.active(runtime.database)
    return Announcements([announcement.view() for announcement in found])

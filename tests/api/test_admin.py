"""`/v1/admin/…`: what the admin routes refuse, and how (the fuzzing of all of them against
the OpenAPI document is `loadtests/fuzz.py`)."""

from __future__ import annotations

import httpx
import pytest

from tests.support import ADMIN, ServerProcess, assert_problem

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("raw", [b'{"actions_rate": "\xff"}', b"\xff\xfe"])
async def test_limits_body_that_is_not_utf8_is_400(
    memory_server: ServerProcess, raw: bytes
) -> None:
    """Regression: `PUT /v1/admin/limits` decoded its body without the UTF-8 check every other
    body gets, and msgspec's UnicodeDecodeError ended as a 500."""
    headers = {**ADMIN, "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=memory_server.url, timeout=10) as client:
        response = await client.put("/v1/admin/limits", content=raw, headers=headers)
        assert "UTF-8" in assert_problem(response, 400)["detail"]
        # and nothing was changed
        limits = await client.get("/v1/admin/limits", headers=ADMIN)
    assert limits.json()["actions_rate"] == 20.0

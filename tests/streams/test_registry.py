"""The connection registry of one process (`streams/registry.py`)."""

from __future__ import annotations

import pytest

from streams.access import Principal
from streams.disconnect import DisconnectReason
from streams.errors import BadRequest
from streams.registry import Filter, Registry, decode_key, encode_key


class Fake:
    def __init__(self) -> None:
        self.ended: list[DisconnectReason] = []

    def disconnect(self, reason: DisconnectReason, retry_after: float | None = None) -> None:
        self.ended.append(reason)

    def figures(self) -> tuple[int, str | None, int]:
        return 3, "1.abc", 0

    def ended_by(self) -> str | None:
        return self.ended[0] if self.ended else None


def test_connections_are_listed_by_user_filtered_and_paged() -> None:
    registry = Registry("n1")
    handles = {user: Fake() for user in ("bob", "ann", "bea")}
    with (
        registry.opened(Principal("bob"), "sse", ["notifications:bob"], handles["bob"]) as bob,
        registry.opened(Principal("ann"), "ws", [], handles["ann"], user_agent="x" * 999),
        registry.opened(Principal("bea"), "longpoll", ["broadcast"], handles["bea"]),
    ):
        assert registry.counts() == {"sse": 1, "longpoll": 1, "ws": 1}
        found, more = registry.find(Filter(), 2)
        assert ([c.user for c in found], more) == (["ann", "bea"], True)
        rest, more = registry.find(Filter(after=found[-1].key()), 2)
        assert ([c.user for c in rest], more) == (["bob"], False)
        assert [c.user for c in registry.find(Filter(prefix="b"), 10)[0]] == ["bea", "bob"]
        assert [c.user for c in registry.find(Filter(transport="ws"), 10)[0]] == ["ann"]
        assert [c.user for c in registry.find(Filter(channel="broadcast"), 10)[0]] == ["bea"]
        view = bob.view()
        assert (view["id"], view["node"], view["delivered"], view["cursor"]) == (
            "n1-1",
            "n1",
            3,
            "1.abc",
        )
        assert len(registry.get("n1-2").view()["user_agent"]) == 256  # type: ignore[union-attr]
        assert registry.disconnect("n1-1", "kicked")
        assert not registry.disconnect("n1-9", "kicked")
        assert registry.disconnect_user("bea", "revoked") == 1
        assert handles["bob"].ended == ["kicked"]
        assert handles["bea"].ended == ["revoked"]
    assert len(registry) == 0
    assert registry.counts() == {"sse": 0, "longpoll": 0, "ws": 0}
    assert registry.of_user("bob") == []
    # Counted for `/metrics`: opened by transport, closed by transport and why.
    assert registry.opened_total == {"sse": 1, "longpoll": 1, "ws": 1}
    assert registry.closed_total == {
        ("sse", "kicked"): 1,
        ("longpoll", "revoked"): 1,
        ("ws", "disconnect"): 1,
    }


def test_a_listing_cursor_is_checked() -> None:
    assert decode_key(encode_key(("ann", "n1-7"))) == ("ann", "n1-7")
    for bad in ("x", encode_key(("a", "b"))[:-2] + "!!", "WzFd"):
        with pytest.raises(BadRequest):
            decode_key(bad)

"""Cursors: opaque, URL-safe, versioned; anything this server did not issue is refused."""

from __future__ import annotations

import base64
import re
from urllib.parse import quote

import pytest

from streams.cursor import (
    MAX_CURSOR_LENGTH,
    ORIGIN,
    InvalidCursor,
    Position,
    decode_cursor,
    encode_cursor,
)
from streams.event import Event

POSITIONS = {
    "notifications:alice": Position("a1b2c3d4", (1700000000000, 0)),
    "broadcast": Position("a1b2c3d4", (1700000000123, 7)),
    "execution:run_42.b@x-y": Position("0f0f0f0f", (1, 2**64 - 1)),
    "execution:fresh": ORIGIN,  # a stream that did not exist yet
}


def cursor_of(positions: dict[str, Position]) -> str:
    return encode_cursor([position.segment(channel) for channel, position in positions.items()])


def segment(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_round_trip_keeps_every_channel_in_order() -> None:
    decoded = decode_cursor(cursor_of(POSITIONS))
    assert decoded == POSITIONS
    assert list(decoded) == list(POSITIONS)


def test_a_cursor_of_the_admin_channel_is_read() -> None:
    """The cursors of a stream that carried `admin` (the admin page's) were refused as
    malformed: each reconnection reset all its channels `invalid`, and the long-poll answered
    400."""
    positions = {**POSITIONS, "admin": Position("a1b2c3d4", (1700000000000, 3))}
    assert decode_cursor(cursor_of(positions)) == positions


def test_one_channel_round_trip() -> None:
    position = Position("e", (5, 6))
    assert decode_cursor(encode_cursor([position.segment("broadcast")])) == {"broadcast": position}


def test_cursor_is_versioned() -> None:
    assert cursor_of(POSITIONS).startswith("1.")


def test_cursor_is_url_safe() -> None:
    cursor = cursor_of(POSITIONS)
    assert re.fullmatch(r"[A-Za-z0-9_.\-]+", cursor)
    assert quote(cursor, safe="") == cursor
    assert "=" not in cursor


def test_event_segment_is_its_position_segment() -> None:
    """Connections rebuild cursors by joining segments: an event's must equal its position's."""
    event = Event("broadcast", "broadcast", b"{}", "a1b2c3d4", (1700000000000, 3))
    assert event.segment == Position("a1b2c3d4", (1700000000000, 3)).segment("broadcast")
    assert decode_cursor(encode_cursor([event.segment])) == {
        "broadcast": Position(event.epoch, event.offset)
    }


@pytest.mark.parametrize(
    "text",
    ["", "1", "1.", "2." + segment(b"broadcast\ne\n1-0"), "v1." + segment(b"broadcast\ne\n1-0")],
)
def test_unknown_version_is_refused(text: str) -> None:
    with pytest.raises(InvalidCursor, match="version"):
        decode_cursor(text)


VALID = segment(b"broadcast\ne\n1-0")


@pytest.mark.parametrize(
    "segments",
    [
        ["a"],  # not base64 (a lone sixth of a byte)
        ["%%%"],
        ["", VALID],
        [VALID, ""],
        [segment(b"broadcast\ne")],  # too few parts
        [segment(b"broadcast\ne\n1-0\nextra")],  # too many
        [segment(b"foo\ne\n1-0")],  # unknown channel
        [segment(b"notifications:al ice\ne\n1-0")],
        [segment(b"broadcast\n" + b"e" * 65 + b"\n1-0")],  # epoch too long
        [segment(b"broadcast\ne\n1")],  # offsets
        [segment(b"broadcast\ne\n1-x")],
        [segment(b"broadcast\ne\n-1-0")],
        [segment(b"broadcast\ne\n1-0-0")],
        [segment(b"broadcast\ne\n1.5-0")],
        [segment(b"broadcast\ne\n" + b"9" * 40 + b"-0")],
        [segment(b"broadcast\xff\ne\n1-0")],  # not UTF-8
        [VALID, segment(b"nonsense")],  # one bad segment spoils the cursor
    ],
)
def test_malformed_segment_is_refused(segments: list[str]) -> None:
    with pytest.raises(InvalidCursor, match="malformed"):
        decode_cursor("1." + ".".join(segments))


@pytest.mark.parametrize("offset", [b"18446744073709551616-0", b"0-18446744073709551616"])
def test_offset_beyond_64_bits_is_refused(offset: bytes) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor("1." + segment(b"broadcast\ne\n" + offset))


def test_too_long_is_refused_before_decoding() -> None:
    channels = {f"execution:{n:0128d}": Position("e", (1, 1)) for n in range(60)}
    text = cursor_of(channels)
    assert len(text) > MAX_CURSOR_LENGTH
    with pytest.raises(InvalidCursor, match="too long"):
        decode_cursor(text)


def test_longest_cursor_of_max_channels_fits() -> None:
    """Sixteen channels with the longest names, epochs and offsets stay under the limit."""
    channels = {
        f"execution:{n:0128d}": Position("e" * 64, (2**64 - 1, 2**64 - 1)) for n in range(16)
    }
    text = cursor_of(channels)
    assert len(text) <= MAX_CURSOR_LENGTH
    assert decode_cursor(text) == channels

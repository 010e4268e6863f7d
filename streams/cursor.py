"""Cursors: opaque, URL-safe, versioned positions across every channel of one connection.

A cursor is `1.` followed by one segment per channel, joined with `.`. A segment is the unpadded
base64url encoding of `<channel>\\n<epoch>\\n<ms>-<seq>`. `.` never occurs in base64url, so the
format needs no escaping, and a connection can rebuild its cursor by joining segments it already
holds: only the segment of the channel an event belongs to changes (computed once per event).

An empty epoch means "the stream did not exist when this position was taken": everything the
stream holds now comes after it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from streams.channels import ADMIN, is_valid_channel
from streams.event import StreamId, encode_segment, parse_stream_id

VERSION = "1"
MAX_CURSOR_LENGTH = 8192


@dataclass(frozen=True, slots=True)
class Position:
    epoch: str
    offset: StreamId

    def segment(self, channel: str) -> str:
        return encode_segment(channel, self.epoch, self.offset)


ORIGIN = Position("", (0, 0))


class InvalidCursor(ValueError):
    """The text is not a cursor this server issued."""


def encode_cursor(segments: list[str]) -> str:
    return VERSION + "." + ".".join(segments)


def decode_cursor(text: str) -> dict[str, Position]:
    """Positions by channel; raises InvalidCursor for anything malformed."""
    if len(text) > MAX_CURSOR_LENGTH:
        raise InvalidCursor("cursor is too long")
    version, _, rest = text.partition(".")
    if version != VERSION or not rest:
        raise InvalidCursor("unknown cursor version")
    positions: dict[str, Position] = {}
    for segment in rest.split("."):
        try:
            raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)).decode()
            channel, epoch, offset = raw.split("\n")
            position = Position(epoch, parse_stream_id(offset))
        except (binascii.Error, UnicodeDecodeError, ValueError) as error:
            raise InvalidCursor("malformed cursor segment") from error
        # `admin` is no channel one publishes to, but streams carry it (the admin page's).
        if not (is_valid_channel(channel) or channel == ADMIN) or len(epoch) > 64:
            raise InvalidCursor("malformed cursor segment")
        positions[channel] = position
    return positions

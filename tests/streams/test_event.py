"""The SSE wire format: pure functions from data to bytes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sse_starlette.event import ServerSentEvent

from streams.event import (
    Event,
    Placed,
    encode_comment,
    encode_control,
    encode_retry,
    format_stream_id,
    id_line,
    iso_ms,
    parse_stream_id,
)

MS = 1700000000000  # 2023-11-14T22:13:20.000Z


def event(data_json: bytes, type: str = "notification.created") -> Event:
    return Event("notifications:alice", type, data_json, "a1b2c3d4", (MS, 3))


def lines(frame: bytes) -> list[str]:
    """The field lines of one frame, which must end with exactly one blank line."""
    text = frame.decode()
    assert text.endswith("\n\n")
    assert not text.endswith("\n\n\n")
    return text[:-2].split("\n")


def test_event_frame_bytes() -> None:
    assert event(b'{"n":1}').frame == (
        b"event: notification.created\n"
        b'data: {"channel":"notifications:alice","type":"notification.created",'
        b'"data":{"n":1},"ts":"2023-11-14T22:13:20.000Z"}\n\n'
    )


def test_event_frame_has_no_id_line() -> None:
    """The `id:` line is the connection's cursor: each connection prepends its own."""
    assert not any(line.startswith("id:") for line in lines(event(b"{}").frame))


@pytest.mark.parametrize(
    "data",
    [
        "two\nlines",
        "crlf\r\nand cr\r",
        "\n\n\nleading blank lines",
        "data: looks like a field\n\nevent: reset",
        "unicode line separators \u2028 \u2029 \x85",
        {"nested": ["a\nb", {"c": "d\re"}]},
    ],
)
def test_payload_with_line_breaks_stays_one_data_line(data: object) -> None:
    frame = event(json.dumps(data).encode()).frame
    event_line, data_line = lines(frame)
    assert event_line == "event: notification.created"
    assert data_line.startswith("data: ")
    assert json.loads(data_line.removeprefix("data: "))["data"] == data


@pytest.mark.parametrize(
    "raw",
    [
        b'{"n":1}',
        b'"caf\xc3\xa9 \xe2\x80\xa8 separator"',  # U+2028 raw: not a line break in SSE
        b"[1,\n2]",  # stored before whitespace was stripped: split as the encoder splits it
        b'{"a":\r\n1,\r"b":2}',
    ],
)
def test_event_frame_is_what_the_sse_encoder_writes(raw: bytes) -> None:
    """The frame is joined by hand (it is built once per event delivered): it must be the
    encoder's output, byte for byte."""
    item = event(raw)
    envelope = json.dumps(
        {"channel": item.channel, "type": item.type, "data": "DATA", "ts": item.ts},
        separators=(",", ":"),
    ).replace('"DATA"', raw.decode())
    expected = ServerSentEvent(data=envelope, event=item.type, sep="\n").encode()
    assert item.frame == expected


def test_payload_bytes_are_spliced_not_reencoded() -> None:
    raw = b'{"z":1.50,"a":[1e3,"\\u00e9"]}'
    frame = event(raw).frame
    assert raw in frame
    assert json.loads(lines(frame)[1].removeprefix("data: "))["data"] == {
        "z": 1.5,
        "a": [1000.0, "é"],
    }


def test_non_ascii_payload_is_utf8() -> None:
    frame = event(json.dumps({"text": "olá, 世界"}, ensure_ascii=False).encode()).frame
    assert "olá, 世界" in frame.decode("utf-8")


def test_envelope_and_timestamp() -> None:
    item = event(b'{"n":1}')
    assert item.ts == "2023-11-14T22:13:20.000Z"
    assert item.envelope() == {
        "channel": "notifications:alice",
        "type": "notification.created",
        "data": {"n": 1},
        "ts": "2023-11-14T22:13:20.000Z",
    }


def test_control_frame_with_id() -> None:
    frame = encode_control("ready", {"channels": ["broadcast"]}, "1.abc")
    assert frame == b'id: 1.abc\nevent: ready\ndata: {"channels":["broadcast"]}\n\n'


def test_control_frame_without_id() -> None:
    frame = encode_control("reset", {"channels": ["broadcast"], "reason": "trimmed"})
    assert lines(frame) == [
        "event: reset",
        'data: {"channels":["broadcast"],"reason":"trimmed"}',
    ]


def test_control_data_with_line_breaks_stays_one_line() -> None:
    assert len(lines(encode_control("ready", {"note": "a\nb\rc"}, "1.x"))) == 3


def test_comment_frame() -> None:
    assert encode_comment("ping") == b": ping\n\n"


def test_comment_with_line_break_stays_a_comment() -> None:
    assert all(line.startswith(":") for line in lines(encode_comment("a\nb")))


def test_retry_frame() -> None:
    assert encode_retry(2000) == b"retry: 2000\n\n"


def test_id_line() -> None:
    assert id_line("1.abc") == b"id: 1.abc\n"
    assert id_line("1.abc") + event(b"{}").frame == (b"id: 1.abc\n" + event(b"{}").frame)


def test_stream_id_round_trip() -> None:
    for sid in [(0, 0), (MS, 3), (2**64 - 1, 2**64 - 1)]:
        assert parse_stream_id(format_stream_id(sid)) == sid


@pytest.mark.parametrize("text", ["", "1", "1-", "-1", "a-1", "1-b", "1-2-3", "+1-2", " 1-2"])
def test_malformed_stream_id(text: str) -> None:
    with pytest.raises(ValueError, match="not a stream id"):
        parse_stream_id(text)


def test_iso_ms() -> None:
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
    assert iso_ms(MS + 7) == "2023-11-14T22:13:20.007Z"
    assert iso_ms(MS + 999) == "2023-11-14T22:13:20.999Z"
    assert iso_ms(MS + 1000) == "2023-11-14T22:13:21.000Z"  # the kept second moves on
    assert iso_ms(MS + 7) == "2023-11-14T22:13:20.007Z"  # and back
    assert iso_ms(-1) == "1969-12-31T23:59:59.999Z"
    # Exact far ahead too, where dividing by 1000 as a float was a millisecond off.
    assert iso_ms(24010322587745) == "2730-11-10T06:03:07.745Z"
    for ms in range(MS, MS + 5000, 7):
        moment = datetime.fromtimestamp(ms // 1000, tz=UTC).replace(microsecond=ms % 1000 * 1000)
        assert iso_ms(ms) == moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_a_placed_event_encodes_its_frame_only_when_asked() -> None:
    """What the Redis engine's publisher gets back: the same position, cursor segment, time
    and (asked for) frame as the event delivered."""
    args = ("notifications:ann", "note.x", b'{"a":1}', "e1", (MS + 7, 2))
    placed, delivered = Placed(*args), Event(*args)
    assert (placed.segment, placed.ts, placed.offset) == (
        delivered.segment,
        delivered.ts,
        delivered.offset,
    )
    assert placed.frame == delivered.frame

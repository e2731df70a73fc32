"""The room contract (``servers.room``): validation and body bytes, without any process."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from servers import bus, room
from servers.endpoints import BadRequest, error_body

BAD_AFTER = [
    "",
    "after=",
    "after=abc",
    "after=-1",
    "after=+1",
    "after=1.5",
    "after=1e3",
    "after=%EF%BC%91",  # a full-width digit
    "after=" + "9" * 16,
    "after=1&after=2",
    "after=1&x=2",
    "before=1",
    "%ff",
]

BAD_BODIES = {
    "empty": b"",
    "not JSON": b"hello",
    "truncated": b'{"text": "a", "sent": 1',
    "array": b'["a", 1]',
    "string": b'"text"',
    "not UTF-8": b'{"text": "\xff", "sent": 1}',
    "UTF-16": '{"text": "a", "sent": 1}'.encode("utf-16"),
    "oversized": b'{"text": "' + b"a" * room.MAX_BODY_BYTES + b'", "sent": 1}',
    "text too long": json.dumps({"text": "a" * (room.MAX_TEXT_CHARS + 1), "sent": 1}).encode(),
    "text not a string": b'{"text": 5, "sent": 1}',
    "text null": b'{"text": null, "sent": 1}',
    "lone surrogate": b'{"text": "\\ud800", "sent": 1}',
    "sent a string": b'{"text": "a", "sent": "1"}',
    "sent a boolean": b'{"text": "a", "sent": true}',
    "sent negative": b'{"text": "a", "sent": -1}',
    "sent NaN": b'{"text": "a", "sent": NaN}',
    "sent Infinity": b'{"text": "a", "sent": Infinity}',
    "sent overflowing": b'{"text": "a", "sent": 1e999}',
    "sent a huge integer": b'{"text": "a", "sent": ' + b"9" * 400 + b"}",
    "sent beyond a timestamp": b'{"text": "a", "sent": 1e12}',
    "unknown key": b'{"text": "a", "sent": 1, "room": "x"}',
    "missing sent": b'{"text": "a"}',
    "missing text": b'{"sent": 1}',
    "repeated key": b'{"text": "a", "sent": 1, "sent": 2}',
    "deep nesting": b"[" * 5000 + b"]" * 5000,
}


@pytest.mark.parametrize("query", BAD_AFTER)
def test_bad_after_is_bad_request(query: str) -> None:
    with pytest.raises(BadRequest):
        room.parse_after(query)


@pytest.mark.parametrize(
    ("query", "after"), [("after=0", 0), ("after=42", 42), ("after=007", 7), (b"after=9", 9)]
)
def test_after_is_plain_digits(query: str | bytes, after: int) -> None:
    assert room.parse_after(query) == after


def test_after_allows_the_largest_id() -> None:
    assert room.parse_after(f"after={room.MAX_ID}") == room.MAX_ID


@pytest.mark.parametrize("body", list(BAD_BODIES.values()), ids=list(BAD_BODIES))
def test_bad_send_body_is_bad_request_with_a_one_line_error(body: bytes) -> None:
    with pytest.raises(BadRequest) as raised:
        room.parse_send(body)
    line = error_body(str(raised.value))
    assert line.endswith(b"\n") and line.count(b"\n") == 1


def test_send_body_accepts_integers_and_unicode() -> None:
    body = json.dumps({"sent": 1700000000, "text": "h\u00e9 \U0001f600"}).encode()
    assert room.parse_send(body) == room.Outgoing("h\u00e9 \U0001f600", 1700000000.0)


def test_longest_text_fits_the_body_limit_even_fully_escaped() -> None:
    text = "\U0001f600" * room.MAX_TEXT_CHARS  # 12 bytes each as \\ud83d\\ude00
    body = json.dumps({"text": text, "sent": room.MAX_SENT}).encode()
    assert len(body) <= room.MAX_BODY_BYTES
    assert room.parse_send(body).text == text


def test_message_bytes() -> None:
    outgoing = room.Outgoing("h\u00e9", 1.5)
    stored = room.message(7, outgoing)
    assert stored == b'{"id":7,"sent":1.5,"text":"h\\u00e9"}'
    assert json.loads(stored) == {"id": 7, "sent": 1.5, "text": "h\u00e9"}
    assert room.message_id(stored) == 7


def test_message_parts_join_around_the_id_as_the_publish_script_does() -> None:
    head, tail = room.message_parts(room.Outgoing('quote " and \\', 2.0))
    assert head + b"12" + tail == room.message(12, room.Outgoing('quote " and \\', 2.0))
    assert b"%d" not in head + tail  # the script formats only the id


def test_poll_and_sent_bodies() -> None:
    first, second = (room.message(i, room.Outgoing(t, 1.0)) for i, t in ((1, "a"), (2, "b")))
    body = room.poll_body([first, second])
    assert body == b'{"messages":[' + first + b"," + second + b"]}\n"
    assert [m["id"] for m in json.loads(body)["messages"]] == [1, 2]
    assert room.sent_body(3) == b'{"id":3}\n'


@given(st.text(max_size=room.MAX_TEXT_CHARS), st.floats(0, room.MAX_SENT))
def test_any_valid_message_round_trips(text: str, sent: float) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return  # lone surrogates are refused (tested above)
    outgoing = room.parse_send(json.dumps({"text": text, "sent": sent}).encode())
    delivered = json.loads(room.message(5, outgoing))
    assert delivered == {"id": 5, "sent": sent, "text": text}


def test_bus_keys_are_the_room_namespace() -> None:
    assert all(key.startswith("asyncbench:room:") for key in (*bus.ROOM_KEYS, bus.CHANNEL))
    assert bus.follows(room.message(3, room.Outgoing("", 0.0)), 2)
    assert not bus.follows(room.message(4, room.Outgoing("", 0.0)), 2)


# The WebSocket: member frames, the handshake check, close reasons, the sockets gauge ----------

BAD_FRAMES: dict[str, str | bytes] = {
    "binary": b'{"text": "a", "sent": 1}',  # valid JSON, but members speak text
    "20 KB of text": json.dumps({"text": "a" * 20_000, "sent": 1}),
    "not JSON": "hello",
    "wrong keys": '{"text": "a", "sent": 1, "room": "x"}',
}
UPGRADE = {
    "Host": "127.0.0.1:8000",
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


@pytest.mark.parametrize("frame", list(BAD_FRAMES.values()), ids=list(BAD_FRAMES))
def test_bad_frame_is_bad_request(frame: str | bytes) -> None:
    with pytest.raises(BadRequest):
        room.parse_frame(frame)


@pytest.mark.parametrize("body", list(BAD_BODIES.values()), ids=list(BAD_BODIES))
def test_a_frame_is_refused_whenever_the_same_body_is(body: bytes) -> None:
    try:
        frame = body.decode("utf-8")
    except UnicodeDecodeError:
        return  # not text: a text frame cannot hold it
    with pytest.raises(BadRequest) as raised:
        room.parse_frame(frame)
    assert str(raised.value).startswith("bad frame: ")


def test_frame_holds_what_a_send_body_holds() -> None:
    body = '{"text": "h\\u00e9 \U0001f600", "sent": 1700000000.5}'
    assert room.parse_frame(body) == room.parse_send(body.encode()) == room.Outgoing(
        "h\u00e9 \U0001f600", 1700000000.5
    )


def test_frame_with_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(BadRequest):
        room.parse_frame('{"text": "\ud800", "sent": 1}')


@given(st.text(max_size=300))
def test_close_reason_fits_a_close_frame_and_keeps_whole_characters(message: str) -> None:
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        return  # messages are our own text, never lone surrogates
    reason = room.close_reason(message)
    assert len(reason.encode("utf-8")) <= room.MAX_CLOSE_REASON_BYTES
    assert message.startswith(reason)


def test_close_reason_of_every_bad_frame_is_a_prefix_of_its_message() -> None:
    for frame in (*BAD_FRAMES.values(), "[" * 5000, '{"' + "k" * 500 + '": 1}'):
        with pytest.raises(BadRequest) as raised:
            room.parse_frame(frame)
        reason = room.close_reason(str(raised.value))
        assert reason and str(raised.value).startswith(reason)


def test_upgrade_request_passes_the_check() -> None:
    room.check_upgrade(UPGRADE)
    room.check_upgrade({**UPGRADE, "Upgrade": "WebSocket", "Connection": "keep-alive, Upgrade"})


@pytest.mark.parametrize(
    "change",
    [
        {"Upgrade": ""},
        {"Upgrade": "h2c"},
        {"Connection": "keep-alive"},
        {"Connection": ""},
        {"Sec-WebSocket-Version": "8"},
        {"Sec-WebSocket-Version": ""},
        {"Sec-WebSocket-Key": ""},
        {"Host": ""},
    ],
)
def test_anything_but_an_upgrade_is_bad_request(change: dict[str, str]) -> None:
    headers = {k: v for k, v in {**UPGRADE, **change}.items() if v}
    with pytest.raises(BadRequest) as raised:
        room.check_upgrade(headers)
    line = error_body(str(raised.value))
    assert line.endswith(b"\n") and line.count(b"\n") == 1


def test_close_codes() -> None:
    assert (room.CLOSE_POLICY_VIOLATION, room.CLOSE_BUS_FAILED) == (1008, 1011)
    assert room.MAX_BODY_BYTES < room.WS_MAX_MESSAGE_BYTES


class FakeRedis:
    """Answers ``MGET`` from a dict, recording the keys asked for."""

    def __init__(self, values: dict[str, bytes]) -> None:
        self.values, self.asked = values, []

    def mget(self, *keys: str) -> list[bytes | None]:
        self.asked.append(keys)
        return [self.values.get(key) for key in keys]


def test_room_stats_read_the_sockets_gauge_in_the_same_round_trip() -> None:
    client = FakeRedis({bus.NEXT_ID: b"7", bus.HELD_MAX: b"2", bus.SOCKETS: b"3",
                        bus.SOCKETS_MAX: b"5"})  # fmt: skip
    stats = bus.room_stats(client)
    assert stats == bus.RoomStats(published=7, held=0, held_max=2, sockets=3, sockets_max=5)
    assert len(client.asked) == 1


def test_reset_room_clears_the_sockets_gauge() -> None:
    assert {bus.SOCKETS, bus.SOCKETS_MAX} <= set(bus.ROOM_KEYS)
    assert bus.SOCKET_GAUGE == [bus.SOCKETS, bus.SOCKETS_MAX]
    assert bus.HELD not in bus.SOCKET_GAUGE  # a socket is never a held poll

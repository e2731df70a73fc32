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

"""The chat room's contract: what `/room/poll` and `/room/send` accept, and the bytes they answer.

A member polls ``GET /room/poll?after=ID`` and receives every message whose id is greater than
ID, oldest first, at most ``BATCH_LIMIT`` per answer: at once if one exists, else as soon as the
next one is published, else ``204`` (empty body) after the server's hold timeout. It then polls
again with the last id it received. A sender posts ``{"text": "...", "sent": <epoch seconds>}``
to ``POST /room/send`` and is answered the id its message got.

A member may instead open a WebSocket, ``GET /room/ws?after=ID`` (``WS_PATH``; the same query,
checked before the upgrade): the server sends every message after ID, oldest first, each once, as
one text frame holding the stored bytes, then each new one as it is published. A text frame the
member sends holds what a ``/room/send`` body holds and is published (no acknowledgement). A bad
frame closes that socket with ``CLOSE_POLICY_VIOLATION``; a failed bus closes every socket with
``CLOSE_BUS_FAILED``.

Ids are consecutive integers from 1 in publication order, so a member can tell a message it
missed (trimmed from the ``HISTORY_SIZE`` most recent before it asked again) from an empty room.

Every model calls these functions, so statuses and body bytes cannot drift between them; the
message bytes built here are stored and published by ``servers.bus`` unchanged. Nothing here
does I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

from servers.endpoints import BadRequest, json_line, query_fields, shorten

MAX_ID = 10**15 - 1  # ids are Redis sorted-set scores (doubles): exact far beyond this
MAX_BODY_BYTES = 16_384  # a /room/send body; MAX_TEXT_CHARS always fits, even fully escaped
MAX_TEXT_CHARS = 1_000
MAX_SENT = 1e10  # epoch seconds (year 2286): larger is not a timestamp
HISTORY_SIZE = 1_000  # the most recent messages kept for members between two polls
BATCH_LIMIT = 100  # messages in one poll answer (a member far behind polls again at once)
DEFAULT_HOLD_S = 30.0
MAX_HOLD_S = 60.0  # within every model's request timeout (servers.config.REQUEST_TIMEOUT_S)
WS_PATH = "/room/ws"
# The frameworks' own frame limit: above MAX_BODY_BYTES, so parse_frame answers (1008) for any
# frame between the two, and only a frame beyond this gets the framework's 1009.
WS_MAX_MESSAGE_BYTES = 65_536
CLOSE_POLICY_VIOLATION = 1008  # a bad frame from the member
CLOSE_BUS_FAILED = 1011  # the message bus failed (an internal error, as a 503 is for HTTP)
CLOSE_GOING_AWAY = 1001  # the server is stopping
MAX_CLOSE_REASON_BYTES = 123  # a close frame's payload is at most 125 bytes, 2 of them the code
WS_PATH = "/room/ws"  # GET upgrades to a WebSocket: every message a text frame
CLOSE_POLICY_VIOLATION = 1008  # a bad frame from a member closes that socket only
CLOSE_BUS_FAILED = 1011  # the message bus failed: the member should reconnect later
_SEND_KEYS = frozenset({"text", "sent"})
_ID_HEAD = b'{"id":'


@dataclass(frozen=True)
class Outgoing:
    """A validated message to publish: its text and the sender's timestamp (epoch seconds)."""

    text: str
    sent: float


def parse_after(query: str | bytes) -> int:
    """The ``after`` id of a ``/room/poll`` or ``/room/ws`` query: the only parameter, plain
    digits, ≤ MAX_ID."""
    fields = query_fields(query)
    extra = sorted(set(fields) - {"after"})
    if extra:
        raise BadRequest(f"unknown parameter {shorten(extra[0])!r}: only 'after' is accepted")
    values = fields.get("after")
    if not values:
        raise BadRequest("missing parameter 'after' (the last message id received, 0 for none)")
    if len(values) > 1:
        raise BadRequest("parameter 'after' given more than once")
    raw = values[0]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > len(str(MAX_ID)):
        raise BadRequest(f"'after' must be an integer from 0 to {MAX_ID}, got {shorten(raw)!r}")
    return int(raw)


def parse_send(body: bytes) -> Outgoing:
    """A ``/room/send`` body: one UTF-8 JSON object with exactly ``text`` and ``sent``."""
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(f"body is larger than {MAX_BODY_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("body must be UTF-8") from None
    try:
        payload = json.loads(
            text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant
        )
    except BadRequest:
        raise
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the C stack
        raise BadRequest("body must be a JSON object") from None
    if not isinstance(payload, dict):
        raise BadRequest("body must be a JSON object")
    if set(payload) != _SEND_KEYS:
        wrong = sorted(set(payload) ^ _SEND_KEYS)[0]
        known = "unknown" if wrong in payload else "missing"
        raise BadRequest(f"{known} key {shorten(wrong)!r}: the body holds 'text' and 'sent'")
    return Outgoing(_text(payload["text"]), _sent(payload["sent"]))


def parse_frame(data: str | bytes) -> Outgoing:
    """A member's WebSocket frame: a text frame holding exactly what a ``/room/send`` body holds
    (a binary frame is refused: the members of every model speak text)."""
    if isinstance(data, bytes):
        raise BadRequest("binary frame: send the message as a text frame")
    try:
        body = data.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("frame must be valid Unicode (no lone surrogates)") from None
    try:
        return parse_send(body)
    except BadRequest as exc:
        raise BadRequest(f"bad frame: {exc}") from None


def check_upgrade(headers: Mapping[str, str]) -> None:
    """Refuse (400) a ``/room/ws`` request that is not a WebSocket handshake every framework
    accepts, before any upgrade: so a plain GET is answered the same JSON error on every model,
    never a framework's own text or a traceback."""
    connection = {token.strip().lower() for token in headers.get("Connection", "").split(",")}
    if headers.get("Upgrade", "").lower() != "websocket" or "upgrade" not in connection:
        raise BadRequest(f"{WS_PATH} is a WebSocket: 'Upgrade: websocket' and "
                         "'Connection: Upgrade' are required")  # fmt: skip
    if headers.get("Sec-WebSocket-Version") != "13":
        raise BadRequest("only WebSocket version 13 is accepted ('Sec-WebSocket-Version: 13')")
    if not headers.get("Sec-WebSocket-Key") or not headers.get("Host"):
        raise BadRequest("missing header 'Sec-WebSocket-Key' or 'Host'")


def close_reason(message: str) -> str:
    """``message`` cut to fit a close frame (at most MAX_CLOSE_REASON_BYTES of UTF-8)."""
    encoded = message.encode("utf-8")[:MAX_CLOSE_REASON_BYTES]
    return encoded.decode("utf-8", errors="ignore")  # never half a character


def message_parts(outgoing: Outgoing) -> tuple[bytes, bytes]:
    """The message bytes around its id: stored message = head + decimal id + tail.

    The bus assigns the id and joins the parts in one atomic step (``servers.bus``).
    """
    fields = json_line({"sent": outgoing.sent, "text": outgoing.text}).rstrip(b"\n")
    return _ID_HEAD, b"," + fields[1:]


def message(message_id: int, outgoing: Outgoing) -> bytes:
    """A message as stored and delivered: ``{"id":N,"sent":S,"text":"..."}`` (no newline)."""
    head, tail = message_parts(outgoing)
    return head + str(message_id).encode() + tail


def message_id(stored: bytes) -> int:
    """The id of a message built by ``message`` (read from its head, without parsing it all)."""
    if not stored.startswith(_ID_HEAD):
        raise ValueError(f"not a room message: {stored[:40]!r}")
    end = stored.index(b",", len(_ID_HEAD))
    return int(stored[len(_ID_HEAD) : end])


def poll_body(messages: list[bytes]) -> bytes:
    """A ``/room/poll`` answer: ``{"messages":[...]}`` with the stored bytes, oldest first."""
    return b'{"messages":[' + b",".join(messages) + b"]}\n"


def sent_body(message_id: int) -> bytes:
    """A ``/room/send`` answer: the id the message got."""
    return json_line({"id": message_id})


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise BadRequest("'text' must be a string")
    if len(value) > MAX_TEXT_CHARS:
        raise BadRequest(f"'text' must be at most {MAX_TEXT_CHARS} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest("'text' must be valid Unicode (no lone surrogates)") from None
    return value


def _sent(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest("'sent' must be a number (epoch seconds)")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        number = math.inf
    if not (math.isfinite(number) and 0 <= number <= MAX_SENT):
        raise BadRequest(f"'sent' must be epoch seconds from 0 to {MAX_SENT:.0f}")
    return number


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise BadRequest("body has a repeated key")
    return dict(pairs)


def _no_constant(name: str) -> None:
    raise BadRequest(f"body must be plain JSON ({name} is not)")

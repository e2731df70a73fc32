"""The chat room, harness side: verifying a model's room, and the sender.

N members hold long-polls (Locust's ``RoomMember``) or WebSockets (``RoomSocketMember``), as
the scenario's transport says; the sender publishes at a fixed rate on the
message bus, each message carrying its send time, the way a separate publishing service would,
so the room's message rate is the same for every model whatever the model does with its slots
(``POST /room/send`` is the same publish, checked before each cell). A probe user sends
``GET /hello`` at a low fixed rate meanwhile.

A room cell's numbers come from its stored raw facts, like any cell's (``judging.room``); the
transports are planning's (``planning.transports``).
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from urllib.parse import urlsplit

import pandas as pd
import websocket

from asyncbench.measuring.measure import CellFailed
from servers import room
from servers.bus_blocking import BlockingBus
from servers.config import ServerConfig

VERIFY_TIMEOUT_S = 30.0
SENDER_TEXT = "x" * 64  # every message the same size: what varies is only who holds polls


class Sender:
    """Publishes ``rate`` messages a second on the bus from a thread until stopped; remembers
    each message's id and embedded send time."""

    def __init__(self, redis_url: str, rate: float) -> None:
        self.bus = BlockingBus(ServerConfig(redis_url=redis_url))
        self.gap = 1 / rate
        self.published: list[tuple[int, float]] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="room-sender", daemon=True)

    def __enter__(self) -> Sender:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.published, columns=["message", "sent"])

    def _loop(self) -> None:
        due = time.time()
        while not self._stop.wait(max(0.0, due - time.time())):
            sent = time.time()
            try:
                message_id = self.bus.publish(room.Outgoing(SENDER_TEXT, sent))
            except Exception as exc:  # the bus died: the cell fails with this reason
                self.error = f"the sender could not publish: {exc}"
                return
            self.published.append((message_id, sent))
            due += self.gap


def verify_room(url: str, work_done) -> None:
    """A send through the server comes back from a poll, byte for byte, and the bus saw it."""
    before = work_done()
    body = json.dumps({"text": "verify", "sent": time.time()}).encode()
    status, answer = _request(url, "POST", "/room/send", body)
    if status != 200:
        raise CellFailed(f"verification: POST /room/send answered {status}: {answer[:120]!r}")
    message_id = json.loads(answer)["id"]
    status, answer = _request(url, "GET", f"/room/poll?after={message_id - 1}")
    if status != 200 or json.loads(answer)["messages"][0]["id"] != message_id:
        raise CellFailed(f"verification: the poll did not return message {message_id}: "
                         f"{status} {answer[:120]!r}")  # fmt: skip
    if work_done() <= before:
        raise CellFailed("verification: the server answered but the bus saw no message")


def verify_socket_room(url: str, work_done) -> None:
    """A frame sent on a WebSocket is published and comes back on it, and the bus saw it."""
    before = work_done()
    socket_url = url.replace("http", "ws", 1) + f"{room.WS_PATH}?after={before}"
    try:
        member = websocket.create_connection(socket_url, timeout=VERIFY_TIMEOUT_S)
    except (websocket.WebSocketException, OSError) as exc:
        raise CellFailed(f"verification: no WebSocket at {room.WS_PATH}: {exc}") from None
    try:
        member.send(json.dumps({"text": "verify", "sent": time.time()}))
        echoed = json.loads(member.recv())
    except (websocket.WebSocketException, OSError, ValueError) as exc:
        raise CellFailed(f"verification: the socket did not relay its own message: {exc}") from None
    finally:
        member.close()
    if echoed.get("text") != "verify" or work_done() <= before:
        raise CellFailed(f"verification: the socket relayed {echoed!r}, not the message it sent")


def _request(url: str, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=VERIFY_TIMEOUT_S)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    except OSError as exc:
        raise CellFailed(f"verification request failed: {exc}") from None
    finally:
        conn.close()

"""The room's WebSocket (``/room/ws``) on every model, over a throwaway Redis: real processes on
loopback. Members are ``websocket-client`` connections; refusals before the upgrade are read with
plain ``http.client`` so their bytes can be compared.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
import websocket
from conftest import SERVER_WORKERS, room_config
from test_room_contract import BAD_AFTER, BAD_FRAMES, UPGRADE
from test_room_servers import (
    HELLO,
    assert_bus_unavailable,
    assert_json_error,
    poll,
    request,
    send,
    wait_until,
)

from asyncbench.measuring.services import MessageBus, Server, server, throwaway_redis
from servers import MODELS, room
from servers.bus import RoomStats
from servers.bus_blocking import BlockingBus
from servers.config import ServerConfig
from servers.endpoints import BadRequest, error_body

pytestmark = pytest.mark.slow

TEXT, CLOSE = websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_CLOSE
TIMEOUT_S = 10  # generous: a frame that does not come within this is lost
HANDSHAKE_WAIT_S = 2  # how long an upgrade waits before we call it unanswered


@pytest.fixture(autouse=True)
def empty_room(message_bus: MessageBus) -> Iterator[None]:
    """An empty room, and after the test every socket it opened uncounted (a server uncounts
    a socket a little after the client closed it: not in the next test's gauge)."""
    message_bus.reset_room()
    yield
    wait_until(lambda: message_bus.stats().sockets == 0, 10, "the test's sockets to be uncounted")


def ws_url(running: Server, after: int = 0) -> str:
    return running.url.replace("http", "ws", 1) + f"{room.WS_PATH}?after={after}"


@contextlib.contextmanager
def member(running: Server, after: int = 0) -> Iterator[websocket.WebSocket]:
    """An open socket, closed (and its TCP connection too) on the way out."""
    connection = websocket.create_connection(ws_url(running, after), timeout=TIMEOUT_S)
    try:
        yield connection
    finally:
        connection.close(timeout=1)  # returns at once if the server closed it first...
        connection.shutdown()  # ...so close the TCP connection here either way


def receive(connection: websocket.WebSocket, count: int) -> list[bytes]:
    """The next ``count`` frames, each checked to be a text frame."""
    frames = []
    for _ in range(count):
        opcode, data = connection.recv_data()
        assert opcode == TEXT, (opcode, data)
        frames.append(data)
    return frames


def close_code(connection: websocket.WebSocket) -> tuple[int, str]:
    """The code and reason of the close frame the server sends next (text frames skipped)."""
    while True:
        opcode, data = connection.recv_data(control_frame=True)
        if opcode == CLOSE:
            (code,) = struct.unpack("!H", data[:2])
            return code, data[2:].decode()


def handshake(running: Server, query: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """A ``GET /room/ws`` with these headers on its own connection: the status and body of a
    refusal."""
    return request(running.url, "GET", f"{room.WS_PATH}?{query}", headers=headers)


def refused(check, *args) -> tuple[int, bytes]:
    """The 400 every model answers for what ``check(*args)`` refuses."""
    with pytest.raises(BadRequest) as raised:
        check(*args)
    return 400, error_body(str(raised.value))


# Refused before the upgrade: JSON, the same bytes on every model -----------------------------


@pytest.mark.parametrize("query", BAD_AFTER)
def test_bad_after_is_400_json_before_the_upgrade(
    rooms: dict[str, Server], message_bus: MessageBus, query: str
) -> None:
    answers = {name: handshake(s, query, UPGRADE) for name, s in rooms.items()}
    assert set(answers.values()) == {refused(room.parse_after, query)}, answers
    same_as_poll = request(rooms["tornado-coroutine"].url, "GET", f"/room/poll?{query}")
    assert same_as_poll == refused(room.parse_after, query)
    assert message_bus.stats() == RoomStats(0, 0, 0)  # nothing was counted


def test_anything_but_an_upgrade_is_400_json_on_every_model(
    rooms: dict[str, Server], message_bus: MessageBus
) -> None:
    plain = {"Connection": "keep-alive"}
    answers = {name: handshake(s, "after=0", plain) for name, s in rooms.items()}
    assert set(answers.values()) == {refused(room.check_upgrade, plain)}, answers
    old_version = {**UPGRADE, "Sec-WebSocket-Version": "8"}
    answers = {name: handshake(s, "after=0", old_version) for name, s in rooms.items()}
    assert set(answers.values()) == {refused(room.check_upgrade, old_version)}, answers
    for running in rooms.values():
        assert_json_error(*request(running.url, "POST", f"{room.WS_PATH}?after=0", HELLO), 405)
    assert message_bus.stats() == RoomStats(0, 0, 0)


# Delivery ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", list(MODELS))
def test_socket_relays_history_then_live_messages_as_poll_answers_them(
    rooms: dict[str, Server], message_bus: MessageBus, model: str
) -> None:
    """Sent with POST /room/send while one socket is open (on a sync worker it holds one of
    the two workers; the other answers the sends)."""
    running = rooms[model]
    send(running.url, b'{"text":"before 1","sent":1.5}')
    send(running.url, b'{"text":"before 2 \\u00e9","sent":2}')
    with member(running) as everyone:
        frames = receive(everyone, 2)  # from the history
        stats = message_bus.stats()
        send(running.url, b'{"text":"live 3","sent":3}')
        send(running.url, b'{"text":"live 4","sent":4}')
        frames += receive(everyone, 2)  # as they were published
    assert poll(running.url, 0) == (200, room.poll_body(frames))  # the same bytes, in order
    assert (stats.sockets, stats.sockets_max, stats.held) == (1, 1, 0)  # a socket is no poll
    wait_until(lambda: message_bus.stats().sockets == 0, 5, "the socket to be uncounted")
    with member(running, after=3) as latecomer:
        assert receive(latecomer, 1) == frames[3:]


@pytest.mark.parametrize("model", list(MODELS))
def test_member_frame_is_published_to_every_socket_including_its_own(
    rooms: dict[str, Server], message_bus: MessageBus, model: str
) -> None:
    with member(rooms[model]) as sender, member(rooms[model]) as other:
        wait_until(lambda: message_bus.stats().sockets == 2, 5, "two open sockets")
        sender.send(HELLO.decode())
        sender.send('{"text": "second", "sent": 2}')
        expected = [room.message(1, room.parse_send(HELLO)),
                    room.message(2, room.Outgoing("second", 2.0))]  # fmt: skip
        assert receive(sender, 2) == expected
        assert receive(other, 2) == expected
    assert message_bus.stats().published == 2
    wait_until(lambda: message_bus.stats().sockets == 0, 5, "the sockets to be uncounted")


# Bad frames: only that socket closes ---------------------------------------------------------


@pytest.mark.parametrize("model", list(MODELS))
def test_bad_frame_closes_only_its_socket_with_1008(
    rooms: dict[str, Server], message_bus: MessageBus, model: str
) -> None:
    running = rooms[model]
    publisher = BlockingBus(ServerConfig(redis_url=message_bus.url))
    with member(running) as bystander:
        for name, frame in BAD_FRAMES.items():
            with member(running) as offender:
                if isinstance(frame, bytes):
                    offender.send_binary(frame)
                else:
                    offender.send(frame)
                code, reason = close_code(offender)
                assert code == room.CLOSE_POLICY_VIOLATION, (name, code, reason)
                assert reason == room.close_reason(refused_reason(frame)), name
        wait_until(lambda: message_bus.stats().sockets == 1, 5, "only the bystander counted")
        message_id = publisher.publish(room.Outgoing("still here", 1.0))
        assert receive(bystander, 1) == [room.message(message_id, room.Outgoing("still here", 1.0))]
        assert request(running.url, "GET", "/hello")[0] == 200
    wait_until(lambda: message_bus.stats().sockets == 0, 5, "the sockets to be uncounted")


def refused_reason(frame: str | bytes) -> str:
    with pytest.raises(BadRequest) as raised:
        room.parse_frame(frame)
    return str(raised.value)


@pytest.mark.parametrize("model", list(MODELS))
def test_frame_beyond_the_framework_limit_is_closed_by_the_framework(
    rooms: dict[str, Server], message_bus: MessageBus, model: str
) -> None:
    """Beyond WS_MAX_MESSAGE_BYTES the framework closes the socket itself, 1009 (message too
    big). Tornado then drops the connection without reading the rest of the frame, so the
    client may see a reset instead of the close frame."""
    with member(rooms[model]) as offender:
        try:
            offender.send("x" * (room.WS_MAX_MESSAGE_BYTES + 1))
            code: int | None = close_code(offender)[0]
        except (ConnectionResetError, BrokenPipeError, websocket.WebSocketException):
            code = None
    assert code in (1009, None)
    wait_until(lambda: message_bus.stats().sockets == 0, 5, "the socket to be uncounted")
    assert request(rooms[model].url, "GET", "/hello")[0] == 200


# Blocking workers: one socket each -----------------------------------------------------------

ATTEMPTS = 2 * SERVER_WORKERS


def test_sync_workers_connect_at_most_one_socket_each(
    rooms: dict[str, Server], message_bus: MessageBus
) -> None:
    """Each open socket holds a whole sync worker: with every worker holding one, further
    upgrades wait unanswered in the accept queue (the finding, as for held polls)."""
    running = rooms["flask-blocking"]

    def attempt(_: int) -> websocket.WebSocket | None:
        try:
            return websocket.create_connection(ws_url(running), timeout=HANDSHAKE_WAIT_S)
        except (websocket.WebSocketTimeoutException, TimeoutError):
            return None

    with ThreadPoolExecutor(ATTEMPTS) as pool:
        attempts = list(pool.map(attempt, range(ATTEMPTS)))
    connected = [c for c in attempts if c is not None]
    try:
        assert len(connected) == SERVER_WORKERS, f"{len(connected)} of {ATTEMPTS} connected"
        stats = message_bus.stats()
        assert (stats.sockets, stats.sockets_max) == (SERVER_WORKERS, SERVER_WORKERS)
        print(f"\nflask-blocking: {len(connected)} of {ATTEMPTS} upgrades answered within "
              f"{HANDSHAKE_WAIT_S} s on {SERVER_WORKERS} workers")  # fmt: skip
    finally:
        for connection in connected:
            connection.close(timeout=1)
    # The abandoned upgrades are still queued: each worker takes one, finds its client gone.
    wait_until(lambda: message_bus.stats().sockets == 0, 10, "every socket to be uncounted")
    assert request(running.url, "GET", "/hello")[0] == 200


def test_socket_keeps_its_sync_worker_past_gunicorns_timeout(message_bus: MessageBus) -> None:
    """The arbiter kills a worker silent for ``timeout`` s; a relay notifies it each tick."""
    config = replace(room_config(message_bus, model="flask-blocking"), timeout_s=1)
    publisher = BlockingBus(ServerConfig(redis_url=message_bus.url))
    with server("flask-blocking", config) as running, member(running) as listening:
        time.sleep(4 * config.timeout_s)  # the arbiter checks about once a second
        message_id = publisher.publish(room.Outgoing("still connected", 1.0))
        assert receive(listening, 1) == [room.message(message_id, room.Outgoing("still connected",
                                                                                1.0))]  # fmt: skip


def test_gthread_connects_at_most_workers_times_threads_sockets(
    rooms: dict[str, Server], message_bus: MessageBus
) -> None:
    """Each open socket holds a gthread thread: beyond workers × threads, upgrades wait in a
    worker's queue for a thread (fewer may connect: a worker accepts greedily, like forked
    Tornado, and may queue a socket while the other has a thread free)."""
    running = rooms["flask-threaded"]
    slots = int(MODELS["flask-threaded"].slots(running.config, None, None))

    def attempt(_: int) -> websocket.WebSocket | None:
        try:
            return websocket.create_connection(ws_url(running), timeout=HANDSHAKE_WAIT_S)
        except (websocket.WebSocketTimeoutException, TimeoutError):
            return None

    with ThreadPoolExecutor(slots + 2) as pool:
        attempts = list(pool.map(attempt, range(slots + 2)))
    connected = [c for c in attempts if c is not None]
    try:
        assert 0 < len(connected) <= slots, f"{len(connected)} of {slots + 2} connected"
        assert message_bus.stats().sockets == len(connected)
        print(f"\nflask-threaded: {len(connected)} of {slots + 2} upgrades answered within "
              f"{HANDSHAKE_WAIT_S} s on {slots} threads")  # fmt: skip
    finally:
        for connection in connected:
            connection.close(timeout=1)
    wait_until(lambda: message_bus.stats().sockets == 0, 10, "every socket to be uncounted")


def test_thread_pool_connects_more_sockets_than_threads_and_relays_to_all(
    rooms: dict[str, Server], message_bus: MessageBus
) -> None:
    """Sockets live on the loop; only ``threads`` of them wait on the bus at once, the others'
    next step waits for a pool thread, and still every socket gets every message."""
    running = rooms["tornado-threadpool"]
    count = running.config.threads + 3
    publisher = BlockingBus(ServerConfig(redis_url=message_bus.url))
    with contextlib.ExitStack() as stack:
        members = [stack.enter_context(member(running)) for _ in range(count)]
        wait_until(lambda: message_bus.stats().sockets == count, 5, f"{count} open sockets")
        expected = [room.message(publisher.publish(room.Outgoing("to all", 1.0)),
                                 room.Outgoing("to all", 1.0))]  # fmt: skip
        assert all(receive(m, 1) == expected for m in members)
    wait_until(lambda: message_bus.stats().sockets == 0, 5, "every socket to be uncounted")


SOCKET_MEMBERS = 300


@pytest.mark.parametrize("model", ["flask-gevent", "fastapi-uvicorn"])
def test_300_sockets_each_get_every_message_once(
    rooms: dict[str, Server], message_bus: MessageBus, model: str
) -> None:
    """300 open sockets (a greenlet or a coroutine each, none waiting for a slot), then 5
    messages: each socket receives all 5, in order."""
    running = rooms[model]
    publisher = BlockingBus(ServerConfig(redis_url=message_bus.url))
    with contextlib.ExitStack() as stack:
        with ThreadPoolExecutor(32) as pool:
            members = list(pool.map(lambda _: stack.enter_context(member(running)),
                                    range(SOCKET_MEMBERS)))  # fmt: skip
        wait_until(lambda: message_bus.stats().sockets == SOCKET_MEMBERS, 10, "open sockets")
        outgoing = [room.Outgoing(f"to all {i}", float(i)) for i in range(5)]
        expected = [room.message(publisher.publish(o), o) for o in outgoing]
        with ThreadPoolExecutor(32) as pool:
            got = list(pool.map(lambda m: receive(m, len(expected)), members))
    assert all(frames == expected for frames in got)
    wait_until(lambda: message_bus.stats().sockets == 0, 10, "every socket to be uncounted")


# Redis failures ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", list(MODELS))
def test_killed_redis_closes_sockets_with_1011_and_refuses_upgrades(
    model: str, tmp_path: Path
) -> None:
    log = tmp_path / "server.log"
    with (
        throwaway_redis() as bus,
        server(model, room_config(bus, hold_s=20, model=model), log_path=log) as running,
    ):
        with member(running) as listening:
            wait_until(lambda: bus.stats().sockets == 1, 5, "the socket to be counted")
            os.kill(bus.process.pid, signal.SIGKILL)
            bus.process.popen.wait(timeout=5)
            code, reason = close_code(listening)
        assert code == room.CLOSE_BUS_FAILED
        assert reason.startswith("message bus unavailable: ")
        for _ in range(2 * SERVER_WORKERS):  # every worker, most likely
            assert_bus_unavailable(*handshake(running, "after=0", UPGRADE))
            assert request(running.url, "GET", "/hello")[0] == 200
        assert "Traceback" not in log.read_text()  # (stopping a sync worker mid-request logs one)

"""The room endpoints on every model, over a throwaway Redis: real processes on loopback.

Clients here are plain ``http.client`` threads or raw asyncio connections, never Locust.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest
from conftest import ROOM_HOLD_S, SERVER_THREADS, SERVER_WORKERS, room_config
from test_room_contract import BAD_AFTER, BAD_BODIES, UPGRADE

from asyncbench.measuring.services import MessageBus, Server, server, throwaway_redis
from servers import MODELS, room
from servers.bus import RoomStats
from servers.bus_asyncio import AsyncBus
from servers.bus_blocking import BlockingBus
from servers.config import ServerConfig
from servers.endpoints import BadRequest, error_body
from servers.registry import PER_THREAD, PER_WORKER, THREAD_POOL

pytestmark = pytest.mark.slow

HOLD_S = ROOM_HOLD_S  # the shared servers' hold timeout
# One request at a time per worker process; threaded models hold workers × threads or threads.
BLOCKING = [name for name, spec in MODELS.items() if spec.concurrency is PER_WORKER]
THREADED = [name for name, spec in MODELS.items() if spec.concurrency in (PER_THREAD, THREAD_POOL)]
HELLO = b'{"text":"hello","sent":1700000000.25}'


def request(
    url: str,
    method: str,
    path: str,
    body: bytes | None = None,
    timeout_s: float = 30,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One request on its own connection: status and body bytes."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout_s)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def send(url: str, body: bytes = HELLO) -> int:
    status, answer = request(url, "POST", "/room/send", body)
    assert status == 200, answer
    return json.loads(answer)["id"]


def poll(url: str, after: int) -> tuple[int, bytes]:
    return request(url, "GET", f"/room/poll?after={after}")


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def assert_json_error(status: int, body: bytes, expected_status: int) -> None:
    assert status == expected_status, body
    assert body.endswith(b"\n") and body.count(b"\n") == 1
    assert "error" in json.loads(body)


@pytest.fixture(autouse=True)
def empty_room(message_bus: MessageBus) -> None:
    message_bus.reset_room()


# Bad input: 400 JSON, the same bytes on every model -------------------------------------------


@pytest.mark.parametrize("query", BAD_AFTER)
def test_bad_after_is_400_json_on_every_model(rooms: dict[str, Server], query: str) -> None:
    answers = {name: request(s.url, "GET", f"/room/poll?{query}") for name, s in rooms.items()}
    with pytest.raises(BadRequest) as raised:
        room.parse_after(query)
    for answer in answers.values():
        assert_json_error(*answer, 400)
    assert set(answers.values()) == {(400, error_body(str(raised.value)))}, answers


@pytest.mark.parametrize("body", list(BAD_BODIES.values()), ids=list(BAD_BODIES))
def test_bad_send_body_is_400_json_on_every_model(rooms: dict[str, Server], body: bytes) -> None:
    answers = {name: request(s.url, "POST", "/room/send", body) for name, s in rooms.items()}
    with pytest.raises(BadRequest) as raised:
        room.parse_send(body)
    assert set(answers.values()) == {(400, error_body(str(raised.value)))}, answers


def test_send_with_a_query_and_wrong_methods(rooms: dict[str, Server]) -> None:
    for running in rooms.values():
        assert_json_error(*request(running.url, "POST", "/room/send?after=1", HELLO), 400)
        assert_json_error(*request(running.url, "GET", "/room/send"), 405)
        assert_json_error(*request(running.url, "POST", "/room/poll?after=0", HELLO), 405)


# Delivery ------------------------------------------------------------------------------------


def test_send_then_poll_answers_at_once_with_the_same_bytes(
    rooms: dict[str, Server], message_bus: MessageBus
) -> None:
    expected = room.poll_body([room.message(1, room.parse_send(HELLO))])
    for running in rooms.values():
        message_bus.reset_room()
        assert request(running.url, "POST", "/room/send", HELLO) == (200, b'{"id":1}\n')
        start = time.perf_counter()
        assert poll(running.url, 0) == (200, expected), running.model
        assert time.perf_counter() - start < 0.5 * HOLD_S


def test_poll_answers_in_order_in_batches_with_the_same_bytes(
    rooms: dict[str, Server], message_bus: MessageBus
) -> None:
    publisher = BlockingBus(ServerConfig(redis_url=message_bus.url))
    ids = [publisher.publish(room.Outgoing(str(i), 1.0)) for i in range(room.BATCH_LIMIT + 5)]
    assert ids == list(range(1, room.BATCH_LIMIT + 6))
    for after, expected in ((0, ids[: room.BATCH_LIMIT]), (room.BATCH_LIMIT, ids[-5:])):
        answers = {name: poll(s.url, after) for name, s in rooms.items()}
        assert len(set(answers.values())) == 1, answers
        status, body = answers["tornado-coroutine"]
        assert status == 200
        assert [m["id"] for m in json.loads(body)["messages"]] == expected


@pytest.mark.parametrize("model", list(MODELS))
def test_held_poll_is_released_by_a_send(
    rooms: dict[str, Server], message_bus: MessageBus, model: str
) -> None:
    released_after = assert_released_by_a_send(rooms[model], message_bus)
    assert released_after < 0.5, f"{released_after:.3f} s after the send"


def assert_released_by_a_send(running: Server, bus: MessageBus) -> float:
    """Hold a poll, send, check it answers the new message; return how long after the send."""
    last = send(running.url)
    publisher = BlockingBus(ServerConfig(redis_url=bus.url))
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(poll, running.url, last)
        wait_until(lambda: bus.stats().held == 1, HOLD_S / 2, "the poll to be held")
        sent_at = time.perf_counter()
        # Published by another process: with SO_REUSEPORT a send to the server may hash to the
        # very child that holds the poll and wait in its own accept queue (measured elsewhere).
        publisher.publish(room.parse_send(HELLO))
        status, body = held.result()
        released_after = time.perf_counter() - sent_at
    assert status == 200, body
    assert [m["id"] for m in json.loads(body)["messages"]] == [last + 1]
    assert bus.stats().held == 0
    return released_after


@pytest.mark.parametrize("model", list(MODELS))
def test_hold_timeout_answers_204(
    rooms: dict[str, Server], message_bus: MessageBus, model: str
) -> None:
    start = time.perf_counter()
    assert poll(rooms[model].url, 0) == (204, b"")
    assert HOLD_S <= time.perf_counter() - start < HOLD_S + 1.5
    assert message_bus.stats() == RoomStats(published=0, held=0, held_max=1)


def test_polls_survive_redis_dropping_the_subscriptions(
    rooms: dict[str, Server], message_bus: MessageBus
) -> None:
    send(rooms["tornado-coroutine"].url)
    for _ in range(2 * SERVER_WORKERS):  # every worker subscribes (then answers at once)
        for running in rooms.values():
            assert poll(running.url, 0)[0] == 200
    with contextlib.closing(message_bus.client()) as client:
        assert client.client_kill_filter(_type="pubsub") >= len(MODELS)
    for _ in range(2 * SERVER_WORKERS):
        for running in rooms.values():
            assert_released_by_a_send(running, message_bus)


# Many members on the coroutine model ---------------------------------------------------------

MEMBERS = 200
MESSAGES = 5
RATE_HZ = 10
BUS_POOL = 16


async def async_request(url: str, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One HTTP/1.1 request on a fresh asyncio connection (closed after the answer)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    try:
        answer = await reader.read()
    finally:
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split(b" ")[1]), rest.partition(b"\r\n\r\n")[2]


async def member(url: str, received: list[int], released: dict[int, float]) -> None:
    """Poll from 0 until MESSAGES messages came; record each id and when it arrived."""
    after = 0
    while len(received) < MESSAGES:
        status, body = await async_request(url, "GET", f"/room/poll?after={after}")
        assert status in (200, 204), body
        for message in json.loads(body)["messages"] if status == 200 else []:
            received.append(message["id"])
            released[message["id"]] = max(released.get(message["id"], 0), time.perf_counter())
            after = message["id"]


async def run_room(
    url: str, bus: MessageBus, count: int = MEMBERS
) -> tuple[list[list[int]], float, int]:
    """``count`` members, all held, then MESSAGES sends at RATE_HZ.

    Returns what each member received, how long the first send took to reach every member, and
    Redis's connected clients while every member was held."""
    received: list[list[int]] = [[] for _ in range(count)]
    released: dict[int, float] = {}
    members = [asyncio.create_task(member(url, r, released)) for r in received]
    while (await asyncio.to_thread(bus.stats)).held < count:
        assert not any(m.done() for m in members), "a member stopped early"
        await asyncio.sleep(0.05)
    clients = await asyncio.to_thread(bus.connected_clients)
    first_sent = time.perf_counter()
    for i in range(MESSAGES):
        body = json.dumps({"text": f"message {i}", "sent": time.time()}).encode()
        assert (await async_request(url, "POST", "/room/send", body))[0] == 200
        await asyncio.sleep(1 / RATE_HZ)
    await asyncio.wait_for(asyncio.gather(*members), timeout=30)
    return received, released[1] - first_sent, clients


def test_coroutine_model_delivers_every_message_to_200_members(message_bus: MessageBus) -> None:
    config = replace(room_config(message_bus, hold_s=30), bus_pool_size=BUS_POOL)
    before = message_bus.connected_clients()  # other tests' servers, and the one counting
    with server("tornado-coroutine", config) as running:
        received, release_s, clients = asyncio.run(run_room(running.url, message_bus))
    lost = sum(len(set(range(1, MESSAGES + 1)) - set(ids)) for ids in received)
    assert lost == 0
    assert all(ids == list(range(1, MESSAGES + 1)) for ids in received), "out of order or twice"
    opened = clients - before  # at most the server's command pool and its one subscription
    assert opened <= BUS_POOL + 1, f"{opened} Redis connections for {MEMBERS} held polls"
    print(f"\n{MEMBERS} held polls released by one send in {release_s * 1000:.0f} ms; "
          f"{opened} Redis connections while they were held")  # fmt: skip
    assert release_s < 3


ROOM_MEMBERS = 300
# The models whose processes each hold every member on one event loop or hub
HOLDING_ALL = ["flask-gevent", "fastapi-uvicorn"]


@pytest.mark.parametrize("model", HOLDING_ALL)
def test_greenlets_and_loops_deliver_every_message_to_300_members(
    message_bus: MessageBus, model: str
) -> None:
    """300 held polls (every one held at once: a greenlet or a coroutine each), then 5 sends:
    every member gets every message once, in order."""
    config = room_config(message_bus, hold_s=30, model=model)
    with server(model, config) as running:
        received, release_s, _ = asyncio.run(run_room(running.url, message_bus, ROOM_MEMBERS))
    assert all(ids == list(range(1, MESSAGES + 1)) for ids in received), "lost, out of order"
    assert message_bus.stats().held_max >= ROOM_MEMBERS
    print(f"\n{model}: {ROOM_MEMBERS} held polls released by one send in "
          f"{release_s * 1000:.0f} ms")  # fmt: skip
    assert release_s < 5


# Blocking models: at most their slots --------------------------------------------------------

WAITING = 10


@pytest.mark.parametrize("model", BLOCKING)
def test_blocking_model_holds_at_most_its_workers(message_bus: MessageBus, model: str) -> None:
    """WAITING polls on SERVER_WORKERS workers: the rest, and a /hello behind them, queue."""
    publisher = BlockingBus(ServerConfig(redis_url=message_bus.url))
    with server(model, room_config(message_bus, hold_s=20, model=model)) as running:
        last = send(running.url)
        with ThreadPoolExecutor(WAITING + 1) as pool:
            polls = [pool.submit(poll, running.url, last) for _ in range(WAITING)]
            wait_until(lambda: message_bus.stats().held == SERVER_WORKERS, 5, "busy workers")
            hello = pool.submit(timed_hello, running.url)
            samples = [sample_held(message_bus) for _ in range(15)]
            assert not hello.done(), "/hello was served while every worker held a poll"
            # A POST /room/send would queue behind the polls too: publish as another process.
            sent_at = time.perf_counter()
            publisher.publish(room.parse_send(HELLO))
            answers = [p.result() for p in polls]
            hello_done, hello_answer = hello.result()
    assert max(samples) == SERVER_WORKERS == message_bus.stats().held_max
    assert all(status == 200 for status, _ in answers)
    assert hello_answer[0] == 200 and hello_done > sent_at
    print(f"\n{model}: held at most {message_bus.stats().held_max} of {WAITING} polls; "
          f"/hello answered {hello_done - sent_at:.3f} s after the publish")  # fmt: skip


@pytest.mark.parametrize("model", THREADED)
def test_threaded_model_holds_at_most_its_threads(message_bus: MessageBus, model: str) -> None:
    config = room_config(message_bus, hold_s=20, model=model)
    slots = MODELS[model].slots(config, None, None)
    publisher = BlockingBus(ServerConfig(redis_url=message_bus.url))
    with server(model, config) as running:
        last = send(running.url)
        with ThreadPoolExecutor(int(slots) + 6) as pool:
            polls = [pool.submit(poll, running.url, last) for _ in range(int(slots) + 6)]
            wait_until(lambda: message_bus.stats().held >= SERVER_THREADS, 5, "busy threads")
            samples = [sample_held(message_bus) for _ in range(10)]
            publisher.publish(room.parse_send(HELLO))
            answers = [p.result() for p in polls]
    assert SERVER_THREADS <= max(samples) <= slots
    assert all(status == 200 for status, _ in answers)


def sample_held(bus: MessageBus) -> int:
    time.sleep(0.1)
    return bus.stats().held


def timed_hello(url: str) -> tuple[float, tuple[int, bytes]]:
    answer = request(url, "GET", "/hello")
    return time.perf_counter(), answer


# Redis failures ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", list(MODELS))
def test_killed_redis_is_503_and_other_endpoints_keep_serving(model: str) -> None:
    with throwaway_redis() as bus, server(model, room_config(bus, hold_s=20)) as running:
        last = send(running.url)
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(poll, running.url, last)
            wait_until(lambda: bus.stats().held == 1, 5, "the poll to be held")
            os.kill(bus.process.pid, signal.SIGKILL)
            bus.process.popen.wait(timeout=5)
            assert_bus_unavailable(*held.result())
        for _ in range(2 * SERVER_WORKERS):  # every worker, most likely
            assert_bus_unavailable(*poll(running.url, last))
            assert_bus_unavailable(*request(running.url, "POST", "/room/send", HELLO))
            assert request(running.url, "GET", "/hello")[0] == 200
        password = bus.url.split(":")[2].split("@")[0]
        assert password.encode() not in held.result()[1]


def assert_bus_unavailable(status: int, body: bytes) -> None:
    assert_json_error(status, body, 503)
    assert json.loads(body)["error"].startswith("message bus unavailable: ")


@pytest.mark.parametrize("model", list(MODELS))
def test_no_bus_configured_is_503(model: str) -> None:
    with server(model, room_config(None)) as running:
        for status, body in (
            poll(running.url, 0),
            request(running.url, "POST", "/room/send", HELLO),
            request(running.url, "GET", f"{room.WS_PATH}?after=0", headers=UPGRADE),
        ):
            assert_json_error(status, body, 503)
            assert b"no message bus configured" in body
        assert_json_error(*request(running.url, "POST", "/room/send", b"junk"), 400)


# The buses themselves (what the next models and the WebSocket transport build on) ------------


def test_blocking_bus_serves_many_threads(message_bus: MessageBus) -> None:
    """Threaded models poll from many threads at once: each gets its own subscription."""
    bus = BlockingBus(ServerConfig(redis_url=message_bus.url, hold_s=10))
    with ThreadPoolExecutor(8) as pool:
        polls = [pool.submit(bus.poll, 0) for _ in range(8)]
        wait_until(lambda: message_bus.stats().held == 8, 5, "8 held polls")
        bus.publish(room.Outgoing("to all", 1.0))
        answers = [p.result(timeout=5) for p in polls]
    assert answers == [[room.message(1, room.Outgoing("to all", 1.0))]] * 8
    assert message_bus.stats().held == 0


def test_async_bus_streams_history_then_live_messages_once(message_bus: MessageBus) -> None:
    """``AsyncBus.messages``: what a WebSocket relays, from ``after`` on, in order, each once."""

    async def scenario() -> list[int]:
        bus = AsyncBus(ServerConfig(redis_url=message_bus.url))
        try:
            for i in range(3):
                await bus.publish(room.Outgoing(f"old {i}", 1.0))
            stream = bus.messages(after=1)
            ids = [room.message_id(await anext(stream)) for _ in range(2)]
            for i in range(3):
                await bus.publish(room.Outgoing(f"new {i}", 2.0))
            ids += [room.message_id(await anext(stream)) for _ in range(3)]
            await stream.aclose()
            return ids
        finally:
            await bus.close()

    assert asyncio.run(scenario()) == [2, 3, 4, 5, 6]


def test_blocking_stream_moves_between_threads_without_loss_or_repeat(
    message_bus: MessageBus,
) -> None:
    """``BlockingBus.stream``: what a blocking relay sends, each step on whichever thread is free
    (tornado-threadpool), with a poll using one of the threads in between."""
    bus = BlockingBus(ServerConfig(redis_url=message_bus.url, hold_s=0.3))
    publish = [bus.publish(room.Outgoing(f"m{i}", 1.0)) for i in range(3)]
    stream = bus.stream(after=1)
    with ThreadPoolExecutor(1) as thread_a, ThreadPoolExecutor(1) as thread_b:

        def step(thread: ThreadPoolExecutor) -> list[int]:
            return [room.message_id(m) for m in thread.submit(stream.next, 5).result(10)]

        ids = step(thread_a)  # the history: 2, 3
        publish.append(bus.publish(room.Outgoing("m3", 2.0)))
        ids += step(thread_a)  # the channel of thread A's subscription: 4
        publish += [bus.publish(room.Outgoing(f"m{i}", 2.0)) for i in (4, 5)]
        ids += step(thread_b)  # another thread: its subscription confirmed, then the history
        publish.append(bus.publish(room.Outgoing("m6", 2.0)))
        ids += step(thread_a)  # back on A: skips 5 and 6 waiting there, takes 7
        assert thread_a.submit(bus.poll, 7).result(10) == []  # a poll uses A's subscription
        publish.append(bus.publish(room.Outgoing("m7", 2.0)))
        ids += step(thread_a)  # so A confirms it again and reads the history: 8
        assert thread_b.submit(stream.next, 0.2).result(10) == []  # nothing new: times out
    assert ids == list(range(2, 9)) == publish[1:]
    assert message_bus.stats() == RoomStats(published=8, held=0, held_max=1)  # the poll only


def test_sockets_gauge_counts_over_buses_and_never_goes_below_zero(
    message_bus: MessageBus,
) -> None:
    blocking = BlockingBus(ServerConfig(redis_url=message_bus.url))

    async def coroutines() -> None:
        bus = AsyncBus(ServerConfig(redis_url=message_bus.url))
        try:
            await bus.socket_opened()
            await bus.socket_opened()
            blocking.socket_opened()
            assert message_bus.stats().sockets == 3
            for _ in range(4):
                await bus.socket_closed()
        finally:
            await bus.close()

    asyncio.run(coroutines())
    blocking.socket_closed()
    assert message_bus.stats() == RoomStats(0, 0, 0, sockets=0, sockets_max=3)

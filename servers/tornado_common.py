"""What the Tornado models share: JSON handlers, error bodies, /hello, /health, 404, the app,
the room's WebSocket, request counting and binding the listening sockets.

Each model supplies only its ``/sleep``, ``/fetch``, ``/sql`` and ``/room/*`` handlers (blocking,
or ``AwaitingDelayHandler`` over an object whose ``run`` is a coroutine) and the objects doing the
I/O; everything else (status codes, body bytes, headers, no ETag, no access log) is defined once
here, on top of ``servers.endpoints`` and ``servers.room``. ``/room/ws`` is one handler for every
Tornado model (``RoomSocket``): only the object it streams from differs.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time
from http.client import responses
from typing import Any

import tornado.httpserver
import tornado.netutil
import tornado.web
import tornado.websocket

from servers import endpoints, room
from servers.backends import IOFailure
from servers.config import ServerConfig
from servers.counters import RequestCounter


class JsonError(tornado.web.HTTPError):
    """An HTTP error whose message becomes the ``error_body`` (safe to show the client)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status)
        self.message = message


class JsonHandler(tornado.web.RequestHandler):
    """Answers JSON bytes from ``servers.endpoints``; errors are one-line JSON, never HTML."""

    def prepare(self) -> None:
        # The handler starts here. Tornado reads, parses and routes a request, then schedules
        # the handler as a task: a forked child that blocks in one handler has several others
        # read and waiting by the time it gets to them, and that wait is a queue, not handler
        # time (``request_time()``, from the parsed request, counts it: measured 600 ms for a
        # 100 ms sleep with 8 kept-alive clients per child).
        self.handler_started = time.perf_counter()

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", endpoints.CONTENT_TYPE)

    def compute_etag(self) -> None:
        return None

    def on_finish(self) -> None:
        self.settings["request_counter"].add()

    def finish(self, chunk: Any = None) -> Any:
        if not self._headers_written:  # time from the handler's start to the answer
            started = getattr(self, "handler_started", None)  # None: refused before prepare
            elapsed = time.perf_counter() - started if started else self.request.request_time()
            self.set_header(endpoints.SERVER_TIMING, endpoints.server_timing(elapsed))
        return super().finish(chunk)

    def send(self, body: bytes, status: int = 200) -> None:
        self.set_status(status)
        self.finish(body)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.message if isinstance(exc, JsonError) else responses.get(status_code, "Error")
        self.set_header("Content-Type", endpoints.CONTENT_TYPE)
        self.finish(endpoints.error_body(message))

    def no_params(self) -> None:
        try:
            endpoints.parse_no_params(self.request.query)
        except endpoints.BadRequest as exc:
            raise JsonError(400, str(exc)) from None

    def delay_ms(self) -> int:
        try:
            return endpoints.parse_delay(self.request.query)
        except endpoints.BadRequest as exc:
            raise JsonError(400, str(exc)) from None

    def after(self) -> int:
        """The ``after`` id of a ``/room/poll`` or ``/room/ws``."""
        try:
            return room.parse_after(self.request.query)
        except endpoints.BadRequest as exc:
            raise JsonError(400, str(exc)) from None

    def outgoing(self) -> room.Outgoing:
        """The message of a ``/room/send`` (no query parameters, a valid body)."""
        self.no_params()
        try:
            return room.parse_send(self.request.body)
        except endpoints.BadRequest as exc:
            raise JsonError(400, str(exc)) from None

    def send_poll(self, messages: list[bytes]) -> None:
        """A ``/room/poll`` answer: the messages, or 204 when the hold timed out."""
        if messages:
            self.send(room.poll_body(messages))
        else:
            self.set_status(204)
            self.finish()


def http_error(exc: IOFailure) -> JsonError:
    """The answer for a failed backing service (502 or 503 with a JSON error)."""
    return JsonError(exc.status, str(exc))


class AwaitingDelayHandler(JsonHandler):
    """``/sleep``, ``/fetch``, ``/sql`` as coroutines: the loop serves others while ``await``ing
    ``backend.run`` (non-blocking I/O, or blocking I/O handed to a thread pool)."""

    def initialize(self, backend: Any) -> None:
        self.backend = backend

    async def get(self, endpoint: str) -> None:
        ms = self.delay_ms()
        try:
            await self.backend.run(endpoint, ms)
        except IOFailure as exc:
            raise http_error(exc) from None
        self.send(endpoints.delay_body(endpoint, ms))


class AwaitingPollHandler(JsonHandler):
    """``/room/poll`` held as a coroutine (``await bus.poll``): the loop serves others meanwhile."""

    def initialize(self, bus: Any) -> None:
        self.bus = bus

    async def get(self) -> None:
        after = self.after()
        try:
            messages = await self.bus.poll(after)
        except IOFailure as exc:
            raise http_error(exc) from None
        self.send_poll(messages)


class AwaitingSendHandler(JsonHandler):
    """``/room/send`` awaiting ``bus.publish``."""

    def initialize(self, bus: Any) -> None:
        self.bus = bus

    async def post(self) -> None:
        outgoing = self.outgoing()
        try:
            message_id = await self.bus.publish(outgoing)
        except IOFailure as exc:
            raise http_error(exc) from None
        self.send(room.sent_body(message_id))


AWAITING_ROOM_HANDLERS = (AwaitingPollHandler, AwaitingSendHandler)


class RoomSocket(tornado.websocket.WebSocketHandler, JsonHandler):
    """``/room/ws``: relays ``bus.messages(after)`` to the member, publishes its frames.

    ``bus`` is any object with the coroutines ``messages`` (an async iterator), ``publish``,
    ``socket_opened`` and ``socket_closed``. The socket lives on the event loop whatever the
    model's HTTP handlers block on. Everything refused before the upgrade is a JSON error like
    any other answer (JsonHandler): a bad query or a plain GET 400, a dead bus 503.
    """

    def initialize(self, bus: Any) -> None:
        self.bus = bus
        self._relay: asyncio.Task | None = None

    async def get(self, *args: Any, **kwargs: Any) -> None:
        self.after_id = self.after()
        try:
            room.check_upgrade(self.request.headers)
        except endpoints.BadRequest as exc:
            raise JsonError(400, str(exc)) from None
        try:
            await self.bus.socket_opened()  # counted before the upgrade: every way out uncounts
        except IOFailure as exc:
            raise http_error(exc) from None
        try:
            await super().get(*args, **kwargs)  # returns once the socket is closed
        finally:
            await self.bus.socket_closed()

    def open(self, *args: Any, **kwargs: Any) -> None:
        self.settings["room_sockets"].add(self)
        self._relay = asyncio.create_task(self._relay_messages())

    async def on_message(self, message: str | bytes) -> None:
        """Publish the member's frame (Tornado reads the next one only after this returns)."""
        if self.ws_connection is None:
            return  # we closed the socket: frames the member sent meanwhile are dropped
        try:
            outgoing = room.parse_frame(message)
        except endpoints.BadRequest as exc:
            self.close(room.CLOSE_POLICY_VIOLATION, room.close_reason(str(exc)))
            return
        try:
            await self.bus.publish(outgoing)
        except IOFailure as exc:
            self.close(room.CLOSE_BUS_FAILED, room.close_reason(str(exc)))

    def on_close(self) -> None:
        self.settings["room_sockets"].discard(self)
        if self._relay is not None:
            self._relay.cancel()

    async def _relay_messages(self) -> None:
        """Each message as one text frame of its stored bytes, waiting for each to be written
        (a slow member slows only its own relay)."""
        try:
            async for message in self.bus.messages(self.after_id):
                await self.write_message(message)
        except IOFailure as exc:
            self.close(room.CLOSE_BUS_FAILED, room.close_reason(str(exc)))
        except tornado.websocket.WebSocketClosedError:
            pass  # the member left while a frame was on its way


class HelloHandler(JsonHandler):
    def get(self) -> None:
        self.no_params()
        self.send(endpoints.hello_body())


class HealthHandler(JsonHandler):
    def initialize(self, model: str) -> None:
        self.model = model

    def get(self) -> None:
        self.no_params()
        self.send(endpoints.health_body(self.model))


class NotFoundHandler(JsonHandler):
    def prepare(self) -> None:
        super().prepare()
        raise JsonError(404, responses[404])


def _no_access_log(handler: tornado.web.RequestHandler) -> None:
    """Access logging is off on every model (gunicorn's accesslog is off too)."""


def make_app(
    model: str,
    delay_handler: type[JsonHandler],
    backend: object,
    room_handlers: tuple[type[JsonHandler], type[JsonHandler]],
    bus: object,
    config: ServerConfig,
    socket_bus: object | None = None,
) -> tornado.web.Application:
    """The application: shared routes plus the model's handlers for the delay endpoints and
    the room (``/room/poll``, ``/room/send`` over ``bus``; ``/room/ws`` streams from
    ``socket_bus``, by default ``bus``)."""
    poll_handler, send_handler = room_handlers
    routes: list[Any] = [
        (r"/hello", HelloHandler),
        (r"/health", HealthHandler, {"model": model}),
        (rf"/({'|'.join(endpoints.DELAY_ENDPOINTS)})", delay_handler, {"backend": backend}),
        (r"/room/poll", poll_handler, {"bus": bus}),
        (r"/room/send", send_handler, {"bus": bus}),
        (room.WS_PATH, RoomSocket, {"bus": socket_bus or bus}),
    ]
    return tornado.web.Application(
        routes,
        default_handler_class=NotFoundHandler,
        log_function=_no_access_log,
        compress_response=False,
        request_counter=RequestCounter(config.stats_dir),
        room_sockets=set(),  # the open RoomSockets, told when the server stops
        # above room.MAX_BODY_BYTES, so a frame between the two gets our 1008, not a 1009
        websocket_max_message_size=room.WS_MAX_MESSAGE_BYTES,
    )


async def serve_until_stopped(app: tornado.web.Application, sockets: list[socket.socket]) -> None:
    """Serve ``app`` on ``sockets``, watching the loop's lag, until SIGTERM or SIGINT; then
    stop listening and tell open WebSocket members the server is going away."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    app.settings["request_counter"].watch_loop()
    await stop.wait()
    server.stop()
    for member in list(app.settings["room_sockets"]):
        member.close(room.CLOSE_GOING_AWAY, "server stopping")


def bind_or_exit(
    config: ServerConfig, prog: str, reuse_port: bool = False
) -> list[socket.socket]:
    """The listening sockets, or exit with one line (no traceback) if the address is unusable."""
    try:
        return tornado.netutil.bind_sockets(
            config.port, config.host, backlog=config.backlog, reuse_port=reuse_port
        )
    except OSError as exc:
        sys.exit(f"{prog}: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}")

"""The ``fastapi-uvicorn`` model: ``async def`` FastAPI routes on uvicorn, uvloop and httptools.

What a team starting today writes. One process, like ``tornado-coroutine`` (``--workers N``
starts N under uvicorn's supervisor; the harness runs one: the registry's override). ``/sleep``
awaits ``asyncio.sleep``; ``/fetch`` uses one aiohttp session whose ``TCPConnector(limit=
max_clients)`` caps the fetches in flight (a new connection per fetch, as every model does:
``UPSTREAM_KEEPALIVE``); ``/sql`` the aiomysql pool of ``servers.aio_mysql``; the room
``servers.bus_asyncio`` (one subscription per process) and Starlette's WebSocket.

Every answer is ``servers.endpoints``/``servers.room`` bytes: the raw query string is parsed by
them (not by FastAPI's parameters), so ``ms=1&ms=2`` or ``%ff`` is the same 400 as elsewhere;
404, 405 and 500 are one-line JSON errors; ``/room/ws`` refuses a bad query, a plain GET or a
dead bus with the same JSON before the upgrade (ASGI's WebSocket denial response).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from http.client import responses

import aiohttp
import uvicorn
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from servers import endpoints, room
from servers.aio_mysql import MysqlPool
from servers.backends import IOFailure, delay_url, no_upstream, upstream_failed
from servers.bus_asyncio import AsyncBus
from servers.config import ServerConfig, parse_args
from servers.counters import RequestCounter
from servers.startup import die_with_parent, exit_if_address_taken, exit_on_bad_config

MODEL = "fastapi-uvicorn"
KEEPALIVE_S = 5  # idle kept-alive connections, as gthread keeps them
SHUTDOWN_S = 1  # requests still running at SIGTERM (held polls) get this long, then end
ARGV_ENV = "ASYNCBENCH_FASTAPI_ARGV"  # the flags, for the processes of --workers N


class AsyncIO:
    """The process's non-blocking I/O: one aiohttp session, one aiomysql pool (build it in the
    running loop)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        connector = aiohttp.TCPConnector(limit=config.max_clients, force_close=True)
        timeout = aiohttp.ClientTimeout(total=config.timeout_s, connect=config.timeout_s)
        self.client = aiohttp.ClientSession(connector=connector, timeout=timeout)
        self.mysql = MysqlPool(config)

    async def run(self, endpoint: str, ms: int) -> None:
        """Do the work of ``/sleep``, ``/fetch`` or ``/sql`` for ``ms`` milliseconds."""
        await {"sleep": self.sleep, "fetch": self.fetch, "sql": self.mysql.sql}[endpoint](ms)

    async def sleep(self, ms: int) -> None:
        # uvloop's timers fire up to 1 ms early (libuv truncates its clock to whole ms:
        # MagicStack/uvloop#739); every model waits at least ``ms``, so wait out the rest. A
        # rest under 0.5 ms would round to a 0 ms timer and spin the loop: wait 1 ms instead.
        deadline = time.perf_counter() + ms / 1000
        await asyncio.sleep(ms / 1000)
        while (left := deadline - time.perf_counter()) > 0:
            await asyncio.sleep(max(left, 0.001))

    async def fetch(self, ms: int) -> None:
        if not self.config.upstream:
            raise no_upstream()
        try:
            async with self.client.get(delay_url(self.config.upstream, ms)) as response:
                await response.read()
        except (OSError, aiohttp.ClientError, TimeoutError) as exc:
            raise upstream_failed(type(exc).__name__) from None
        if response.status != 200:
            raise upstream_failed(f"HTTP {response.status}")

    async def close(self) -> None:
        await self.client.close()
        await self.mysql.close()


def json_response(body: bytes, status: int = 200, headers: dict | None = None) -> Response:
    return Response(body, status_code=status, media_type=endpoints.CONTENT_TYPE, headers=headers)


class Timing:
    """ASGI middleware: every HTTP answer counted and carrying its ``Server-Timing`` (from the
    request reaching the app to the answer's head)."""

    def __init__(self, app: ASGIApp, counter: RequestCounter) -> None:
        self.app, self.counter = app, counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                timing = endpoints.server_timing(time.perf_counter() - started)
                headers = [*message.get("headers", []), (b"Server-Timing", timing.encode())]
                message = {**message, "headers": headers}
                self.counter.add()
            await send(message)

        await self.app(scope, receive, timed)


def create_app(config: ServerConfig) -> FastAPI:
    """The application; its I/O objects are made when the loop starts (lifespan)."""
    io: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        io["backend"], io["bus"] = AsyncIO(config), AsyncBus(config)
        counter.watch_loop()
        yield
        await io["backend"].close()
        await io["bus"].close()

    counter = RequestCounter(config.stats_dir)
    app = FastAPI(lifespan=lifespan, redirect_slashes=False, docs_url=None, redoc_url=None,
                  openapi_url=None)  # fmt: skip
    add_routes(app, io)
    add_room_routes(app, io)
    add_error_handlers(app)
    app.add_middleware(Timing, counter=counter)
    return app


def query(request: Request | WebSocket) -> bytes:
    return request.scope["query_string"]


def add_routes(app: FastAPI, io: dict) -> None:
    @app.get("/hello")
    async def hello(request: Request) -> Response:
        endpoints.parse_no_params(query(request))
        return json_response(endpoints.hello_body())

    @app.get("/health")
    async def health(request: Request) -> Response:
        endpoints.parse_no_params(query(request))
        return json_response(endpoints.health_body(MODEL))

    def delay_route(endpoint: str):
        async def delay(request: Request) -> Response:
            ms = endpoints.parse_delay(query(request))
            await io["backend"].run(endpoint, ms)
            return json_response(endpoints.delay_body(endpoint, ms))

        return delay

    for endpoint in endpoints.DELAY_ENDPOINTS:
        app.add_api_route(f"/{endpoint}", delay_route(endpoint), methods=["GET"])


def add_room_routes(app: FastAPI, io: dict) -> None:
    @app.get("/room/poll")
    async def room_poll(request: Request) -> Response:
        messages = await io["bus"].poll(room.parse_after(query(request)))
        return json_response(room.poll_body(messages)) if messages else json_response(b"", 204)

    @app.post("/room/send")
    async def room_send(request: Request) -> Response:
        endpoints.parse_no_params(query(request))
        outgoing = room.parse_send(await read_body(request, room.MAX_BODY_BYTES + 1))
        return json_response(room.sent_body(await io["bus"].publish(outgoing)))

    @app.get(room.WS_PATH)
    async def not_upgraded(request: Request) -> Response:
        """A GET that is no WebSocket handshake: the same refusals as every model's."""
        room.parse_after(query(request))
        room.check_upgrade(request.headers)
        raise endpoints.BadRequest("not a WebSocket upgrade")

    @app.websocket(room.WS_PATH)
    async def member_socket(ws: WebSocket) -> None:
        bus: AsyncBus = io["bus"]
        try:
            after = room.parse_after(query(ws))
            room.check_upgrade(ws.headers)
            await bus.socket_opened()  # counted before the upgrade: every way out uncounts
        except endpoints.BadRequest as exc:
            return await ws.send_denial_response(json_response(endpoints.error_body(str(exc)), 400))
        except IOFailure as exc:
            body = endpoints.error_body(str(exc))
            return await ws.send_denial_response(json_response(body, exc.status))
        try:
            await ws.accept()
            await relay(ws, bus, after)
        finally:
            await bus.socket_closed()


async def read_body(request: Request, limit: int) -> bytes:
    """At most ``limit`` bytes of the body (more is refused by the parser anyway)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) >= limit:
            break
    return body[:limit]


async def relay(ws: WebSocket, bus: AsyncBus, after: int) -> None:
    """Relay the room to the member and publish its frames until one side ends: the member
    left, a bad frame (1008, this socket only) or a failed bus (1011)."""
    tasks = {asyncio.create_task(send_messages(ws, bus, after)),
             asyncio.create_task(publish_frames(ws, bus))}  # fmt: skip
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()  # not awaited: awaiting the cancelled relay here hung now and then
    closing = next(iter(done)).result()
    if closing is not None:
        with contextlib.suppress(Exception):  # the member may have gone meanwhile
            await ws.close(*closing)


async def send_messages(ws: WebSocket, bus: AsyncBus, after: int) -> tuple[int, str] | None:
    """Each message as one text frame of its stored bytes, each awaited."""
    try:
        async for message in bus.messages(after):
            await ws.send_text(message.decode())  # stored bytes are ASCII JSON
    except IOFailure as exc:
        return room.CLOSE_BUS_FAILED, room.close_reason(str(exc))
    except (WebSocketDisconnect, OSError, RuntimeError):
        return None  # the member left while a frame was on its way
    return None


async def publish_frames(ws: WebSocket, bus: AsyncBus) -> tuple[int, str] | None:
    """Publish the member's frames one at a time; the close to send when one is refused."""
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return None
        frame = message["text"] if message.get("text") is not None else message.get("bytes")
        try:
            outgoing = room.parse_frame(frame)
        except endpoints.BadRequest as exc:
            return room.CLOSE_POLICY_VIOLATION, room.close_reason(str(exc))
        try:
            await bus.publish(outgoing)
        except IOFailure as exc:
            return room.CLOSE_BUS_FAILED, room.close_reason(str(exc))


def add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(endpoints.BadRequest)
    async def bad_request(_request: Request, exc: endpoints.BadRequest) -> Response:
        return json_response(endpoints.error_body(str(exc)), 400)

    @app.exception_handler(IOFailure)
    async def io_failure(_request: Request, exc: IOFailure) -> Response:
        return json_response(endpoints.error_body(str(exc)), exc.status)

    @app.exception_handler(HTTPException)
    async def http_exception(_request: Request, exc: HTTPException) -> Response:
        """404, 405 (keeping its ``Allow`` header)...: the standard phrase as a JSON error."""
        body = endpoints.error_body(responses.get(exc.status_code, "Error"))
        return json_response(body, exc.status_code, exc.headers)

    @app.exception_handler(Exception)
    async def bug(_request: Request, _exc: Exception) -> Response:
        """A bug: a JSON 500 (uvicorn still logs the traceback)."""
        return json_response(endpoints.error_body(responses[500]), 500)


class CheckedUpgrades(HttpToolsProtocol):
    """uvicorn's httptools protocol, upgrading only a handshake ``room.check_upgrade`` accepts:
    any other reaches the app as a plain GET, refused with the JSON 400 of every model (the
    WebSocket libraries answer their own: a text "invalid Sec-WebSocket-Version header", a bare
    426). A request httptools cannot parse (e.g. a method it does not know, which gunicorn and
    Tornado route to a 405) is a one-line JSON 400 too, and the connection closes."""

    def send_400_response(self, msg: str) -> None:
        body = endpoints.error_body(msg)
        head = (f"HTTP/1.1 400 Bad Request\r\ncontent-type: {endpoints.CONTENT_TYPE}\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")  # fmt: skip
        self.transport.write(head.encode() + body)
        self.transport.close()

    def _should_upgrade(self) -> bool:
        if not super()._should_upgrade():
            return False
        try:
            room.check_upgrade(Headers(raw=self.headers))
        except endpoints.BadRequest:
            return False
        return True

    def _unsupported_upgrade_warning(self) -> None:
        """Refused by ``_should_upgrade``: the app answers it, nothing to warn about."""


def uvicorn_options(config: ServerConfig) -> dict:
    return {
        "host": config.host,
        "port": config.port,
        "loop": "uvloop",
        "http": CheckedUpgrades,
        "ws": "websockets-sansio",
        "ws_max_size": room.WS_MAX_MESSAGE_BYTES,  # above room.MAX_BODY_BYTES: our 1008 below
        "ws_ping_interval": None,  # no pings, as on every model
        "backlog": config.backlog,
        "timeout_keep_alive": KEEPALIVE_S,
        "timeout_graceful_shutdown": SHUTDOWN_S,
        "lifespan": "on",
        "access_log": False,
        "log_level": "warning",
        "server_header": False,
    }


def worker_app() -> FastAPI:
    """The app in one of ``--workers N``'s processes (uvicorn's factory, in a fresh process)."""
    die_with_parent(os.getppid())
    return create_app(parse_args(json.loads(os.environ[ARGV_ENV]), prog=MODEL))


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv, prog=MODEL)
    exit_on_bad_config(config, MODEL)
    exit_if_address_taken(config, MODEL)
    if config.workers == 1:
        uvicorn.Server(uvicorn.Config(create_app(config), **uvicorn_options(config))).run()
        return
    os.environ.update({ARGV_ENV: json.dumps(config.to_argv()), **config.to_env()})
    # The supervisor pings each worker and waits this long for an answer; on a stop the
    # workers are gone and every ping waits it out (5 s by default) before SIGTERM is seen.
    uvicorn.run("servers.fastapi_uvicorn:worker_app", factory=True, workers=config.workers,
                timeout_worker_healthcheck=1, **uvicorn_options(config))  # fmt: skip


if __name__ == "__main__":
    main()

"""The ``tornado-coroutine`` model: one process, ``async def`` handlers, non-blocking I/O.

``/sleep`` awaits ``asyncio.sleep``; ``/fetch`` uses ``AsyncHTTPClient`` (the simple client, a new
connection per request, ``max_clients`` raised from Tornado's default of 10 so it is not a hidden
cap, and an IP-literal upstream connected without a resolver hop: see ``LiteralResolver``);
``/sql`` uses an ``aiomysql`` pool of up to ``pool_size`` connections (``servers.aio_mysql``).
The client and the pool are created inside the running loop. ``/room/poll``, ``/room/send``
and ``/room/ws`` use ``servers.bus_asyncio``: one Redis subscription fanned out to every held
poll and open socket. SIGTERM/SIGINT stop it promptly and close the pools.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.netutil import DefaultLoopResolver, Resolver

from servers.aio_mysql import MysqlPool
from servers.backends import delay_url, no_upstream, upstream_failed
from servers.bus_asyncio import AsyncBus
from servers.config import ServerConfig, parse_args
from servers.startup import exit_on_bad_config
from servers.tornado_common import (
    AWAITING_ROOM_HANDLERS,
    AwaitingDelayHandler,
    bind_or_exit,
    make_app,
    serve_until_stopped,
)

MODEL = "tornado-coroutine"


class LiteralResolver(Resolver):
    """Answers an IP literal itself and resolves names with Tornado's default resolver.

    Tornado's default resolver calls ``loop.getaddrinfo`` for every connection, which asyncio
    always runs in the loop's default thread pool (``min(32, cores + 4)`` threads: 6 here), even
    for ``127.0.0.1``. With a new connection per fetch, every request then queued for one of
    those threads and hopped back to the loop: measured with ``--profile`` at 64 users, 24 % of
    the coroutine server's samples were in that hop, and ``fetch`` ran 15 % under its CPU bound.
    The blocking models' ``http.client`` resolves a literal in their own thread at no cost, so
    the hop was a handicap of one model only, not a property of async I/O.
    """

    def initialize(self) -> None:
        self.names = DefaultLoopResolver()

    async def resolve(
        self, host: str, port: int, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[tuple[int, Any]]:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return await self.names.resolve(host, port, family)
        if address.version == 4:
            return [(socket.AF_INET, (host, port))]
        return [(socket.AF_INET6, (host, port, 0, 0))]


class AsyncIO:
    """The non-blocking I/O of the process: one HTTP client, one lazily created MySQL pool
    (``servers.aio_mysql``)."""

    def __init__(self, config: ServerConfig) -> None:
        AsyncHTTPClient.configure(None, max_clients=config.max_clients, resolver=LiteralResolver())
        self.config = config
        self.client = AsyncHTTPClient()
        self.mysql = MysqlPool(config)

    async def run(self, endpoint: str, ms: int) -> None:
        """Do the work of ``/sleep``, ``/fetch`` or ``/sql`` for ``ms`` milliseconds."""
        await {"sleep": self.sleep, "fetch": self.fetch, "sql": self.sql}[endpoint](ms)

    async def sleep(self, ms: int) -> None:
        await asyncio.sleep(ms / 1000)

    async def fetch(self, ms: int) -> None:
        if not self.config.upstream:
            raise no_upstream()
        try:
            response = await self.client.fetch(
                delay_url(self.config.upstream, ms),
                connect_timeout=self.config.timeout_s,
                request_timeout=self.config.timeout_s,
                raise_error=False,  # still raises on connection errors and timeouts
            )
        except (OSError, HTTPClientError) as exc:
            raise upstream_failed(type(exc).__name__) from None
        if response.code != 200:
            raise upstream_failed(f"HTTP {response.code}")

    async def sql(self, ms: int) -> None:
        await self.mysql.sql(ms)

    async def close(self) -> None:
        self.client.close()
        await self.mysql.close()


async def serve(config: ServerConfig, sockets: list[socket.socket]) -> None:
    """Serve on ``sockets`` until SIGTERM or SIGINT, then stop and close the I/O resources."""
    backend, bus = AsyncIO(config), AsyncBus(config)
    app = make_app(MODEL, AwaitingDelayHandler, backend, AWAITING_ROOM_HANDLERS, bus, config)
    await serve_until_stopped(app, sockets)
    await backend.close()
    await bus.close()


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv, prog=MODEL)
    exit_on_bad_config(config, MODEL)
    sockets = bind_or_exit(config, MODEL)
    asyncio.run(serve(config, sockets))


if __name__ == "__main__":
    main()

"""The ``tornado-coroutine`` model: one process, ``async def`` handlers, non-blocking I/O.

``/sleep`` awaits ``asyncio.sleep``; ``/fetch`` uses ``AsyncHTTPClient`` (the simple client, a new
connection per request, ``max_clients`` raised from Tornado's default of 10 so it is not a hidden
cap, and an IP-literal upstream connected without a resolver hop: see ``LiteralResolver``);
``/sql`` uses an ``aiomysql`` pool of up to ``pool_size`` connections. The client and the pool
are created inside the running loop. ``/room/poll``, ``/room/send`` and ``/room/ws`` use
``servers.bus_asyncio``: one Redis subscription fanned out to every held poll and open socket.
SIGTERM/SIGINT stop it promptly and close the pools.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import aiomysql
import pymysql
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.netutil import DefaultLoopResolver, Resolver

from servers.backends import (
    SLEEP_SQL,
    database_unavailable,
    delay_url,
    mysql_detail,
    no_database,
    no_upstream,
    upstream_failed,
)
from servers.bus_asyncio import AsyncBus
from servers.config import MysqlUrl, ServerConfig, parse_args
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
    """The non-blocking I/O of the process: one HTTP client, one lazily created MySQL pool."""

    def __init__(self, config: ServerConfig) -> None:
        AsyncHTTPClient.configure(None, max_clients=config.max_clients, resolver=LiteralResolver())
        self.config = config
        self.client = AsyncHTTPClient()
        self._pool: aiomysql.Pool | None = None
        self._pool_lock = asyncio.Lock()

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
        pool = await self._get_pool()
        try:
            async with pool.acquire() as conn:
                await self._sleep_query(conn, ms)
        except pymysql.MySQLError as exc:
            raise database_unavailable(mysql_detail(exc)) from None

    async def _sleep_query(self, conn: aiomysql.Connection, ms: int) -> None:
        try:
            async with asyncio.timeout(self.config.timeout_s), conn.cursor() as cur:
                await cur.execute(SLEEP_SQL, (ms / 1000,))
                await cur.fetchall()
        except TimeoutError:
            conn.close()  # a half-read result must not go back to the pool
            raise database_unavailable("timeout") from None

    async def _get_pool(self) -> aiomysql.Pool:
        if self._pool is not None:
            return self._pool
        if not self.config.mysql_url:
            raise no_database()
        async with self._pool_lock:  # the first /sql requests may arrive together
            if self._pool is None:
                self._pool = await self._create_pool(self.config.mysql_url)
        return self._pool

    async def _create_pool(self, url: str) -> aiomysql.Pool:
        try:
            return await aiomysql.create_pool(
                minsize=1,
                maxsize=self.config.pool_size,
                connect_timeout=self.config.timeout_s,
                **MysqlUrl.parse(url).connect_kwargs(db_key="db"),
            )
        except pymysql.MySQLError as exc:
            raise database_unavailable(mysql_detail(exc)) from None

    async def close(self) -> None:
        self.client.close()
        if self._pool is not None:
            self._pool.terminate()
            await self._pool.wait_closed()


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

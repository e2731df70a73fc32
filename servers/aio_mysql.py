"""The coroutine models' ``/sql``: ``SELECT SLEEP`` on an ``aiomysql`` pool of up to
``pool_size`` connections, created lazily inside the running loop.

``tornado-coroutine`` and ``fastapi-uvicorn`` both use it, so their database work cannot drift
apart: the same pool, the same timeout, the same failures.
"""

from __future__ import annotations

import asyncio

import aiomysql
import pymysql

from servers.backends import SLEEP_SQL, database_unavailable, mysql_detail, no_database
from servers.config import MysqlUrl, ServerConfig


class MysqlPool:
    """One process's MySQL pool (build it inside the running loop)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._pool: aiomysql.Pool | None = None
        self._pool_lock = asyncio.Lock()

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
        if self._pool is not None:
            self._pool.terminate()
            await self._pool.wait_closed()

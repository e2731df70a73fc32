"""The ``tornado-threadpool`` model: ``async def`` handlers that hand blocking calls to threads.

The usual way to keep a blocking library inside an async server: each ``/sleep``, ``/fetch``
and ``/sql`` runs the very blocking I/O the blocking models use (``servers.blocking_io``:
``time.sleep``, ``http.client``, ``pymysql`` with one connection per thread) in a
``ThreadPoolExecutor(max_workers=threads)`` through ``IOLoop.run_in_executor``, while the
event loop keeps accepting and answering. One process; it holds ``threads`` requests at once,
the rest wait in the executor's queue.
"""

from __future__ import annotations

import asyncio
import os
import socket
from concurrent.futures import ThreadPoolExecutor

from tornado.ioloop import IOLoop

from servers.blocking_io import BlockingIO
from servers.bus_blocking import BlockingBus
from servers.config import ServerConfig, parse_args
from servers.room import Outgoing
from servers.startup import exit_on_bad_config
from servers.tornado_common import (
    AWAITING_ROOM_HANDLERS,
    AwaitingDelayHandler,
    bind_or_exit,
    make_app,
    serve_until_stopped,
)

MODEL = "tornado-threadpool"


class ThreadPoolIO:
    """Blocking I/O and the room's blocking bus run on one thread pool, awaited by the handlers
    (a held ``/room/poll`` holds a pool thread, like any other request)."""

    def __init__(self, config: ServerConfig) -> None:
        self.blocking, self.bus = BlockingIO(config), BlockingBus(config)
        self.executor = ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="io")

    async def run(self, endpoint: str, ms: int) -> None:
        await self._in_pool(self.blocking.run, endpoint, ms)

    async def poll(self, after: int) -> list[bytes]:
        return await self._in_pool(self.bus.poll, after)

    async def publish(self, outgoing: Outgoing) -> int:
        return await self._in_pool(self.bus.publish, outgoing)

    async def _in_pool(self, call, *args):
        return await IOLoop.current().run_in_executor(self.executor, call, *args)

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)


async def serve(config: ServerConfig, sockets: list[socket.socket]) -> None:
    """Serve on ``sockets`` until SIGTERM or SIGINT, then stop and drop the pool."""
    backend = ThreadPoolIO(config)
    app = make_app(MODEL, AwaitingDelayHandler, backend, AWAITING_ROOM_HANDLERS, backend, config)
    await serve_until_stopped(app, sockets)
    backend.close()


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv, prog=MODEL)
    exit_on_bad_config(config, MODEL)
    sockets = bind_or_exit(config, MODEL)
    asyncio.run(serve(config, sockets))
    # Pool threads still inside a long blocking call would hold the interpreter's exit open
    # until it returns; a stopped benchmark server has nothing left to finish.
    os._exit(0)


if __name__ == "__main__":
    main()

"""The ``tornado-threadpool`` model: ``async def`` handlers that hand blocking calls to threads.

The usual way to keep a blocking library inside an async server: each ``/sleep``, ``/fetch``
and ``/sql`` runs the very blocking I/O the blocking models use (``servers.blocking_io``:
``time.sleep``, ``http.client``, ``pymysql`` on the threads' shared connections) in a
``ThreadPoolExecutor(max_workers=threads)`` through ``IOLoop.run_in_executor``, while the
event loop keeps accepting and answering. One process; it holds ``threads`` requests at once,
the rest wait in the executor's queue.

``/room/ws`` sockets live on the loop (``RoomSocket``), but each one's stream is the blocking bus
stepped in the same pool: a step waits on Redis for the next message (at most ``hold_s``) on a
pool thread. So at most ``threads`` sockets wait for messages at once; the others are connected
and their next step waits in the executor's queue, behind every other request.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
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
    (a held ``/room/poll`` or a socket waiting for a message holds a pool thread, like any other
    request)."""

    def __init__(self, config: ServerConfig) -> None:
        self.blocking, self.bus = BlockingIO(config), BlockingBus(config)
        self.executor = ThreadPoolExecutor(max_workers=config.threads, thread_name_prefix="io")
        # The sockets gauge is the harness's instrument, not the model's work: counting on the
        # model's pool would leave a new socket unconnected until a waiting one got a message.
        self.gauge = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gauge")

    async def run(self, endpoint: str, ms: int) -> None:
        await self._in_pool(self.blocking.run, endpoint, ms)

    async def poll(self, after: int) -> list[bytes]:
        return await self._in_pool(self.bus.poll, after)

    async def publish(self, outgoing: Outgoing) -> int:
        return await self._in_pool(self.bus.publish, outgoing)

    async def messages(self, after: int) -> AsyncIterator[bytes]:
        """A socket's stream, one blocking step at a time on a pool thread. A closed socket's
        relay is cancelled: its queued step is dropped, a running one ends with its wait."""
        stream = self.bus.stream(after)
        while True:
            for message in await self._in_pool(stream.next, self.bus.hold_s):
                yield message

    async def socket_opened(self) -> None:
        await IOLoop.current().run_in_executor(self.gauge, self.bus.socket_opened)

    async def socket_closed(self) -> None:
        await IOLoop.current().run_in_executor(self.gauge, self.bus.socket_closed)

    async def _in_pool(self, call, *args):
        return await IOLoop.current().run_in_executor(self.executor, call, *args)

    def close(self) -> None:
        """Drop the model's pool. The gauge's stays: sockets closing as the loop ends still
        uncount themselves (the process then exits without waiting for either)."""
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

"""The ``tornado-forked`` model: Tornado with blocking handlers in ``workers`` forked processes.

The parent binds the listening sockets, then ``fork_processes`` forks the children and stays in
there waiting on them. Each child builds its app and ``HTTPServer`` and runs its own event loop,
but its handlers block (``servers.blocking_io``, ``servers.bus_blocking``), so a child serves one
request at a time, like a gunicorn sync worker: a held ``/room/poll`` blocks its child. The
children share the listening socket; whichever child is idle when a connection arrives accepts it
(and every other connection queued at that moment, which can make the load uneven between
children: a property of this model, not of the harness). With ``--reuse-port`` each child binds
its own ``SO_REUSEPORT`` socket instead, and the kernel spreads new connections over the
children by a hash of the connection: the usual remedy.

``/room/ws`` is the shared ``RoomSocket``: each child relays its sockets from its own
``AsyncBus`` (one subscription per child, built in the child's loop), so sockets do not hold a
child the way a blocking poll does; but while the child blocks in a handler, none of its sockets
is relayed.

Process life cycle: children get ``PR_SET_PDEATHSIG`` (SIGTERM) so they die with the parent;
SIGTERM to the parent kills it at once (default action) and thereby every child. A child that
dies on its own (signal or non-zero exit) is restarted by ``fork_processes``, up to Tornado's
default ``max_restarts`` (100): that is Tornado's documented behaviour and we keep it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket

import tornado.httpserver
import tornado.process

from servers.backends import IOFailure
from servers.blocking_io import BlockingIO
from servers.bus_asyncio import AsyncBus
from servers.bus_blocking import BlockingBus
from servers.config import ServerConfig, parse_args
from servers.endpoints import delay_body
from servers.room import sent_body
from servers.startup import die_with_parent, exit_if_address_taken, exit_on_bad_config
from servers.tornado_common import JsonHandler, bind_or_exit, http_error, make_app

MODEL = "tornado-forked"
REUSE_PORT_MODEL = "tornado-forked-reuseport"  # the same module with --reuse-port


class BlockingDelayHandler(JsonHandler):
    """``/sleep``, ``/fetch``, ``/sql`` with blocking I/O: the child's loop waits meanwhile."""

    def initialize(self, backend: BlockingIO) -> None:
        self.backend = backend

    def get(self, endpoint: str) -> None:
        ms = self.delay_ms()
        try:
            self.backend.run(endpoint, ms)
        except IOFailure as exc:
            raise http_error(exc) from None
        self.send(delay_body(endpoint, ms))


class BlockingPollHandler(JsonHandler):
    """``/room/poll`` held by a blocking wait: the child serves nothing else meanwhile."""

    def initialize(self, bus: BlockingBus) -> None:
        self.bus = bus

    def get(self) -> None:
        after = self.after()
        try:
            messages = self.bus.poll(after)
        except IOFailure as exc:
            raise http_error(exc) from None
        self.send_poll(messages)


class BlockingSendHandler(JsonHandler):
    """``/room/send`` with a blocking publish."""

    def initialize(self, bus: BlockingBus) -> None:
        self.bus = bus

    def post(self) -> None:
        outgoing = self.outgoing()
        try:
            message_id = self.bus.publish(outgoing)
        except IOFailure as exc:
            raise http_error(exc) from None
        self.send(sent_body(message_id))


async def serve(config: ServerConfig, sockets: list[socket.socket]) -> None:
    """One child: its own app, I/O state and HTTPServer on the shared sockets, until killed."""
    name = REUSE_PORT_MODEL if config.reuse_port else MODEL
    room_handlers = (BlockingPollHandler, BlockingSendHandler)
    backend, bus, socket_bus = BlockingIO(config), BlockingBus(config), AsyncBus(config)
    backend.warm()  # the blocking handlers run on this thread
    app = make_app(name, BlockingDelayHandler, backend, room_handlers, bus, config, socket_bus)
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    app.settings["request_counter"].watch_loop()
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    config = parse_args(argv, prog=MODEL)
    name = REUSE_PORT_MODEL if config.reuse_port else MODEL
    exit_on_bad_config(config, name)
    if config.reuse_port:  # each child binds its own socket; the kernel spreads connections
        exit_if_address_taken(config, name)
        sockets = []
    else:
        sockets = bind_or_exit(config, name)
    # Ctrl-C ends every process at once, without one traceback per process.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    parent = os.getpid()
    tornado.process.fork_processes(config.workers)  # only children return from here
    die_with_parent(parent)
    if config.reuse_port:
        sockets = bind_or_exit(config, name, reuse_port=True)
    asyncio.run(serve(config, sockets))


if __name__ == "__main__":
    main()

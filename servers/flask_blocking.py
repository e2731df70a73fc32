"""The ``flask-blocking`` model: a Flask app on gunicorn ``sync`` workers, started in-process.

Each of ``workers`` processes serves one request at a time with the blocking I/O of
``servers.blocking_io`` and ``servers.bus_blocking`` (a held ``/room/poll`` occupies its worker;
other connections wait in the accept queue: the finding the room scenario measures).
Gunicorn's sync worker closes the connection after every response (``Connection: close``; its
``keepalive`` setting is ignored), so clients reconnect per request on this model, while the
Tornado models keep connections alive: the orchestrator records it.

``/room/ws`` (flask-sock) relays the room in the handler's thread for as long as the socket is
open (``relay``): a socket holds a whole sync worker here, a gthread thread in
``flask-threaded`` (plus the reader thread simple-websocket starts for every socket). With every
worker holding a socket, further upgrades wait unanswered in the accept queue, like held polls.

SIGTERM to the master stops every worker within a fraction of a second: workers treat SIGTERM
like gunicorn's quick-exit SIGQUIT (a benchmark server has nothing to drain), and get
``PR_SET_PDEATHSIG`` so they never outlive the master.
"""

from __future__ import annotations

import functools
import math
import os
import signal
import threading
import time
from http.client import responses
from typing import Any

from flask import Blueprint, Flask, Response, g, request
from flask_sock import Sock
from gunicorn.app.base import BaseApplication
from gunicorn.workers.base import Worker
from simple_websocket import Server as WebSocket
from werkzeug.exceptions import HTTPException

from servers import endpoints, room
from servers.backends import IOFailure
from servers.blocking_io import BlockingIO
from servers.bus_blocking import BlockingBus, MessageStream
from servers.config import ServerConfig, parse_args
from servers.counters import RequestCounter
from servers.startup import die_with_parent, exit_if_address_taken, exit_on_bad_config

MODEL = "flask-blocking"
GRACEFUL_TIMEOUT_S = 3
TICK_S = 0.1  # a socket's relay waits this long on the bus, then reads the member's frames
# flask-sock's options for every socket: a frame limit above room.MAX_BODY_BYTES (so our check
# answers 1008 below it), no pings (as on Tornado), and reader threads that never keep a
# stopping worker alive (each waits in recv until its client closes).
SOCK_SERVER_OPTIONS = {
    "max_message_size": room.WS_MAX_MESSAGE_BYTES,
    "ping_interval": None,
    "thread_class": functools.partial(threading.Thread, daemon=True),
}
_worker: Worker | None = None  # this process's gunicorn worker (set by post_worker_init)


def json_response(body: bytes, status: int = 200) -> Response:
    return Response(body, status=status, content_type=endpoints.CONTENT_TYPE)


def create_app(
    config: ServerConfig, model: str = MODEL, *, warm: bool | None = None,
    holders: int | None = None,
) -> Flask:  # fmt: skip
    """The Flask app; build it in the worker process (its ``BlockingIO`` owns connections).

    ``warm``: open a MySQL connection now (default: on a sync worker, which serves on the thread
    that loads the app; gthread does not). ``holders``: how many threads or greenlets of the
    process may wait on the room's bus at once (default ``threads``)."""
    app = Flask(__name__)
    backend = BlockingIO(config)
    if warm is None:
        warm = model == MODEL
    if warm:
        backend.warm()
    bus = BlockingBus(config, holders)
    counter = RequestCounter(config.stats_dir)
    app.extensions["request_counter"] = counter

    @app.before_request
    def start_clock() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def count(response: Response) -> Response:
        counter.add()
        if "started" in g:
            elapsed = time.perf_counter() - g.started
            response.headers[endpoints.SERVER_TIMING] = endpoints.server_timing(elapsed)
        return response

    @app.get("/hello")
    def hello() -> Response:
        endpoints.parse_no_params(request.query_string)
        return json_response(endpoints.hello_body())

    @app.get("/health")
    def health() -> Response:
        endpoints.parse_no_params(request.query_string)
        return json_response(endpoints.health_body(model))

    @app.get(f"/<any({', '.join(endpoints.DELAY_ENDPOINTS)}):endpoint>")
    def delay(endpoint: str) -> Response:
        ms = endpoints.parse_delay(request.query_string)
        backend.run(endpoint, ms)
        return json_response(endpoints.delay_body(endpoint, ms))

    @app.get("/room/poll")
    def room_poll() -> Response:
        messages = bus.poll(room.parse_after(request.query_string))
        return json_response(room.poll_body(messages)) if messages else json_response(b"", 204)

    @app.post("/room/send")
    def room_send() -> Response:
        endpoints.parse_no_params(request.query_string)
        outgoing = room.parse_send(request.stream.read(room.MAX_BODY_BYTES + 1))
        return json_response(room.sent_body(bus.publish(outgoing)))

    app.config["SOCK_SERVER_OPTIONS"] = SOCK_SERVER_OPTIONS
    app.register_blueprint(room_socket(bus))
    app.register_error_handler(endpoints.BadRequest, bad_request)
    app.register_error_handler(IOFailure, io_failure)
    app.register_error_handler(HTTPException, http_exception)
    return app


def room_socket(bus: BlockingBus) -> Blueprint:
    """``/room/ws`` with flask-sock, whose route upgrades before the view runs: so the checks
    are the blueprint's ``before_request`` (a bad query or a plain GET 400, a dead bus 503, like
    every model), and it counts the socket; ``teardown_request`` uncounts it on every way out."""
    blueprint = Blueprint("room_ws", __name__)

    @blueprint.before_request
    def open_socket() -> None:
        g.after = room.parse_after(request.query_string)
        room.check_upgrade(request.headers)
        bus.socket_opened()
        g.socket_counted = True

    @blueprint.teardown_request
    def close_socket(_exc: BaseException | None) -> None:
        if g.pop("socket_counted", False):
            bus.socket_closed()

    @Sock().route(room.WS_PATH, bp=blueprint)
    def member_socket(ws: WebSocket) -> None:
        relay(ws, bus.stream(g.after), bus)

    @blueprint.get(room.WS_PATH)
    def not_upgraded() -> Response:
        """Werkzeug routes only upgrade requests to the socket's rule: this rule brings a plain
        GET to ``open_socket`` too, which refuses it before this runs."""
        raise endpoints.BadRequest("not a WebSocket upgrade")

    return blueprint


def relay(ws: WebSocket, stream: MessageStream, bus: BlockingBus) -> None:
    """Send the room to one member and publish its frames until it leaves, holding this thread
    (a sync worker's only one), then close with the reason. A member gone ends it too:
    flask-sock catches the ``ConnectionClosed`` that ``send`` and ``receive`` raise then."""
    try:
        ws.close(*relay_until_refused(ws, stream, bus))
    except OSError:
        pass  # the member's connection broke mid-frame: there is no one left to tell


def relay_until_refused(
    ws: WebSocket, stream: MessageStream, bus: BlockingBus
) -> tuple[int, str]:
    """Relay until the worker stops, a frame is bad or the bus fails: the close code and reason.
    simple-websocket's reader thread queues the member's frames; they are taken between waits of
    TICK_S on the bus."""
    try:
        while worker_alive():
            for message in stream.next(TICK_S):
                ws.send(message.decode())  # stored bytes are ASCII JSON: a text frame of them
            while (frame := ws.receive(timeout=0)) is not None:
                bus.publish(room.parse_frame(frame))
        return room.CLOSE_GOING_AWAY, "server stopping"
    except endpoints.BadRequest as exc:
        return room.CLOSE_POLICY_VIOLATION, room.close_reason(str(exc))
    except IOFailure as exc:
        return room.CLOSE_BUS_FAILED, room.close_reason(str(exc))


def worker_alive() -> bool:
    """Tell the arbiter this worker is alive (a socket holds a sync worker far longer than
    gunicorn's ``timeout``, after which the arbiter kills a silent worker); False once the worker
    is stopping."""
    if _worker is None:  # not under gunicorn
        return True
    _worker.notify()
    return _worker.alive


def bad_request(exc: endpoints.BadRequest) -> Response:
    return json_response(endpoints.error_body(str(exc)), 400)


def io_failure(exc: IOFailure) -> Response:
    return json_response(endpoints.error_body(str(exc)), exc.status)


def http_exception(exc: HTTPException) -> Response:
    """404, 405 (keeping its ``Allow`` header), 500...: the standard phrase as a JSON error."""
    response = exc.get_response()
    code = exc.code or 500
    response.set_data(endpoints.error_body(responses.get(code, "Error")))
    response.content_type = endpoints.CONTENT_TYPE
    return response


def post_worker_init(worker: Worker) -> None:
    """In each worker: die with the master, exit at once on SIGTERM, and let socket relays
    notify the arbiter (``worker_alive``)."""
    global _worker
    _worker = worker
    die_with_parent(worker.ppid)
    signal.signal(signal.SIGTERM, worker.handle_quit)


def gunicorn_options(config: ServerConfig, model: str = MODEL) -> dict[str, Any]:
    return {
        "bind": f"{config.host}:{config.port}",
        "worker_class": "sync",
        "workers": config.workers,
        "backlog": config.backlog,
        "timeout": math.ceil(config.timeout_s),
        "graceful_timeout": GRACEFUL_TIMEOUT_S,
        "keepalive": 2,  # ignored by sync workers, which close after each response
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
        "proc_name": model,
        "control_socket_disable": True,  # else every instance shares ~/.gunicorn/gunicorn.ctl
        "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else None,
        "post_worker_init": post_worker_init,
    }


class GunicornApp(BaseApplication):
    """Gunicorn configured from a dict, serving ``create_app(config)`` (loaded in each worker)."""

    def __init__(
        self, config: ServerConfig, model: str, options: dict[str, Any], app=create_app
    ) -> None:
        self.config, self.model, self.options, self.app = config, model, options, app
        super().__init__(prog=model)

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self.app(self.config, self.model)


def serve(argv: list[str] | None, model: str, options, app=create_app) -> None:
    """Parse the flags, check them, and run gunicorn with ``options(config)``, each worker
    serving ``app(config, model)``."""
    config = parse_args(argv, prog=model)
    exit_on_bad_config(config, model)
    exit_if_address_taken(config, model)
    GunicornApp(config, model, options(config), app).run()


def main(argv: list[str] | None = None) -> None:
    serve(argv, MODEL, gunicorn_options)


if __name__ == "__main__":
    main()

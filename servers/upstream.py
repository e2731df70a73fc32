"""The slow upstream ``/fetch`` calls: a minimal HTTP/1.1 server on ``asyncio.Protocol``.

``GET /delay?ms=N`` answers after N ms and counts the hit; ``GET /stats`` reports the count,
``GET /health`` answers 200. It is deliberately not a framework: parsing is a few splits and a
delayed answer is one timer, so it stays far from saturation while the servers under test are
measured. Keep-alive (HTTP/1.1 default) and one request per connection both work; pipelined
requests are answered in order. Malformed requests get 400 and the connection is closed.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import signal
from dataclasses import dataclass, field
from http.client import responses

from servers.config import REQUEST_TIMEOUT_S
from servers.endpoints import BadRequest, error_body, health_body, parse_delay

MAX_HEAD_BYTES = 8192  # request line + headers; a longer head is refused
IDLE_TIMEOUT_S = REQUEST_TIMEOUT_S  # a connection that sends no complete request is closed


class Malformed(ValueError):
    """The request cannot be parsed; answer 400 and close."""


@dataclass
class Stats:
    hits: int = 0
    connections: set[UpstreamProtocol] = field(default_factory=set)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    keep_alive: bool


def parse_head(head: bytes) -> Request:
    """Parse a request line and headers (without the final blank line)."""
    lines = head.split(b"\r\n")
    try:
        method, target, version = lines[0].decode("ascii").split(" ")
    except (UnicodeDecodeError, ValueError):
        raise Malformed("malformed request line") from None
    if version not in ("HTTP/1.1", "HTTP/1.0") or not target.startswith("/"):
        raise Malformed("malformed request line")
    keep_alive = version == "HTTP/1.1"
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if not colon or not name:
            raise Malformed("malformed header line")
        if name == b"connection":
            keep_alive = b"keep-alive" in value if version == "HTTP/1.0" else b"close" not in value
        elif name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            raise Malformed("request bodies are not accepted")
    path, _, query = target.partition("?")
    return Request(method, path, query, keep_alive)


def response_bytes(status: int, body: bytes, keep_alive: bool) -> bytes:
    close = "" if keep_alive else "Connection: close\r\n"
    head = (
        f"HTTP/1.1 {status} {responses[status]}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{close}\r\n"
    )
    return head.encode("ascii") + body


def _json(payload: dict) -> bytes:
    return (json.dumps(payload, separators=(",", ":")) + "\n").encode()


class UpstreamProtocol(asyncio.Protocol):
    """One client connection: read a head, answer (maybe after a delay), repeat if keep-alive."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.pending: asyncio.TimerHandle | None = None  # the delayed answer being waited for
        self.idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.stats.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.connections.discard(self)
        for timer in (self.pending, self.idle):
            if timer:
                timer.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > 2 * MAX_HEAD_BYTES:
            self._send(400, error_body("request head too large"), keep_alive=False)
            return
        self._process()

    def close(self) -> None:
        if self.transport:
            self.transport.close()

    def _process(self) -> None:
        """Answer complete requests in order, stopping while a delayed answer is pending."""
        while self.transport and self.pending is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0 or end > MAX_HEAD_BYTES:
                if end > MAX_HEAD_BYTES or len(self.buffer) > MAX_HEAD_BYTES:
                    self._send(400, error_body("request head too large"), keep_alive=False)
                return
            head = bytes(self.buffer[:end])
            del self.buffer[: end + 4]
            if self.idle:
                self.idle.cancel()
            self._handle(head)

    def _handle(self, head: bytes) -> None:
        try:
            request = parse_head(head)
        except Malformed as exc:
            self._send(400, error_body(str(exc)), keep_alive=False)
            return
        if request.method != "GET":
            self._send(405, error_body("only GET is allowed"), request.keep_alive)
        elif request.path == "/delay":
            self._delay(request)
        elif request.path == "/stats":
            self._send(200, _json({"hits": self.stats.hits}), request.keep_alive)
        elif request.path == "/health":
            self._send(200, health_body("upstream"), request.keep_alive)
        else:
            self._send(404, error_body(responses[404]), request.keep_alive)

    def _delay(self, request: Request) -> None:
        try:
            ms = parse_delay(request.query)
        except BadRequest as exc:
            self._send(400, error_body(str(exc)), request.keep_alive)
            return
        self.stats.hits += 1
        body = _json({"delay_ms": ms})
        loop = asyncio.get_running_loop()
        self.pending = loop.call_later(ms / 1000, self._answer_delay, body, request.keep_alive)

    def _answer_delay(self, body: bytes, keep_alive: bool) -> None:
        self.pending = None
        self._send(200, body, keep_alive)
        self._process()

    def _send(self, status: int, body: bytes, keep_alive: bool) -> None:
        if not self.transport:
            return
        self.transport.write(response_bytes(status, body, keep_alive))
        if keep_alive:
            self._arm_idle()
        else:
            self.transport.close()
            self.transport = None

    def _arm_idle(self) -> None:
        if self.idle:
            self.idle.cancel()
        self.idle = asyncio.get_running_loop().call_later(IDLE_TIMEOUT_S, self.close)


async def serve(host: str, port: int, backlog: int) -> None:
    """Serve until SIGTERM or SIGINT, then close the listener and every connection."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stats = Stats()
    factory = functools.partial(UpstreamProtocol, stats)
    server = await loop.create_server(factory, host, port, backlog=backlog, reuse_address=True)
    await stop.wait()
    server.close()
    for connection in list(stats.connections):
        connection.close()
    await server.wait_closed()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="upstream", description="The slow upstream for /fetch.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--backlog", type=int, default=2048)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    asyncio.run(serve(args.host, args.port, args.backlog))


if __name__ == "__main__":
    main()

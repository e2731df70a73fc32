"""The room's message bus for blocking handlers: redis-py calls that block the calling thread.

``flask-blocking`` and ``tornado-forked`` call it from the one thread of each worker process, so
a held poll occupies its worker, by design. Threaded models (gunicorn ``gthread``, Tornado with a
``ThreadPoolExecutor``) may call it from many threads: each thread keeps its own subscription (a
held poll occupies its thread anyway) and commands share one thread-safe connection pool.

A subscription lives as long as its thread and is reused by every poll: messages that reach it
between two polls are discarded when the next poll starts (that poll reads the history instead).

A WebSocket relay reads a ``MessageStream`` (``stream``): the same history-then-channel order,
a step at a time, so a relay can do other things between steps (read the member's frames) and a
thread pool can run each step on whichever thread is free. Sockets are counted in their own
gauge (``socket_opened``/``socket_closed``), never as held polls.
"""

from __future__ import annotations

import contextlib
import threading
import time

import redis
from redis.backoff import NoBackoff
from redis.client import PubSub
from redis.retry import Retry

from servers import room
from servers.backends import no_bus
from servers.bus import (
    CHANNEL,
    CONNECT_TIMEOUT_S,
    COUNT_SCRIPT,
    HELD,
    HISTORY,
    POLL_SCRIPT,
    PUBLISH_SCRIPT,
    RELEASE_SCRIPT,
    SOCKET_GAUGE,
    SOCKETS,
    follows,
    poll_args,
    publish_args,
    unavailable,
)
from servers.config import ServerConfig

SPARE_CONNECTIONS = 8


class BlockingBus:
    """Publish and poll from any thread. Build it in the worker process (it owns connections)."""

    def __init__(self, config: ServerConfig, holders: int | None = None) -> None:
        """``holders``: the threads (or greenlets) that may wait on it at once (default
        ``config.threads``)."""
        self.hold_s = config.hold_s
        self._redis = None
        if config.redis_url:
            # No retries: a lost connection is a failed request (503), reported at once.
            # redis-py caps a pool at 100 connections by default; every thread may hold a
            # subscription and a command connection at once, so size it for the threads
            # (measured: 64 threads hit the default cap at 100 members, 5 % of polls got 503).
            self._redis = redis.Redis.from_url(
                config.redis_url,
                socket_connect_timeout=CONNECT_TIMEOUT_S,
                socket_timeout=config.timeout_s,
                retry=Retry(NoBackoff(), 0),
                max_connections=2 * (holders or config.threads) + SPARE_CONNECTIONS,
            )
            self._publish = self._redis.register_script(PUBLISH_SCRIPT)
            self._poll = self._redis.register_script(POLL_SCRIPT)
            self._release = self._redis.register_script(RELEASE_SCRIPT)
            self._count = self._redis.register_script(COUNT_SCRIPT)
        self._local = threading.local()

    def publish(self, outgoing: room.Outgoing) -> int:
        """Publish one message; return its id."""
        self._require()
        keys, args = publish_args(outgoing)
        try:
            return int(self._publish(keys, args))
        except redis.RedisError as exc:
            raise unavailable(exc) from None

    def poll(self, after: int) -> list[bytes]:
        """The messages after ``after``: at once, else the next one published, else ``[]``
        once ``hold_s`` has passed."""
        self._require()
        try:
            subscription = self._subscription()
            newer = self._poll(*poll_args(after))
            if newer:
                return newer
            try:
                return self._wait(subscription, after, self.hold_s)
            finally:
                with contextlib.suppress(redis.RedisError):  # an outage: the gauge goes too
                    self._release([HELD])
        except redis.RedisError as exc:
            self._drop_subscription()
            raise unavailable(exc) from None

    def stream(self, after: int) -> MessageStream:
        """Every message after ``after``, in order, each once, a step at a time (a socket)."""
        self._require()
        return MessageStream(self, after)

    def socket_opened(self) -> None:
        """Count an open socket (and raise the maximum); ``IOFailure`` if the bus is down, so
        the upgrade is refused rather than a socket opened on a dead bus."""
        self._require()
        try:
            self._count(SOCKET_GAUGE)
        except redis.RedisError as exc:
            raise unavailable(exc) from None

    def socket_closed(self) -> None:
        """Uncount a socket (never below 0)."""
        if self._redis is not None:
            with contextlib.suppress(redis.RedisError):  # an outage: the gauge goes too
                self._release([SOCKETS])

    def step(self, stream: MessageStream, timeout_s: float) -> list[bytes]:
        """``stream``'s next messages, waiting on this thread's subscription (see
        ``MessageStream.next``)."""
        try:
            if getattr(self._local, "streaming", None) is stream:
                subscription = self._local.subscription  # holds just what came after `last`
            else:
                subscription = self._subscription()  # confirmed: now the history is complete
                self._local.streaming = stream
                if newer := self._history(stream.last):
                    return newer
            return self._wait(subscription, stream.last, timeout_s)
        except redis.RedisError as exc:
            self._drop_subscription()
            raise unavailable(exc) from None

    def _wait(self, subscription: PubSub, after: int, timeout_s: float) -> list[bytes]:
        """The message after ``after`` from the channel (or the history's, after a gap), or
        ``[]`` once ``timeout_s`` has passed."""
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            event = subscription.get_message(timeout=left)
            if not event or event["type"] != "message":
                continue
            if follows(event["data"], after):
                return [event["data"]]
            if room.message_id(event["data"]) > after:  # a gap: the history has them all
                return self._history(after)
        return []

    def _history(self, after: int) -> list[bytes]:
        assert self._redis is not None
        return self._redis.zrangebyscore(HISTORY, f"({after}", "+inf", 0, room.BATCH_LIMIT)

    def _subscription(self) -> PubSub:
        """This thread's subscription, confirmed by Redis, with nothing stale waiting on it."""
        self._local.streaming = None  # whatever waited on it for a stream is gone now
        subscription: PubSub | None = getattr(self._local, "subscription", None)
        if subscription is not None:
            try:
                if self._alive(subscription):
                    return subscription
            except redis.RedisError:
                pass
            self._drop_subscription()  # e.g. Redis restarted or dropped it: subscribe again
        assert self._redis is not None
        subscription = self._redis.pubsub()
        self._local.subscription = subscription
        subscription.subscribe(CHANNEL)
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            event = subscription.get_message(timeout=left)
            if event and event["type"] == "subscribe":
                return subscription
        raise redis.TimeoutError("no subscription confirmation")

    @staticmethod
    def _alive(subscription: PubSub) -> bool:
        """Drain what waited on it, then a PING round trip: a subscription Redis dropped can
        look idle without an error, and a poll on it would never hear a message."""
        subscription.ping()
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            event = subscription.get_message(timeout=left)
            if event and event["type"] == "pong":
                return True
        return False

    def _drop_subscription(self) -> None:
        subscription = getattr(self._local, "subscription", None)
        self._local.subscription = self._local.streaming = None
        if subscription is not None:
            with contextlib.suppress(Exception):
                subscription.close()

    def _require(self) -> None:
        if self._redis is None:
            raise no_bus()


class MessageStream:
    """Every message after ``after``, in order, each once, a step at a time: what a blocking
    WebSocket relay sends.

    A step may run on any thread and waits on that thread's subscription. While the stream keeps
    stepping on the thread whose subscription it last read the history through, and no poll or
    other stream used that subscription since, a step only reads the channel; otherwise it first
    confirms the subscription (dropping what waited on it) and reads the history, as a poll does,
    so nothing is missed or repeated when a thread pool moves it from thread to thread.
    """

    def __init__(self, bus: BlockingBus, after: int) -> None:
        self.last = after  # the id of the last message returned
        self._bus = bus

    def next(self, timeout_s: float) -> list[bytes]:
        """The messages after the last one returned: at once if some exist, else the first one
        published within ``timeout_s``, else ``[]``. ``IOFailure`` if the bus fails."""
        messages = self._bus.step(self, timeout_s)
        if messages:
            self.last = room.message_id(messages[-1])
        return messages

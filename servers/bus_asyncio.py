"""The room's message bus for coroutine handlers: one subscription per process, fanned out.

However many polls the process holds, it has one Redis subscription: a reader task receives each
message once and hands it to every listener (a held poll now; a WebSocket stream next). Commands
go through a pool of at most ``bus_pool_size`` connections, so a burst of thousands of polls
queues for a connection (each holds one for a round trip) rather than opening thousands.

The subscription starts with the first poll and is confirmed by Redis before any poll reads the
history (the ordering ``servers.bus`` relies on). If it breaks (Redis went away), every listener
fails with a 503 and the next poll subscribes again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from servers import room
from servers.backends import IOFailure, bus_unavailable, no_bus
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


class Listener:
    """Messages from the process's subscription, in channel order, for one poll or stream."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[bytes | IOFailure] = asyncio.Queue()

    def deliver(self, item: bytes | IOFailure) -> None:
        self._queue.put_nowait(item)

    async def next(self) -> bytes:
        """The next message published; ``IOFailure`` if the subscription broke."""
        item = await self._queue.get()
        if isinstance(item, IOFailure):  # shared by every listener: raise a copy of it
            raise IOFailure(item.status, str(item))
        return item


class AsyncBus:
    """Publish and poll from coroutines on one event loop (build it inside the running loop)."""

    def __init__(self, config: ServerConfig) -> None:
        self.hold_s = config.hold_s
        self._redis: redis.asyncio.Redis | None = None
        if config.redis_url:
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                config.redis_url,
                max_connections=config.bus_pool_size + 1,  # + the subscription
                timeout=config.timeout_s,  # waiting for a free connection
                socket_connect_timeout=CONNECT_TIMEOUT_S,
                socket_timeout=config.timeout_s,
                retry=Retry(NoBackoff(), 0),  # a lost connection is a 503, reported at once
            )
            self._redis = redis.asyncio.Redis(connection_pool=pool)
            self._publish = self._redis.register_script(PUBLISH_SCRIPT)
            self._poll = self._redis.register_script(POLL_SCRIPT)
            self._release = self._redis.register_script(RELEASE_SCRIPT)
            self._count = self._redis.register_script(COUNT_SCRIPT)
        self._listeners: set[Listener] = set()
        self._reader: asyncio.Task | None = None
        self._confirmed: asyncio.Future | None = None

    async def publish(self, outgoing: room.Outgoing) -> int:
        """Publish one message; return its id."""
        self._require()
        keys, args = publish_args(outgoing)
        try:
            return int(await self._publish(keys, args))
        except redis.RedisError as exc:
            raise unavailable(exc) from None

    async def poll(self, after: int) -> list[bytes]:
        """The messages after ``after``: at once, else the next one published, else ``[]``
        once ``hold_s`` has passed."""
        self._require()
        async with self.listening() as listener:
            try:
                newer = await self._poll(*poll_args(after))
            except redis.RedisError as exc:
                raise unavailable(exc) from None
            if newer:
                return newer
            try:
                message = await self._next_after(listener, after)
            finally:
                await self._uncount_held()
            if message is None or follows(message, after):
                return [message] if message else []
            return await self.history(after)  # a gap on the channel: the history has them all

    async def messages(self, after: int) -> AsyncIterator[bytes]:
        """Every message after ``after``, in order, each once, for as long as the caller
        iterates: what a WebSocket relays. ``IOFailure`` if the bus fails."""
        self._require()
        async with self.listening() as listener:
            last = after
            while batch := await self.history(last):
                for message in batch:
                    yield message
                last = room.message_id(batch[-1])
            while True:
                message = await listener.next()
                if room.message_id(message) <= last:
                    continue  # already sent from the history
                batch = [message] if follows(message, last) else await self.history(last)
                for item in batch:
                    yield item
                last = room.message_id(batch[-1])

    async def socket_opened(self) -> None:
        """Count an open socket (and raise the maximum); ``IOFailure`` if the bus is down, so
        the upgrade is refused rather than a socket opened on a dead bus."""
        self._require()
        try:
            await self._count(SOCKET_GAUGE)
        except redis.RedisError as exc:
            raise unavailable(exc) from None

    async def socket_closed(self) -> None:
        """Uncount a socket (never below 0)."""
        if self._redis is not None:
            with contextlib.suppress(redis.RedisError):  # an outage: the gauge goes too
                await self._release([SOCKETS])

    async def history(self, after: int) -> list[bytes]:
        """Up to ``BATCH_LIMIT`` stored messages after ``after``, oldest first."""
        assert self._redis is not None
        try:
            return await self._redis.zrangebyscore(
                HISTORY, f"({after}", "+inf", 0, room.BATCH_LIMIT
            )
        except redis.RedisError as exc:
            raise unavailable(exc) from None

    @contextlib.asynccontextmanager
    async def listening(self) -> AsyncIterator[Listener]:
        """A listener on the confirmed subscription: read the history only inside this."""
        await self._subscribed()
        listener = Listener()
        self._listeners.add(listener)
        try:
            yield listener
        finally:
            self._listeners.discard(listener)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._redis is not None:
            await self._redis.aclose(close_connection_pool=True)

    async def _next_after(self, listener: Listener, after: int) -> bytes | None:
        """The first message newer than ``after`` from the channel, or None after hold_s."""
        try:
            async with asyncio.timeout(self.hold_s):
                while room.message_id(message := await listener.next()) <= after:
                    pass
                return message
        except TimeoutError:
            return None

    async def _uncount_held(self) -> None:
        with contextlib.suppress(redis.RedisError):  # an outage: the gauge goes too
            await self._release([HELD])

    async def _subscribed(self) -> None:
        """Return once this process's subscription is confirmed, starting it if needed."""
        if self._reader is None or self._reader.done():
            self._confirmed = asyncio.get_running_loop().create_future()
            self._reader = asyncio.create_task(self._read(self._confirmed))
        reader, confirmed = self._reader, self._confirmed
        assert confirmed is not None
        try:  # every poll waits for the same confirmation, for a bounded time
            await asyncio.wait_for(asyncio.shield(confirmed), CONNECT_TIMEOUT_S)
        except TimeoutError:
            reader.cancel()  # a Redis that accepts but does not answer: the next poll retries
            raise bus_unavailable("no subscription confirmation") from None

    async def _read(self, confirmed: asyncio.Future) -> None:
        """The reader task: subscribe, confirm, fan every message out; fail everyone on error."""
        assert self._redis is not None
        pubsub = self._redis.pubsub()
        failure = bus_unavailable("subscription ended")
        try:
            await pubsub.subscribe(CHANNEL)
            async for event in pubsub.listen():
                if event["type"] == "subscribe" and not confirmed.done():
                    confirmed.set_result(None)
                elif event["type"] == "message":
                    for listener in self._listeners:
                        listener.deliver(event["data"])
        except Exception as exc:  # any failure must reach the waiting polls, not vanish
            failure = unavailable(exc) if isinstance(exc, redis.RedisError) else failure
        finally:
            if not confirmed.done():
                confirmed.set_exception(failure)
                confirmed.exception()  # seen: the polls that wanted it may have given up
            for listener in self._listeners:
                listener.deliver(failure)
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    def _require(self) -> None:
        if self._redis is None:
            raise no_bus()

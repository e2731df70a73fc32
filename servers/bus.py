"""The room's message bus on Redis: its keys, its channel, and the scripts every model runs.

One room per Redis database::

    asyncbench:room:next_id    the last id assigned (so also how many messages were published)
    asyncbench:room:history    sorted set of the HISTORY_SIZE newest messages, score = id
    asyncbench:room:held       polls held right now, summed over every process of the server
    asyncbench:room:held_max   the most polls held at once since the last ``reset_room``
    asyncbench:room:sockets    WebSockets open right now (``/room/ws``), summed likewise
    asyncbench:room:sockets_max  the most sockets open at once since the last ``reset_room``
    asyncbench:room:messages   the pub/sub channel every message is published on

Publishing is one Lua script (``PUBLISH_SCRIPT``): assign the next id, store the message in the
history, trim it, publish it. Redis runs scripts one at a time, so ids, history order and channel
order are the same order.

A poll (``servers.bus_blocking``, ``servers.bus_asyncio``) is subscribed *before* it reads the
history, so every message is either in what it read or arrives on the channel after: none is
missed. Reading the history (``POLL_SCRIPT``) also counts the poll as held when nothing newer
exists, in the same step; ``RELEASE_SCRIPT`` uncounts it on every way out. From the channel a poll
takes only the message that directly follows ``after``; any other newer id (a reconnected
subscription may have dropped some) sends it back to the history, which cannot have gaps. So
each answer is exactly the messages after ``after``, in order, once. A WebSocket streams the
same way for as long as it is open (history, then the channel); it is counted in ``sockets``
(``COUNT_SCRIPT``) from before its upgrade until it closes, never in ``held``.

Redis errors become ``IOFailure`` (503 "message bus unavailable"), never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from servers import room
from servers.backends import IOFailure, bus_unavailable

_PREFIX = "asyncbench:room:"
NEXT_ID = _PREFIX + "next_id"
HISTORY = _PREFIX + "history"
HELD = _PREFIX + "held"
HELD_MAX = _PREFIX + "held_max"
SOCKETS = _PREFIX + "sockets"
SOCKETS_MAX = _PREFIX + "sockets_max"
CHANNEL = _PREFIX + "messages"
ROOM_KEYS = (NEXT_ID, HISTORY, HELD, HELD_MAX, SOCKETS, SOCKETS_MAX)
SOCKET_GAUGE = [SOCKETS, SOCKETS_MAX]  # the KEYS of COUNT_SCRIPT for an opened socket
CONNECT_TIMEOUT_S = 5.0  # a Redis that does not accept within this is unavailable

# KEYS: next_id, history. ARGV: message head, message tail, history size, channel.
PUBLISH_SCRIPT = """
local id = redis.call('INCR', KEYS[1])
local message = ARGV[1] .. string.format('%d', id) .. ARGV[2]
redis.call('ZADD', KEYS[2], id, message)
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -(tonumber(ARGV[3]) + 1))
redis.call('PUBLISH', ARGV[4], message)
return id
"""

# KEYS: history, held, held_max. ARGV: after, batch limit.
POLL_SCRIPT = """
local newer = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'LIMIT', 0, ARGV[2])
if #newer == 0 then
  local held = redis.call('INCR', KEYS[2])
  if held > tonumber(redis.call('GET', KEYS[3]) or '0') then
    redis.call('SET', KEYS[3], held)
  end
end
return newer
"""

# KEYS: a gauge, its maximum. One more now, and the maximum raised, in one step.
COUNT_SCRIPT = """
local now = redis.call('INCR', KEYS[1])
if now > tonumber(redis.call('GET', KEYS[2]) or '0') then
  redis.call('SET', KEYS[2], now)
end
return now
"""

# KEYS: a gauge (held, sockets). One fewer, never below 0.
RELEASE_SCRIPT = """
if tonumber(redis.call('GET', KEYS[1]) or '0') > 0 then
  return redis.call('DECR', KEYS[1])
end
return 0
"""


def publish_args(outgoing: room.Outgoing) -> tuple[list[str], list[bytes | str | int]]:
    """``(keys, args)`` of ``PUBLISH_SCRIPT`` for one message."""
    head, tail = room.message_parts(outgoing)
    return [NEXT_ID, HISTORY], [head, tail, room.HISTORY_SIZE, CHANNEL]


def poll_args(after: int) -> tuple[list[str], list[int]]:
    """``(keys, args)`` of ``POLL_SCRIPT``: the history after ``after``, else hold."""
    return [HISTORY, HELD, HELD_MAX], [after, room.BATCH_LIMIT]


def follows(message: bytes, after: int) -> bool:
    """Whether a message from the channel is the very next one after ``after``."""
    return room.message_id(message) == after + 1


def unavailable(exc: redis.RedisError) -> IOFailure:
    """The answer for a Redis error: a 503 naming the error class (never the URL)."""
    return bus_unavailable(type(exc).__name__)


@dataclass(frozen=True)
class RoomStats:
    """What the harness samples: messages published, polls held and sockets open, now and at
    most."""

    published: int
    held: int
    held_max: int
    sockets: int = 0
    sockets_max: int = 0


def room_stats(client: redis.Redis) -> RoomStats:
    """Read the room's counters (one round trip; any Redis client, any process)."""
    values = client.mget(NEXT_ID, HELD, HELD_MAX, SOCKETS, SOCKETS_MAX)
    return RoomStats(*(int(value or 0) for value in values))


def reset_room(client: redis.Redis) -> None:
    """Empty the room: no messages, ids from 1 again, gauges at 0 (between cells)."""
    client.delete(*ROOM_KEYS)

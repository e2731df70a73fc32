"""The room's transports: how members hold their place in a chat room.

A room scenario names one (``transport = "websocket"``); planning checks the name, measuring
starts its Locust user class, judging reads its gauge and endpoint, and the report labels it.
"""

from __future__ import annotations

from dataclasses import dataclass

from servers import room

# The status a WebSocket member's upgrade sample records when it got its socket (the locustfile
# writes it; judging counts the members connected from it).
CONNECTED = 101


@dataclass(frozen=True)
class Transport:
    """How members hold their place in the room."""

    name: str
    endpoint: str  # what a member holds: a poll, or a socket
    member: str  # the locustfile's user class
    gauge: str  # the resource-sample column counting what the server holds (the bus's gauge)
    held: str  # what one held member is, in prose
    persistent: bool  # one connection for the whole cell: a member that never gets it receives
    # nothing, and counts as not connected rather than as lost deliveries


TRANSPORTS = {
    t.name: t
    for t in (
        Transport("long-poll", "/room/poll", "RoomMember", "room_held", "polls held", False),
        Transport("websocket", room.WS_PATH, "RoomSocketMember", "room_sockets", "open sockets",
                  True),
    )
}
DEFAULT_TRANSPORT = "long-poll"  # a scenario (or a stored cell) that names none


def transport(name: str | None) -> Transport:
    """The transport called ``name``; long-poll when none is named (files from before sockets)."""
    return TRANSPORTS[name or DEFAULT_TRANSPORT]

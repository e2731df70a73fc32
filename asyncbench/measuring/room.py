"""The chat room, harness side: its transports, verifying a model's room, the sender, and a room
cell's numbers.

N members hold long-polls (Locust's ``RoomMember``) or WebSockets (``RoomSocketMember``), as
the scenario's transport says; the sender publishes at a fixed rate on the
message bus, each message carrying its send time, the way a separate publishing service would,
so the room's message rate is the same for every model whatever the model does with its slots
(``POST /room/send`` is the same publish, checked before each cell). A probe user sends
``GET /hello`` at a low fixed rate meanwhile.

A room cell's numbers come from its stored raw facts (the deliveries, the samples, the resource
samples with the held-polls gauge, the messages published), like any cell's.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import websocket

from asyncbench.judging.evaluate import (
    CellStats,
    Judgement,
    ResourceUsage,
    corrected_latency_ms,
    judge,
    resource_usage,
    window_rows,
)
from asyncbench.measuring.measure import CellFailed
from servers import room
from servers.bus_blocking import BlockingBus
from servers.config import ServerConfig

PROBE_ENDPOINT = "/hello"
VERIFY_TIMEOUT_S = 30.0
SENDER_TEXT = "x" * 64  # every message the same size: what varies is only who holds polls
CONNECTED = 101  # a WebSocket member's upgrade sample when it got its socket


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


class Sender:
    """Publishes ``rate`` messages a second on the bus from a thread until stopped; remembers
    each message's id and embedded send time."""

    def __init__(self, redis_url: str, rate: float) -> None:
        self.bus = BlockingBus(ServerConfig(redis_url=redis_url))
        self.gap = 1 / rate
        self.published: list[tuple[int, float]] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="room-sender", daemon=True)

    def __enter__(self) -> Sender:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.published, columns=["message", "sent"])

    def _loop(self) -> None:
        due = time.time()
        while not self._stop.wait(max(0.0, due - time.time())):
            sent = time.time()
            try:
                message_id = self.bus.publish(room.Outgoing(SENDER_TEXT, sent))
            except Exception as exc:  # the bus died: the cell fails with this reason
                self.error = f"the sender could not publish: {exc}"
                return
            self.published.append((message_id, sent))
            due += self.gap


def verify_room(url: str, work_done) -> None:
    """A send through the server comes back from a poll, byte for byte, and the bus saw it."""
    before = work_done()
    body = json.dumps({"text": "verify", "sent": time.time()}).encode()
    status, answer = _request(url, "POST", "/room/send", body)
    if status != 200:
        raise CellFailed(f"verification: POST /room/send answered {status}: {answer[:120]!r}")
    message_id = json.loads(answer)["id"]
    status, answer = _request(url, "GET", f"/room/poll?after={message_id - 1}")
    if status != 200 or json.loads(answer)["messages"][0]["id"] != message_id:
        raise CellFailed(f"verification: the poll did not return message {message_id}: "
                         f"{status} {answer[:120]!r}")  # fmt: skip
    if work_done() <= before:
        raise CellFailed("verification: the server answered but the bus saw no message")


def verify_socket_room(url: str, work_done) -> None:
    """A frame sent on a WebSocket is published and comes back on it, and the bus saw it."""
    before = work_done()
    socket_url = url.replace("http", "ws", 1) + f"{room.WS_PATH}?after={before}"
    try:
        member = websocket.create_connection(socket_url, timeout=VERIFY_TIMEOUT_S)
    except (websocket.WebSocketException, OSError) as exc:
        raise CellFailed(f"verification: no WebSocket at {room.WS_PATH}: {exc}") from None
    try:
        member.send(json.dumps({"text": "verify", "sent": time.time()}))
        echoed = json.loads(member.recv())
    except (websocket.WebSocketException, OSError, ValueError) as exc:
        raise CellFailed(f"verification: the socket did not relay its own message: {exc}") from None
    finally:
        member.close()
    if echoed.get("text") != "verify" or work_done() <= before:
        raise CellFailed(f"verification: the socket relayed {echoed!r}, not the message it sent")


def _request(url: str, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=VERIFY_TIMEOUT_S)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    except OSError as exc:
        raise CellFailed(f"verification request failed: {exc}") from None
    finally:
        conn.close()


@dataclass(frozen=True)
class RoomStats:
    """What one room cell measured."""

    messages: int = 0  # published in the window
    delivered: int = 0  # (member, message) pairs received, each counted once
    lost: int = 0  # pairs never received by the end of the cell
    duplicates: int = 0
    out_of_order: int = 0  # deliveries with an id below one the member already had
    delivery_p50_ms: float | None = None  # from the embedded send time to the member's receipt
    delivery_p99_ms: float | None = None
    delivery_max_ms: float | None = None
    last_member_p50_ms: float | None = None  # time until every member had a message
    members_held: float | None = None  # polls or sockets the server held (gauge, window mean)
    members_held_max: float | None = None
    members_connected: int | None = None  # WebSocket: members that got their socket
    reconnects: int | None = None  # WebSocket: sockets opened again after a drop
    member_errors: int = 0  # polls or upgrades that failed, sockets that dropped
    probe_p50_ms: float | None = None  # GET /hello meanwhile, from its intended time
    probe_p99_ms: float | None = None
    # server RSS over idle, per member connected (a member queued for a worker holds memory too;
    # divided by those held, 34 held of 1,000 made 22,797 KB each)
    mem_per_member_kb: float | None = None
    cpu_ms_per_delivery: float | None = None  # server CPU per (member, message) delivered


def evaluate_room(
    samples: pd.DataFrame,
    deliveries: pd.DataFrame,
    published: pd.DataFrame,
    resources: pd.DataFrame,
    start: float,
    end: float,
    members: int,
    transport: Transport = TRANSPORTS[DEFAULT_TRANSPORT],
) -> tuple[RoomStats, ResourceUsage, Judgement]:
    """A room cell's numbers and judgement from its raw facts.

    On a WebSocket a member that never got its socket is not a lost delivery but the model's
    capacity (``members_connected``, measured): deliveries are owed only to connected members.
    """
    usage = resource_usage(resources, start, end)
    window = published[(published["sent"] >= start) & (published["sent"] < end)]
    fields = _probe_and_errors(samples, start, end, transport)
    owed = members
    if transport.persistent:
        fields.update(_connections(samples, end))
        owed = fields["members_connected"]
    fields.update(_delivery_fields(deliveries, window, owed))
    fields.update(_held_fields(resources, start, end, usage, transport.gauge, owed))
    if usage.cpu_server is not None and fields["delivered"]:
        cpu_s = usage.cpu_server / 100 * (end - start)
        fields["cpu_ms_per_delivery"] = cpu_s * 1000 / fields["delivered"]
    stats = RoomStats(**fields)
    polls = CellStats(requests=stats.delivered + stats.lost, failures=stats.member_errors,
                      rps=len(window) / (end - start))  # fmt: skip
    verdict = judge(polls, usage)
    reasons = [verdict.reason] if verdict.reason else []
    if not len(window):
        reasons.append("no message was published in the window")
    if stats.lost:
        reasons.append(f"{stats.lost} of {stats.lost + stats.delivered} deliveries lost "
                       "(never received by the end of the cell)")  # fmt: skip
    if stats.duplicates or stats.out_of_order:
        reasons.append(f"{stats.duplicates} duplicate and {stats.out_of_order} out-of-order "
                       "deliveries")  # fmt: skip
    return stats, usage, Judgement(not reasons, "; ".join(reasons))


def _delivery_fields(deliveries: pd.DataFrame, window: pd.DataFrame, members: int) -> dict:
    mine = deliveries[deliveries["message"].isin(window["message"])]
    unique = mine.drop_duplicates(["member", "message"])
    fields: dict = {"messages": len(window), "delivered": len(unique),
                    "lost": max(0, members * len(window) - len(unique)),
                    "duplicates": len(mine) - len(unique),
                    "out_of_order": _out_of_order(deliveries)}  # fmt: skip
    if len(unique):
        latency = (unique["received"] - unique["sent"]).to_numpy() * 1000
        fields["delivery_p50_ms"] = float(np.percentile(latency, 50))
        fields["delivery_p99_ms"] = float(np.percentile(latency, 99))
        fields["delivery_max_ms"] = float(latency.max())
        per_message = unique.groupby("message").agg(n=("member", "size"), last=("received", "max"),
                                                    sent=("sent", "first"))  # fmt: skip
        complete = per_message[per_message["n"] == members]
        if len(complete):
            last = (complete["last"] - complete["sent"]).to_numpy() * 1000
            fields["last_member_p50_ms"] = float(np.median(last))
    return fields


def _out_of_order(deliveries: pd.DataFrame) -> int:
    if deliveries.empty:
        return 0
    ordered = deliveries.sort_values(["member", "received"], kind="stable")
    best_so_far = ordered.groupby("member")["message"].cummax().shift().where(
        ordered["member"].eq(ordered["member"].shift()))  # fmt: skip
    return int((ordered["message"] < best_so_far).sum())


def _connections(samples: pd.DataFrame, end: float) -> dict:
    """Members that got their socket by the window's end, and sockets opened again."""
    if samples.empty or "endpoint" not in samples:
        return {"members_connected": 0, "reconnects": 0}
    upgrades = samples[(samples["endpoint"] == room.WS_PATH) & (samples["status"] == CONNECTED)]
    upgrades = upgrades[upgrades["start_time"] + upgrades["latency_ms"] / 1000 <= end]
    members = upgrades["user"].nunique()
    return {"members_connected": int(members), "reconnects": int(len(upgrades) - members)}


def _held_fields(resources: pd.DataFrame, start: float, end: float, usage, gauge: str,
                 connected: int) -> dict:  # fmt: skip
    """Members held (the server's gauge) and the RSS growth per member ``connected``."""
    fields = {}
    if usage.rss_server_mb is not None and usage.rss_server_idle_mb is not None and connected:
        grown = usage.rss_server_mb - usage.rss_server_idle_mb
        fields["mem_per_member_kb"] = grown * 1024 / connected
    if resources is None or resources.empty or gauge not in resources:
        return fields
    held = window_rows(resources, start, end)[gauge].dropna()
    if len(held):
        fields.update(members_held=float(held.mean()), members_held_max=float(held.max()))
    return fields


def _probe_and_errors(samples: pd.DataFrame, start: float, end: float, transport) -> dict:
    if samples.empty or "endpoint" not in samples:
        return {}
    held = samples[samples["endpoint"] == transport.endpoint]
    failed = held["error"].notna() | ~held["status"].isin([200, 204, CONNECTED])
    fields: dict = {"member_errors": int(failed.sum())}
    intended = samples["intended_time"]
    probe = samples[
        (samples["endpoint"] == PROBE_ENDPOINT) & (intended >= start) & (intended < end)
    ]
    if len(probe):
        latency = corrected_latency_ms(probe).to_numpy()
        fields["probe_p50_ms"] = float(np.percentile(latency, 50))
        fields["probe_p99_ms"] = float(np.percentile(latency, 99))
    return fields


def room_columns(stats: RoomStats, usage: ResourceUsage, judgement: Judgement, rate: float):
    """The ``results.csv`` columns of a room cell."""
    return {**asdict(stats), **asdict(usage), "valid": judgement.valid, "reason": judgement.reason,
            "status": judgement.status, "rps": rate, "requests": stats.delivered}  # fmt: skip

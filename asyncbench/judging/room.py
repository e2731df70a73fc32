"""A room cell's numbers and judgement, from its raw facts: the deliveries, the samples, the
resource samples with the held-members gauge, and the messages published."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from asyncbench.judging.evaluate import CellStats, Judgement, corrected_latency_ms, judge
from asyncbench.judging.resources import ResourceUsage, resource_usage, window_rows
from asyncbench.planning.transports import CONNECTED, DEFAULT_TRANSPORT, TRANSPORTS, Transport
from servers import room

PROBE_ENDPOINT = "/hello"  # what the probe user sends meanwhile


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

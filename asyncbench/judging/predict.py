"""Predictions a cell's measurement is compared with (DESIGN rule 6).

Queueing theory for a sleep-like request: a closed loop of ``users`` with no think time against
a model that holds ``slots`` requests at once, each for ``delay``, serves
``min(users, slots) / delay``; an open loop offering ``rate`` gets ``min(rate, slots / delay)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from itertools import pairwise


def predicted_rps(
    users: int, slots: float | None, delay_ms: int, rate: float = 0.0
) -> float | None:
    """The textbook throughput; None (closed loop) when there is no delay to model."""
    if slots is None or delay_ms <= 0:
        return rate or None
    capacity = slots / (delay_ms / 1000)
    return min(rate, capacity) if rate else min(users, slots) / (delay_ms / 1000)


def explained_rps(
    users: int,
    base_latency_ms: float | None,
    slots: float | None,
    handler_ms: float | None,
    cpu_ms: dict[str, float | None],
    usable_cores: dict[str, float],
    busiest_share: float | None = None,
    processes: int = 1,
    split_ms: tuple[float, float] | None = None,
    process_users: tuple[int, ...] = (),
) -> float | None:
    """A second prediction from operational analysis: the smallest of the bounds a closed loop
    of ``users`` meets (asymptotic bounds, no think time).

    * ``users / R1``: each user completes one request per round trip, where R1 is the mean
      latency the model showed with the least load (the delay plus every per-request overhead:
      connection set-up, event loop, client, transport);
    * ``users / (H + O)`` with ``split_ms = (H, O)``: the round trip split where the model
      reports it (Little's law on the means), the handler time H at this load (a late event
      loop, a contended GIL or a slower upstream lengthen it) plus the time outside the
      handler: the lowest load's, and the queues the cell's requests met for CPU on their way
      (``train_wait_ms``: users that move in step arrive in trains, and each request of a
      train waits for the CPU of those before it, on the server's loop or GIL and in the Locust
      process). Where time outside grew more (client, transport), the cell falls short of
      this bound, and the gap is that growth;
    * ``slots / H``: each slot is held for the handler time H (``Server-Timing``); with several
      processes, the busiest one (``busiest_share`` of the requests, measured) saturates first,
      so ``(slots / processes) / (H × busiest_share)``; where every user stayed with one
      process (``process_users``, kept-alive connections), each process is a closed loop of
      its own users: ``Σ min(users_p / R1, (slots / processes) / H)`` (4 users that landed
      2-1-1 on one-slot forked children: ``1 / H + 2 / R1``);
    * ``cores / D`` per component: a component with D CPU-milliseconds per request (measured at
      the cell's own load, so contention is in it) cannot serve more than its usable cores allow
      (the server's processes, one Locust process, ...), and the machine as a whole cannot
      exceed its cores over the summed demands.
    """
    bounds = []
    if base_latency_ms:
        bounds.append(users / (base_latency_ms / 1000))
    if split_ms and all(part is not None and part > 0 for part in split_ms):
        bounds.append(users / (sum(split_ms) / 1000))
    if slots and handler_ms and slots != float("inf"):
        bounds.append(slots / (handler_ms / 1000))
        if processes > 1 and busiest_share:
            bounds.append(slots / processes / (handler_ms / 1000 * busiest_share))
        if process_users and base_latency_ms:
            per_process = slots / max(processes, len(process_users)) / (handler_ms / 1000)
            bounds.append(sum(min(u / (base_latency_ms / 1000), per_process)
                              for u in process_users))  # fmt: skip
    total = 0.0
    for component, demand in cpu_ms.items():
        if demand:
            total += demand
            bounds.append(usable_cores.get(component, 1.0) / (demand / 1000))
    if total and usable_cores.get("machine"):
        bounds.append(usable_cores["machine"] / (total / 1000))
    return min(bounds) if bounds else None


def train_wait_ms(arrivals_s: Iterable[float], demand_ms: float,
                  most_ahead: int | None = None) -> float:  # fmt: skip
    """The mean wait of requests arriving at ``arrivals_s`` at one server that needs
    ``demand_ms`` of CPU for each, first come first served (Lindley's recursion: each waits for
    what the ones before it left). The arrivals are the measured ones, so it is the queue the
    cell's own bunching makes: 64 users on one event loop answer in trains, and at 0.43 ms of
    loop CPU per request their arrivals waited 1.5 ms on average where evenly spaced ones, at
    the same rate, would not have waited at all.

    ``most_ahead`` caps how many requests one waits behind: a closed loop of N users never has
    more than N − 1 ahead of any. Uncapped, near a saturated core the recursion runs away on
    the arrivals' jitter: 4 users on ``hello`` at 83 % of a core "waited" 2.0 ms in 0.75 ms
    round trips, and the second prediction fell to a fifth of the measurement."""
    times = sorted(arrivals_s)
    if len(times) < 2 or not demand_ms > 0:
        return 0.0
    wait = total = 0.0
    demand = demand_ms / 1000
    cap = math.inf if most_ahead is None else max(0, most_ahead) * demand
    for gap in (b - a for a, b in pairwise(times)):
        wait = min(cap, max(0.0, wait + demand - gap))
        total += wait
    return total / len(times) * 1000


def room_prediction(members: int, slots: float | None) -> float | None:
    """Polls a model holds at once: all members, or its slots (the rest wait to be accepted)."""
    if slots is None or math.isinf(slots):
        return float(members)
    return float(min(members, slots))

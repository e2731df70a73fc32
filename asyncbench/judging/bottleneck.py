"""What limits a cell, named from its measured service demands and the model's slots.

The service demand of a component is the CPU time it spends per completed request
(utilisation × window / requests). A cell is bound by the first of: the load generator, the
server running out of CPU (one core for a single process: one event loop), the machine, the
upstream or the database running out of CPU, the model's slots (requests it can hold at once),
and otherwise the offered load itself (closed loop: users / delay). The rules read only stored
columns, so the runner and a rebuilt report name the same limit.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from asyncbench.judging.throughput import SlotUse
from servers import MODELS
from servers.registry import PER_WORKER

SATURATED = 85.0  # % of what a component can use: from here on it sets the pace
MACHINE_SATURATED = 90.0  # % of all cores
SLOT_BOUND = 0.85  # throughput at 85 % of slots / delay or more, with more users than slots
SHORT = 0.95  # a cell under 95 % of its textbook prediction fell short: something else binds
EXPLAINED_WITHIN = 0.03  # the second prediction explains a cell within 3 %
LOOP_LATE = 0.5  # an event loop once this late, as a share of the wait, paces a short cell
COMPONENTS = ("server", "locust", "upstream", "mariadb")


@dataclass(frozen=True)
class Demands:
    """CPU milliseconds per completed request, per component (None when not sampled)."""

    server: float | None = None
    locust: float | None = None
    upstream: float | None = None
    mariadb: float | None = None


def demands(row: Mapping) -> Demands:
    """Service demands from a cell's mean CPU (% of one core) and throughput."""
    rps = _number(row.get("rps"))
    if not rps:
        return Demands()
    per = {c: _number(row.get(f"cpu_{c}")) for c in COMPONENTS}
    return Demands(**{c: v / 100 / rps * 1000 if v is not None else None for c, v in per.items()})


def columns(row: Mapping) -> dict:
    """The ``results.csv`` columns derived here: the bottleneck and the service demands."""
    found = demands(row)
    return {"bottleneck": name_bottleneck(row),
            **{f"cpu_ms_{c}": getattr(found, c) for c in COMPONENTS}}  # fmt: skip


def name_bottleneck(row: Mapping) -> str:
    """The binding limit of one measured cell, in words."""
    # A server pegged at its cores limits the cell even when the machine is busy too.
    found = _first_named(row, (_load_generator, _server_cpu, _machine, _auxiliary, _idle_slots,
                               _slots, _unbalanced, _late_loop, _round_trip, _short_of_slots,
                               _nothing_to_wait_on))  # fmt: skip
    users, delay = _number(row.get("users")), _number(row.get("delay_ms"))
    if found or not (delay and users):
        return found or "offered load"
    return f"offered load ({users:.0f} users, {delay:.0f} ms each)"


def name_room_limit(row: Mapping) -> str:
    """The binding limit of one measured room cell, in words: the load generator, the server's
    or the machine's CPU, as for a request cell; else the members its model holds at once,
    where the room has more (the others wait to be accepted, or never get a socket); else the
    room itself, its members and message rate."""
    found = _first_named(row, (_load_generator, _server_cpu, _machine, _room_slots))
    members, rate = _number(row.get("users")), _number(row.get("message_rate"))
    if found or not (members and rate):
        return found or "offered load"
    return f"offered load ({members:,.0f} members, {rate:g} messages/s)"


def _first_named(row: Mapping, rules) -> str | None:
    """The limit the first rule that holds names."""
    return next((found for rule in rules if (found := rule(row))), None)


def _room_slots(row: Mapping) -> str | None:
    slots, members = _number(row.get("slots")), _number(row.get("users"))
    if not (slots and members) or members <= slots:
        return None
    named = row.get("slot_limit")
    named = named if isinstance(named, str) and named else f"{slots:.0f} members at once"
    return f"slots: {named} ({members:,.0f} members)"


def _load_generator(row: Mapping) -> str | None:
    """Locust saturated, unless the server is busier still for its cores (each passes every
    request to the other: measured in CI, server 89 % and Locust 86 % of a core on hello)."""
    locust = _number(row.get("cpu_locust_max")) or _number(row.get("cpu_locust"))
    if locust is None or locust < SATURATED:
        return None
    server = _server_load(row)
    if server is not None and server[0] / server[1] > locust / 100:
        return None
    return f"load generator (busiest Locust process {locust:.0f}% of a core)"


def _machine(row: Mapping) -> str | None:
    machine = _number(row.get("cpu_machine"))
    if machine is not None and machine >= MACHINE_SATURATED:
        return f"machine CPU ({machine:.0f}% of all cores)"
    return None


def _auxiliary(row: Mapping) -> str | None:
    for name in ("upstream", "mariadb"):
        cpu = _number(row.get(f"cpu_{name}"))
        if cpu is not None and cpu >= SATURATED:
            return f"{name} CPU ({cpu:.0f}% of a core)"
    return None


def _server_load(row: Mapping) -> tuple[float, float, int] | None:
    """The server's CPU (%), the most it can use (%: one core per process, at most the
    machine's) and its processes; None when unknown."""
    cpu = _number(row.get("cpu_server"))
    spec = MODELS.get(str(row.get("server")))
    if cpu is None or spec is None:
        return None
    processes = int(_number(row.get("workers")) or 1) if spec.multi_process else 1
    return cpu, min(processes, os.cpu_count() or 1) * 100, processes


def _server_cpu(row: Mapping) -> str | None:
    load = _server_load(row)
    if load is None:
        return None
    cpu, usable, processes = load
    if cpu < SATURATED / 100 * usable:
        return None
    if processes == 1:
        return f"server CPU: one process at {cpu:.0f}% of its one core{_one_loop(row)}"
    return f"server CPU ({cpu:.0f}% of {usable / 100:.0f} cores)"


def _one_loop(row: Mapping) -> str:
    """`` (a one-process event loop: <its name>)`` for a model that serves on one, else ""."""
    spec = MODELS.get(str(row.get("server")))
    return f" (a one-process event loop: {spec.loop})" if spec and spec.loop else ""


def _nothing_to_wait_on(row: Mapping) -> str | None:
    """A request with no delay waits on nothing but CPU: when no component is saturated alone
    (the server and Locust pass each request back and forth, each just under a core), the
    busier of the two sets the pace."""
    if _number(row.get("delay_ms")):
        return None
    server, locust = _number(row.get("cpu_server")), _number(row.get("cpu_locust_max"))
    if server is None or locust is None:
        return None
    spec = MODELS.get(str(row.get("server")))
    if server >= locust and spec is not None and not spec.multi_process:
        return (f"server CPU: one process at {server:.0f}% of its one core, Locust at "
                f"{locust:.0f}%{_one_loop(row)}")  # fmt: skip
    if server >= locust:
        return f"server CPU ({server:.0f}%), Locust at {locust:.0f}% of a core"
    return f"load generator (busiest Locust process {locust:.0f}% of a core, server {server:.0f}%)"


def _slots(row: Mapping) -> str | None:
    slots, users = _number(row.get("slots")), _number(row.get("users"))
    delay, rps = _number(row.get("delay_ms")), _number(row.get("rps"))
    if not (slots and users and delay and rps) or users <= slots:
        return None
    if rps >= SLOT_BOUND * slots / (delay / 1000):
        return f"slots: {row.get('slot_limit') or f'{slots:.0f}'}"
    return None


def _idle_slots(row: Mapping) -> str | None:
    """Users that each stayed with the worker that accepted them (``process_users``) and
    landed so that some workers queued users while others left slots idle: the split, not the
    slots, set the pace. The explaining prediction sums each worker's own closed loop, so it
    agrees (measured: flask-threaded, 2 × 4 threads, 32 users split 29/3: 68.6 of 80 req/s)."""
    per = process_slots(row.get("server"), row.get("slots"), row.get("workers"))
    counts = parse_counts(row.get("process_users"))
    short = _short(row)
    if not (per and counts and short):
        return None
    counts += (0,) * max(0, int(_number(row.get("workers")) or 0) - len(counts))
    idle = sum(max(0.0, per - n) for n in counts)
    queued = sum(max(0.0, n - per) for n in counts)
    if min(idle, queued) < 1:
        return None
    split = "/".join(str(n) for n in counts)
    total = per * len(counts)
    return (f"unbalanced workers: users per worker {split} left {idle:.0f} of {total:.0f} slots "
            f"idle, {short}")


def _unbalanced(row: Mapping) -> str | None:
    """Short of the prediction with one worker process serving well over its share: requests
    piled on fewer workers than the model has (a forked server's accept imbalance)."""
    share, workers = _number(row.get("busiest_process_share")), _number(row.get("workers"))
    spec = MODELS.get(str(row.get("server")))
    short = _short(row)
    if not (spec and spec.multi_process):  # one process serves all: 100 % is its share
        return None
    slots, users = _number(row.get("slots")), _number(row.get("users"))
    if slots and workers and users is not None and users <= slots / workers:
        return None  # users that fit in one worker cannot be held up by how the others fare
    if not (short and share and workers) or share <= 1.5 / workers:
        return None
    return f"unbalanced workers: {short}, the busiest worker served {share:.0%}"


def _late_loop(row: Mapping) -> str | None:
    """An event loop that ran late by half the wait, in a cell short of its prediction: the
    loop, not the I/O, set the pace (in a pool model, its threads holding the GIL). A worker
    whose handlers block has a "late" loop by design: it is its own handler."""
    lag, delay = _number(row.get("loop_lag_max_ms")), _number(row.get("delay_ms"))
    spec = MODELS.get(str(row.get("server")))
    short = _short(row)
    if not (short and lag and delay) or lag < LOOP_LATE * delay:
        return None
    if spec and spec.concurrency is PER_WORKER:
        return None
    if spec and spec.loop:  # a hub that never yields runs about a whole wait late
        return f"{spec.loop} (one per process): up to {lag:.0f} ms late, {short}"
    threads = _number(row.get("threads"))
    held = f" (the GIL, with {threads:.0f} threads)" if threads else ""
    return f"event loop{held}: up to {lag:.0f} ms late, {short}"


def _round_trip(row: Mapping) -> str | None:
    """Users that all hold a slot, yet short of the prediction: the round trip grew. Its split
    (``Server-Timing``, means) says where: inside the handler (a loop that ran late, a slower
    upstream) or outside it (the client, transport, the loop's passes before and after the
    handler; users that move in step queue there, measured at 20-40 % mean utilisation)."""
    slots, users, delay = (_number(row.get(k)) for k in ("slots", "users", "delay_ms"))
    mean, handler = _number(row.get("mean_ms")), _number(row.get("handler_mean_ms"))
    short = _short(row)
    if not (short and users and delay and mean and handler):
        return None
    if slot_use(row.get("server"), users, slots, row.get("workers")) != "own":
        return None
    outside = mean - handler
    if handler - delay >= outside:
        return f"inside the handler: {handler:.0f} ms for a {delay:.0f} ms wait, {short}"
    server, client = (_number(row.get(f"queue_{c}_ms")) for c in ("server", "client"))
    trains = ""
    if server is not None and client is not None:
        trains = (f"{server:.1f} of it waiting for the server's CPU and {client:.1f} for "
                  "Locust's behind requests that came together; ")
    return (f"outside the handler: {outside:.1f} of each {mean:.0f} ms round trip ({trains}"
            f"client, transport, the loop around the handler), {short}")


def slot_use(server: str, users, slots, workers) -> SlotUse:
    """What is sure of how a closed loop's users use the model's slots: ``"own"``, every user
    has a slot to itself (no more users than slots, unknown slots being unlimited, and, where a
    kept-alive connection stays with the worker process that accepted it, no more than one
    process has: tornado-forked's children accept unevenly, 4 users on 4 one-slot children
    often share two); ``"queued"``, more users than the model holds, so they wait; else
    ``"unknown"``."""
    slots, workers = _number(slots), _number(workers)
    if slots is None:
        return "own"
    if float(users) > slots:
        return "queued"
    spec = MODELS.get(str(server))
    if spec and spec.multi_process and spec.keep_alive and workers:
        slots /= workers
    return "own" if float(users) <= slots else "unknown"


def process_slots(server: str, slots, workers) -> float | None:
    """Slots per serving process where a user's kept-alive connection stays with the process
    that accepted it (each process is then a queue of its own users); None where a user's
    requests may reach any of them, or the slots are unknown."""
    slots, workers = _number(slots), _number(workers)
    spec = MODELS.get(str(server))
    if not (spec and spec.multi_process and spec.keep_alive and slots and workers):
        return None
    return slots / workers


def _short(row: Mapping) -> str | None:
    """How far short of its textbook prediction the cell fell ("X of Y req/s"), if it did."""
    rps, predicted = _number(row.get("rps")), _number(row.get("predicted_rps"))
    if not (rps and predicted) or rps >= SHORT * predicted:
        return None
    return f"{rps:.0f} of {predicted:.0f} req/s"


def _short_of_slots(row: Mapping) -> str | None:
    """More users than slots, yet well under slots / delay: a limit the rules cannot name."""
    slots, users = _number(row.get("slots")), _number(row.get("users"))
    delay, rps = _number(row.get("delay_ms")), _number(row.get("rps"))
    if not (slots and users and delay and rps) or users <= slots:
        return None
    capacity = slots / (delay / 1000)
    explained, gap = _number(row.get("explained_rps")), _number(row.get("explained_gap"))
    if explained is None or gap is None or abs(gap) > EXPLAINED_WITHIN:
        return f"unexplained: {rps:.0f} of the {capacity:.0f} req/s its slots allow"
    handler = _number(row.get("handler_mean_ms"))
    if handler and handler > delay / SHORT:
        return (f"slots held longer: {handler:.0f} ms a request for a {delay:.0f} ms wait, "
                f"{rps:.0f} of the {capacity:.0f} req/s its slots allow")
    return (f"overheads: {rps:.0f} of the {capacity:.0f} req/s its slots allow, as its measured "
            f"overheads predict ({explained:.0f})")


def parse_counts(text) -> tuple[int, ...]:
    """A per-process count (``"36 35 35 34"``); () where it is empty or missing."""
    return tuple(int(n) for n in text.split()) if isinstance(text, str) else ()


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number

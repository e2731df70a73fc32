"""How a cell drives each load shape: request/response, or a room of held polls.

A scenario kind's registry entry names its workload (``planning.kinds``); the cell runner asks
the workload how to configure the server, prove the work, which Locust users to start and what
runs beside Locust (the room's sender). Judging turns the raw facts into the cell's columns
(``judging.workloads``).
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

import pandas as pd
import redis

from asyncbench.judging.predict import room_prediction
from asyncbench.judging.workloads import JUDGES
from asyncbench.measuring import room
from asyncbench.measuring.measure import CellFailed, LocustOutcome, verify_equivalence
from asyncbench.planning.kinds import REQUEST_RESPONSE, ROOM, ScenarioKind
from asyncbench.planning.transports import transport

ROOM_DRAIN_S = 8.0  # deliveries in flight at the window's end get at most this long to arrive
SETTLE_REQUESTS = 2  # closed loop: the warm-up ends once every user completed this many
SETTLE_MESSAGES = 1  # room: ... once every member received a message sent after spawning
# A cell whose users all fit in its slots may warm up this many times its scenario's warm-up
# while it has not settled: its server is still starting threads or opening connections.
UNSETTLED_LIMIT_FACTOR = 3


class RequestResponse:
    """One request, one answer, then the next (closed loop) or at intended times (open loop)."""

    extra_users = 0
    # Its check touches nothing another cell uses: it runs ahead, while the cell before is
    # stored (``cell.PreparedCell``).
    verifies_ahead = True

    def user_classes(self, scenario) -> tuple[str, ...]:
        """The locustfile's users a cell starts."""
        return ("BenchUser",)

    def configure(self, config, scenario):
        return config

    def slots(self, scenario, model, config, db_max_connections: int | None) -> float | None:
        return scenario.kind.slots(model, config, db_max_connections)

    def slot_limit(self, scenario, model, config, db_max_connections: int | None) -> str:
        """What binds the slots, in words (none where the queueing prediction does not apply)."""
        if not scenario.kind.predicted:
            return ""
        return model.slot_limit(config, scenario.kind.waits_on, db_max_connections)

    def base_fields(self, scenario, users: int, slots: float | None) -> dict:
        return {}

    def verify(self, url: str, scenario, proof) -> None:
        verify_equivalence(
            url, scenario.path, scenario.kind.expected_body(scenario.delay_ms),
            scenario.delay_ms, proof.work_done if proof else None,
        )  # fmt: skip

    def extra_args(self, scenario) -> tuple[str, ...]:
        return ()

    def beside(self, services, scenario):
        """What runs beside Locust for the whole cell (nothing here)."""
        return contextlib.nullcontext()

    def stop_timeout_s(self, default: float) -> float:
        return default

    def settle_cycles(self, cell) -> int:
        """Requests per user that end the warm-up early (``loadtests.recording.Settling``). An
        open loop's senders wait for their intended times: it warms up for the full time."""
        return 0 if cell.rate else SETTLE_REQUESTS

    def warmup_limit_s(self, scenario, users: int, slots: float | None) -> float:
        """The longest warm-up. Users that all fit in the slots settle within a few cycles of a
        warm server, so one that has not settled after ``warmup_s`` is still warming up: sql at
        64 users on tornado-threadpool or flask-threaded (64 threads opening their database
        connections) took 1.4-1.6 s, and a window from 1 s on began at half the throughput
        (standard errors of 5-14 %, 0.1-1.3 % once settled). Users queued behind the slots
        answer too seldom to settle by the rule: they keep ``warmup_s``."""
        fits = slots is None or users <= slots
        return scenario.warmup_s * (UNSETTLED_LIMIT_FACTOR if fits else 1)

    def drain_s(self) -> float:
        """How long Locust waits for what is still in flight before it stops (nothing here:
        in-flight requests finish within the stop timeout)."""
        return 0.0

    def columns(self, outcome: LocustOutcome, resources: pd.DataFrame, base, scenario, beside):
        """The measured columns of a cell whose facts so far are ``base`` (a ``CellResult``)."""
        return JUDGES[REQUEST_RESPONSE].columns(
            outcome.samples, resources, outcome.window_start, outcome.window_end, vars(base),
            outcome.abandoned,
        )  # fmt: skip

    def raw_facts(self, outcome: LocustOutcome, beside) -> dict[str, pd.DataFrame | None]:
        """What the cell stores beside its samples and resource samples (nothing here)."""
        return {}


class Room:
    """N members hold long-polls or WebSockets; the sender publishes at the scenario's rate on
    the bus."""

    extra_users = 1  # the probe
    # Its check empties the bus, whose gauges the cell before's server still counts down while
    # it stops: it runs in its own turn.
    verifies_ahead = False

    def user_classes(self, scenario) -> tuple[str, ...]:
        return (transport(scenario.transport).member, "Probe")

    def configure(self, config, scenario):
        return replace(config, hold_s=scenario.hold_s)

    def slots(self, scenario, model, config, db_max_connections: int | None) -> float:
        """The members a model holds at once: a poll holds a worker, a thread, or nothing; a
        socket may live on an event loop even where polls block (the model's entry says)."""
        if transport(scenario.transport).persistent:
            return model.socket_slots(config)
        return model.slots(config, None, None)

    def slot_limit(self, scenario, model, config, db_max_connections: int | None) -> str:
        """What binds the members held at once, in words: the room's limit names it."""
        if transport(scenario.transport).persistent:
            return model.socket_limit(config)
        return model.slot_limit(config, None, None)

    def base_fields(self, scenario, users: int, slots: float | None) -> dict:
        return {"transport": scenario.transport, "message_rate": scenario.message_rate,
                "predicted_held": room_prediction(users, slots)}  # fmt: skip

    def verify(self, url: str, scenario, proof) -> None:
        check = room.verify_room
        if transport(scenario.transport).persistent:
            check = room.verify_socket_room
        try:
            proof.reset_room()
            check(url, proof.work_done)
        except redis.RedisError as exc:
            raise CellFailed(f"the message bus is unavailable: {exc}") from None

    def extra_args(self, scenario) -> tuple[str, ...]:
        return ("--bench-probe-rate", f"{scenario.probe_rate:g}")

    def beside(self, services, scenario):
        return room.Sender(services["bus"].url, scenario.message_rate)

    def stop_timeout_s(self, default: float) -> float:
        return 0.0  # after the drain, members stop at once: a held poll never ends by itself

    def settle_cycles(self, cell) -> int:
        return SETTLE_MESSAGES

    def warmup_limit_s(self, scenario, users: int, slots: float | None) -> float:
        """A room that has not settled in ``warmup_s`` is one its model cannot serve in full
        (members queued for workers, or still connecting): it starts its window then."""
        return scenario.warmup_s

    def drain_s(self) -> float:
        """Deliveries in flight at the window's end: Locust waits until every member holds the
        newest message sent in the window (and at least the delivery p99), at most
        ``ROOM_DRAIN_S``."""
        return ROOM_DRAIN_S

    def columns(self, outcome: LocustOutcome, resources: pd.DataFrame, base, scenario, sender):
        if sender.error:
            raise CellFailed(sender.error)
        return JUDGES[ROOM].columns(outcome.samples, outcome.deliveries, sender.frame(), resources,
                                    outcome.window_start, outcome.window_end, base.users,
                                    scenario.transport)  # fmt: skip

    def raw_facts(self, outcome: LocustOutcome, sender) -> dict[str, pd.DataFrame | None]:
        """The deliveries and the messages published: a room's judgement is made from them."""
        return {"deliveries": outcome.deliveries, "messages": sender.frame()}


WORKLOADS = {REQUEST_RESPONSE: RequestResponse(), ROOM: Room()}


def workload_of(kind: ScenarioKind):
    """How cells of ``kind`` are driven."""
    return WORKLOADS[kind.workload]

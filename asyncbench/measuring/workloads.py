"""How a cell drives and judges each load shape: request/response, or a room of held polls.

A scenario kind's registry entry names its workload; the cell runner asks the workload how to
configure the server, prove the work, which Locust users to start, what runs beside Locust (the
room's sender), and how to turn the raw facts into the cell's columns.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import replace

import pandas as pd
import redis

from asyncbench.judging import bottleneck
from asyncbench.judging.bottleneck import process_slots, slot_use
from asyncbench.judging.evaluate import evaluate_cell
from asyncbench.measuring import room
from asyncbench.measuring.measure import CellFailed, LocustOutcome, verify_equivalence

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
        evaluation = evaluate_cell(
            outcome.samples, resources, outcome.window_start, outcome.window_end,
            rate=base.rate, abandoned=outcome.abandoned,
            slot_use=slot_use(base.server, base.users, base.slots, base.workers),
            process_slots=process_slots(base.server, base.slots, base.workers),
        )  # fmt: skip
        return evaluation.columns()

    def raw_facts(self, outcome: LocustOutcome, beside) -> dict[str, pd.DataFrame | None]:
        """What the cell stores beside its samples and resource samples (nothing here)."""
        return {}

    def derived(self, row) -> dict:
        """Columns derived from the others: the bottleneck and the service demands."""
        return bottleneck.columns(row)

    def reevaluate(self, row: pd.Series, facts: dict[str, pd.DataFrame], stored_usage) -> dict:
        """The columns again, from a stored cell's raw facts (``asyncbench report``)."""
        evaluation = evaluate_cell(
            facts["samples"], facts["resources"], row["window_start"], row["window_end"],
            rate=row["rate"], abandoned=_count(row.get("abandoned")), stored_usage=stored_usage,
            slot_use=slot_use(row["server"], row["users"], row.get("slots"), row.get("workers")),
            process_slots=process_slots(row["server"], row.get("slots"), row.get("workers")),
        )  # fmt: skip
        return evaluation.columns()


class Room:
    """N members hold long-polls or WebSockets; the sender publishes at the scenario's rate on
    the bus."""

    extra_users = 1  # the probe
    # Its check empties the bus, whose gauges the cell before's server still counts down while
    # it stops: it runs in its own turn.
    verifies_ahead = False

    def user_classes(self, scenario) -> tuple[str, ...]:
        return (room.transport(scenario.transport).member, "Probe")

    def configure(self, config, scenario):
        return replace(config, hold_s=scenario.hold_s)

    def slots(self, scenario, model, config, db_max_connections: int | None) -> float:
        """The members a model holds at once: a poll holds a worker, a thread, or nothing; a
        socket may live on an event loop even where polls block (the model's entry says)."""
        if room.transport(scenario.transport).persistent:
            return model.socket_slots(config)
        return model.slots(config, None, None)

    def base_fields(self, scenario, users: int, slots: float | None) -> dict:
        return {"transport": scenario.transport, "message_rate": scenario.message_rate,
                "predicted_held": room_prediction(users, slots)}  # fmt: skip

    def verify(self, url: str, scenario, proof) -> None:
        check = room.verify_room
        if room.transport(scenario.transport).persistent:
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
        deliveries = outcome.deliveries if outcome.deliveries is not None else pd.DataFrame()
        return self._columns(outcome.samples, deliveries, sender.frame(), resources,
                             outcome.window_start, outcome.window_end, base.users,
                             scenario.transport)  # fmt: skip

    def raw_facts(self, outcome: LocustOutcome, sender) -> dict[str, pd.DataFrame | None]:
        """The deliveries and the messages published: a room's judgement is made from them."""
        return {"deliveries": outcome.deliveries, "messages": sender.frame()}

    def derived(self, row) -> dict:
        """The request rules name no room's limit: its members held against its slots do."""
        return {}

    def reevaluate(self, row: pd.Series, facts: dict[str, pd.DataFrame], stored_usage) -> dict:
        messages = facts["messages"]
        if messages.empty:  # nothing published: the stored judgement stands
            return {}
        return self._columns(facts["samples"], facts["deliveries"], messages,
                             facts["resources"], row["window_start"], row["window_end"],
                             int(row["users"]), row.get("transport"))  # fmt: skip

    @staticmethod
    def _columns(samples, deliveries, messages, resources, start, end, members, transport):
        if deliveries.empty:
            deliveries = pd.DataFrame(columns=["member", "message", "sent", "received"])
        stats, usage, judgement = room.evaluate_room(
            samples, deliveries, messages, resources, start, end, members=members,
            transport=room.transport(transport),
        )  # fmt: skip
        return room.room_columns(stats, usage, judgement, stats.delivered / (end - start))


REQUEST_RESPONSE = RequestResponse()
ROOM = Room()


def room_prediction(members: int, slots: float | None) -> float | None:
    """Polls a model holds at once: all members, or its slots (the rest wait to be accepted)."""
    if slots is None or math.isinf(slots):
        return float(members)
    return float(min(members, slots))


def _count(value) -> int:
    return 0 if value is None or pd.isna(value) else int(value)

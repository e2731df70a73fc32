"""How a cell of each workload is judged: its columns from its raw facts, live or stored.

A scenario kind's registry entry names its workload (``planning.kinds``); measuring drives it
(``measuring.workloads``) and this module turns what was measured into the cell's columns, the
same way when the cell has just ended and when ``asyncbench report`` judges a stored one again.
"""

from __future__ import annotations

import pandas as pd

from asyncbench.judging import bottleneck
from asyncbench.judging.bottleneck import process_slots, slot_use
from asyncbench.judging.evaluate import evaluate_cell
from asyncbench.judging.resources import ResourceUsage
from asyncbench.judging.room import evaluate_room, room_columns
from asyncbench.planning.kinds import REQUEST_RESPONSE, ROOM, ScenarioKind
from asyncbench.planning.transports import transport


class RequestResponse:
    """One request, one answer: the window's statistics, resources and bottleneck."""

    def columns(self, samples: pd.DataFrame, resources: pd.DataFrame, start: float, end: float,
                cell, abandoned: int, stored_usage: ResourceUsage | None = None) -> dict:
        """The measured columns of ``cell`` (a ``CellResult`` or a stored row's mapping)."""
        server, users = cell["server"], cell["users"]
        slots, workers = cell.get("slots"), cell.get("workers")
        evaluation = evaluate_cell(
            samples, resources, start, end, rate=cell["rate"], abandoned=abandoned,
            stored_usage=stored_usage, slot_use=slot_use(server, users, slots, workers),
            process_slots=process_slots(server, slots, workers),
        )  # fmt: skip
        return evaluation.columns()

    def derived(self, row) -> dict:
        """Columns derived from the others: the bottleneck and the service demands."""
        return bottleneck.columns(row)

    def reevaluate(self, row: pd.Series, facts: dict[str, pd.DataFrame], stored_usage) -> dict:
        """The columns again, from a stored cell's raw facts (``asyncbench report``)."""
        return self.columns(facts["samples"], facts["resources"], row["window_start"],
                            row["window_end"], row, _count(row.get("abandoned")),
                            stored_usage)  # fmt: skip


class Room:
    """N members held against the model's slots: deliveries, losses, members held."""

    def columns(self, samples, deliveries, messages, resources, start, end, members,
                transport_name) -> dict:  # fmt: skip
        if deliveries is None or deliveries.empty:
            deliveries = pd.DataFrame(columns=["member", "message", "sent", "received"])
        stats, usage, judgement = evaluate_room(
            samples, deliveries, messages, resources, start, end, members=members,
            transport=transport(transport_name),
        )  # fmt: skip
        return room_columns(stats, usage, judgement, stats.delivered / (end - start))

    def derived(self, row) -> dict:
        """Its named limit (``bottleneck.name_room_limit``)."""
        return {"bottleneck": bottleneck.name_room_limit(row)}

    def reevaluate(self, row: pd.Series, facts: dict[str, pd.DataFrame], stored_usage) -> dict:
        messages = facts["messages"]
        if messages.empty:  # nothing published: the stored judgement stands
            return {}
        return self.columns(facts["samples"], facts["deliveries"], messages,
                            facts["resources"], row["window_start"], row["window_end"],
                            int(row["users"]), row.get("transport"))  # fmt: skip


JUDGES = {REQUEST_RESPONSE: RequestResponse(), ROOM: Room()}


def judge_of(kind: ScenarioKind):
    """How cells of ``kind`` are judged."""
    return JUDGES[kind.workload]


def _count(value) -> int:
    return 0 if value is None or pd.isna(value) else int(value)

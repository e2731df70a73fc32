"""The report's first screen from synthetic aggregates (no processes)."""

from __future__ import annotations

import math

import pandas as pd

from asyncbench.summary import summary_table
from asyncbench.view import Section

PALETTE = {"tornado-coroutine": "#1b9e77", "flask-blocking": "#d95f02"}


def room(rows) -> Section:
    """``rows``: (model, members, delivery p99 ms or nan when every repeat was invalid)."""
    agg = pd.DataFrame([
        {"server": m, "load": float(n), "delivery_p99_ms": p99, "rps_median": n,
         "members_connected": math.nan, "members_held_max": n, "predicted_held": n,
         "mem_per_member_kb": 20.0}
        for m, n, p99 in rows
    ])  # fmt: skip
    spec = {"kind_name": "room", "transport": "long-poll", "message_rate": 1}
    return Section("room-longpoll", "closed", spec, agg, agg)


def test_a_room_is_compared_where_the_most_models_were_judged_not_at_its_largest_level():
    """At 3,000 members only the coroutine model had a valid cell: comparing there would show
    dashes for every other model (seen in a default run); 100 members has both."""
    section = room([("tornado-coroutine", 10, 5.0), ("tornado-coroutine", 100, 9.0),
                    ("tornado-coroutine", 3000, 400.0), ("flask-blocking", 10, 12.0),
                    ("flask-blocking", 100, 95.0), ("flask-blocking", 3000, math.nan)])  # fmt: skip
    table = summary_table([section], ["room-longpoll"], PALETTE)
    assert {row["at"] for row in table["rows"]} == {"100 users"}
    assert {row["model"] for row in table["rows"]} == set(PALETTE)
    assert all("—" not in row["values"][1] for row in table["rows"])  # every p99 shown


def test_a_room_judged_at_one_level_only_is_compared_there():
    section = room([("tornado-coroutine", 3000, 400.0), ("flask-blocking", 3000, math.nan)])
    table = summary_table([section], ["room-longpoll"], PALETTE)
    assert {row["at"] for row in table["rows"]} == {"3000 users"}

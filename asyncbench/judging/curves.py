"""Where a model's curve over the load levels bends: the plateau where its throughput stops
growing with more users, and the open loop's knee where it falls behind the offered rate."""

from __future__ import annotations

import pandas as pd

from asyncbench.judging.analyze import first_of, section

PLATEAU_GROWTH = 0.25  # rps "stops growing": it gains < 25% of what more load ideally adds


def plateaus(agg: pd.DataFrame, scenario: str, loop: str = "closed") -> dict[str, dict]:
    """Per model, where its median rps stops growing with the load.

    Between two consecutive included loads l0 < l1, rps "stops growing" when it gains less than
    ``PLATEAU_GROWTH`` of the proportional gain ``rps(l0) * (l1/l0 - 1)``. The result gives the
    two loads, the ceiling (the highest median rps from there on), and — for a delayed scenario —
    how many requests that ceiling keeps in service at once (Little's law: rps × delay), to compare
    with the model's slots. Models still growing at their last load are absent.
    """
    out = {}
    rows = section(agg, scenario, loop)
    rows = rows[rows["rps_median"].notna()]
    for server, group in rows.groupby("server", sort=False):
        group = group.sort_values("load")
        loads, rps = group["load"].to_list(), group["rps_median"].to_list()
        for i in range(len(loads) - 1):
            ideal_gain = rps[i] * (loads[i + 1] / loads[i] - 1)
            if rps[i + 1] - rps[i] < PLATEAU_GROWTH * ideal_gain:
                ceiling = max(rps[i:])
                delay = group["delay_ms"].iloc[0]
                out[server] = {
                    "after": float(loads[i]), "before": float(loads[i + 1]),
                    "ceiling_rps": float(ceiling),
                    "in_service": float(ceiling * delay / 1000) if delay else None,
                    "slots": first_of(group["slots"]),
                    "slot_limit": first_of(group["slot_limit"]) if "slot_limit" in group else None,
                }  # fmt: skip
                break
    return out


KNEE_SHORTFALL = 0.9  # achieved below 90 % of the offered rate: the server fell behind


KNEE_LATENCY = 3.0  # or corrected p50 above 3× the scenario's delay: a queue is building


def knees(agg: pd.DataFrame, scenario: str) -> dict[str, dict]:
    """Per model, where an open loop's hockey stick bends: the last offered rate it kept up with
    and the first it did not, beside the predicted capacity ``slots / delay``."""
    rows = section(agg, scenario, "open")
    found = {}
    for server, group in rows[rows["rps_median"].notna()].groupby("server", sort=False):
        group = group.sort_values("load")
        delay = first_of(group["delay_ms"]) or 0
        slots = first_of(group["slots"])
        behind = (group["rps_median"] < KNEE_SHORTFALL * group["load"]) | (
            delay > 0 and group["p50_ms_median"] > KNEE_LATENCY * delay
        )
        first_bad = group[behind]["load"].min()
        kept_up = group[group["load"] < first_bad]["load"] if behind.any() else group["load"]
        found[server] = {
            "kept_up_to": float(kept_up.max()) if len(kept_up) else None,
            "fell_behind_at": float(first_bad) if behind.any() else None,
            "capacity_rps": slots * 1000 / delay if slots and delay else None,
        }
    return found

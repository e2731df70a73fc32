"""The report's first screen: one table of every scenario and model at its comparison level —
throughput, p99, the binding limit and memory per request — and a contents bar."""

from __future__ import annotations

import pandas as pd

from asyncbench import analyze, view
from asyncbench.view import Section


def summary_table(sections: list[Section], anchors: list[str], palette: dict) -> dict:
    """One row per scenario section and model, at the level its verdict compares."""
    rows = []
    for sec, anchor in zip(sections, anchors, strict=True):
        level = _level(sec)
        if level is None:
            continue
        for _, r in sec.agg[sec.agg["load"] == level].iterrows():
            rows.append({"scenario": sec.name, "anchor": anchor, "at": sec.at(level),
                         "model": r["server"], "color": palette.get(r["server"], "#999"),
                         "values": _values(r)})  # fmt: skip
    columns = ["throughput (min–max)", "p99 ms", "limit", "memory"]
    return {"columns": columns, "rows": rows}


def _level(sec: Section) -> float | None:
    if "delivery_p99_ms" in sec.agg and sec.agg["delivery_p99_ms"].notna().any():
        return float(sec.agg.loc[sec.agg["delivery_p99_ms"].notna(), "load"].max())  # a room
    return analyze.comparison_level(sec.agg, sec.scenario, sec.loop)


def _values(r: pd.Series) -> list[str]:
    if not view.missing(r.get("delivery_p99_ms")):  # a room: deliveries, held polls, KB/member
        held = f"held {r['members_held_max']:.0f} of predicted {r['predicted_held']:.0f}"
        if not view.missing(r.get("members_connected")):  # a socket room: who got in
            held = f"{r['members_connected']:.0f} of {r['load']:.0f} connected"
        return [f"{view.rps(r['rps_median'])} deliveries/s", view.ms(r["delivery_p99_ms"]),
                held, f"{view.ms(r['mem_per_member_kb'])} KB per member"]  # fmt: skip
    spread = view.span(r["rps_min"], r["rps_max"], view.rps)
    memory = r.get("rss_per_inflight_kb")
    return [f"{view.rps(r['rps_median'])} req/s ({spread})", view.ms(r["p99_ms_median"]),
            r.get("bottleneck") or "—",
            "—" if view.missing(memory) else f"{memory:,.0f} KB per request"]  # fmt: skip

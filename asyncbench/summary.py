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
        room = _is_room(sec)
        for _, r in sec.agg[sec.agg["load"] == level].iterrows():
            rows.append({"scenario": sec.name, "anchor": anchor, "at": sec.at(level),
                         "model": r["server"], "color": palette.get(r["server"], "#999"),
                         "values": _room_values(r) if room else _values(r)})  # fmt: skip
    columns = ["throughput (min–max)", "p99 ms", "limit", "memory"]
    return {"columns": columns, "rows": rows}


def _level(sec: Section) -> float | None:
    """A room's: the most members at which the most models have an included cell (a level
    where most models are invalid would show dashes); else the verdict's comparison level."""
    if _is_room(sec):
        judged = sec.agg[sec.agg["delivery_p99_ms"].notna()]
        models = judged.groupby("load")["server"].nunique()
        return float(models[models == models.max()].index.max())
    return analyze.comparison_level(sec.agg, sec.scenario, sec.loop)


def _is_room(sec: Section) -> bool:
    return "delivery_p99_ms" in sec.agg and sec.agg["delivery_p99_ms"].notna().any()


def _room_values(r: pd.Series) -> list[str]:
    """Deliveries, delivery p99, members held (or connected), KB per member."""
    if view.missing(r.get("delivery_p99_ms")):
        return ["—", "—", "no valid cell at this level", "—"]
    held = f"held {r['members_held_max']:.0f} of predicted {r['predicted_held']:.0f}"
    if not view.missing(r.get("members_connected")):  # a socket room: who got in
        held = f"{r['members_connected']:.0f} of {r['load']:.0f} connected"
    return [f"{view.rps(r['rps_median'])} deliveries/s", view.ms(r["delivery_p99_ms"]),
            held, f"{view.ms(r['mem_per_member_kb'])} KB per member"]  # fmt: skip


def _values(r: pd.Series) -> list[str]:
    spread = view.span(r["rps_min"], r["rps_max"], view.rps)
    memory = r.get("rss_per_inflight_kb")
    return [f"{view.rps(r['rps_median'])} req/s ({spread})", view.ms(r["p99_ms_median"]),
            r.get("bottleneck") or "—",
            "—" if view.missing(memory) else f"{memory:,.0f} KB per request"]  # fmt: skip

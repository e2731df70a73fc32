"""The report's first screen: one matrix of scenario (rows) by model (columns). Each cell holds
the figure that decides its row at the row's comparison level, shaded against the row's best;
the winner, or the models tied within the noise floor, are marked; under each row, its verdict
in at most two sentences. Plain data here; ``templates/report.html`` only lays it out."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
from scipy import stats

from asyncbench.judging import analyze
from asyncbench.judging.noise import NoiseFloors
from asyncbench.reporting import view
from asyncbench.reporting.view import Section

WIN, TIE = "★ wins", "= tie"
SHORT_REASON = 30  # characters of an invalid cell's label; its title holds the whole reason
SHORT_LIMIT = 48  # a named limit longer than this loses its parentheses and trailing clauses
Z = 1.96  # 95 % of a normal: one repeat's interval from its own standard error


def summary_table(sections: list[Section], blocks: list[dict], models: list[str],
                  palette: dict, floors: NoiseFloors) -> dict:  # fmt: skip
    """One row per scenario section (``blocks``: their page blocks, for anchor and verdict),
    one column per model in ``models`` order."""
    rows = [_row(sec, block, models, floors.for_scenario(sec.scenario))
            for sec, block in zip(sections, blocks, strict=True)]  # fmt: skip
    return {"models": [{"name": m, "color": palette.get(m, "#999")} for m in models],
            "rows": rows}  # fmt: skip


def _row(sec: Section, block: dict, models: list[str], floors: NoiseFloors) -> dict:
    room, level = _is_room(sec), _level(sec)
    build = _room_cell if room else _request_cell
    cells = {m: build(sec, m, level) if level is not None else _absent(sec, m) for m in models}
    why = ""
    if level is not None:
        judged = _room_judged(sec, level) if room else _request_judged(sec, level)
        tied = _room_ties(judged, floors) if room else _request_ties(sec, judged, floors)
        _mark(cells, judged, tied, room)
        why = _room_why(judged, sec, level) if room else _limits(judged)
    at = "no valid level" if level is None else _at(sec, level, room)
    return {"scenario": sec.name, "anchor": block["anchor"], "at": at,
            "measure": _ROOM_MEASURE if room else _REQUEST_MEASURE,
            "cells": [cells[m] for m in models], "headline": block["verdict"]["headline"],
            "why": why}  # fmt: skip


_REQUEST_MEASURE = "req/s, 95 % CI (2 repeats: range) · p99"
_ROOM_MEASURE = "delivery p99 · held · memory"


def _level(sec: Section) -> float | None:
    """A room's: the most members at which the most models have an included cell (a level
    where most models are invalid would show no figure); else the verdict's comparison level."""
    if _is_room(sec):
        judged = sec.agg[sec.agg["delivery_p99_ms"].notna()]
        if judged.empty:
            return None
        models = judged.groupby("load")["server"].nunique()
        return float(models[models == models.max()].index.max())
    return analyze.comparison_level(sec.agg, sec.scenario, sec.loop)


def _is_room(sec: Section) -> bool:
    return sec.spec.get("kind_name") == "room" or (
        "delivery_p99_ms" in sec.agg and sec.agg["delivery_p99_ms"].notna().any())  # fmt: skip


def _at(sec: Section, level: float, room: bool) -> str:
    return f"at {level:,.0f} members" if room else f"at {sec.at(level)}"


# --- Cells -----------------------------------------------------------------------------------


def _cell(value: str, lines: list[str] | None = None, title: str = "", ci: str = "",
          css: str = "") -> dict:  # fmt: skip
    return {"value": value, "ci": ci, "lines": lines or [], "title": title, "css": css,
            "mark": "", "shade": None, "background": ""}  # fmt: skip


def _request_cell(sec: Section, model: str, level: float) -> dict:
    """Throughput median with its 95 % interval, the p99 beneath; or why there is none."""
    row = _agg_row(sec.agg, model, level)
    if row is None:
        return _absent(sec, model, level)
    if view.missing(row["rps_median"]):
        return _invalid(_at_level(sec.cells, model, level))
    kept = _at_level(sec.cells, model, level)
    rps = kept.loc[kept["included"], "rps"].dropna()
    if len(rps) == 2:  # a t-interval on two repeats is ±12.7 × their spread / √2: their range
        ci = view.span(rps.min(), rps.max(), view.rps)
        how = "the range of its 2 repeats (a t-interval on two has 1 degree of freedom)"
    else:
        half, how = _interval(kept[kept["included"]])
        ci = "" if view.missing(half) else f"± {view.rps(half)}"
    p99 = f"p99 {view.ms(row['p99_ms_median'])} ms"
    return _cell(f"{view.rps(row['rps_median'])} req/s", [p99], title=f"{_median_of(row)}; {how}",
                 ci=ci)  # fmt: skip


def _interval(kept: pd.DataFrame) -> tuple[float, str]:
    """The half width of the level's 95 % throughput interval, and how it was found: from the
    repeats (a t-interval on their mean) when there are two or more, else from the one cell's
    own standard error."""
    rps = kept["rps"].dropna().to_numpy(dtype=float)
    if len(rps) >= 2:
        t = float(stats.t.ppf(0.5 + analyze.CONFIDENCE / 2, len(rps) - 1))
        half = t * rps.std(ddof=1) / math.sqrt(len(rps))
        return half, f"± is the 95 % t-interval on the mean of the {len(rps)} repeats' req/s"
    stderr = kept["rps_stderr"].dropna() if "rps_stderr" in kept else pd.Series(dtype=float)
    if len(rps) == 1 and len(stderr):
        return Z * float(stderr.iloc[0]), "± is 1.96 × the one repeat's own standard error"
    return math.nan, "no interval"


def _room_cell(sec: Section, model: str, level: float) -> dict:
    """Delivery p99, the members held (connected, for WebSocket), memory per member and the
    server's RSS — not deliveries/s, which equals the offered rate for every model."""
    row = _agg_row(sec.agg, model, level)
    if row is None:
        return _absent(sec, model, level)
    if view.missing(row["delivery_p99_ms"]):
        return _invalid(_at_level(sec.cells, model, level))
    held = f"held {_count(row['members_held_max'])} of {level:,.0f}"
    if not view.missing(row.get("members_connected")):  # a socket room: who got in
        held = f"{_count(row['members_connected'])} of {level:,.0f} connected"
    memory = f"{_count(row['mem_per_member_kb'])} KB/member · RSS {_count(row['rss_server_mb'])} MB"
    cell = _cell(f"p99 {view.ms(row['delivery_p99_ms'])} ms", [held, memory],
                 title=f"{_median_of(row)}: delivery p99 (send to every "
                 "member), members held at once or connected, server memory per member "
                 "(RSS over idle) and the server's RSS")  # fmt: skip
    if not _all_in(row):
        cell.update(mark="not judged", css="out", title=f"{cell['title']}; not judged: members "
                    "left waiting to connect receive nothing, so its p99 covers only the rest")
    return cell


def _all_in(row: pd.Series) -> bool:
    """Every member got in (always, for a poll: one not yet held is queued, not refused)."""
    connected = row.get("members_connected")
    return view.missing(connected) or connected >= row["load"]


def _median_of(row: pd.Series) -> str:
    n = int(row["repeats"])
    return "one repeat" if n == 1 else f"median of {n} repeats"


def _count(value) -> str:
    return "—" if view.missing(value) else f"{value:,.0f}"


def _absent(sec: Section, model: str, level: float | None = None) -> dict:
    """A model with no cell at the level: not run at all, or not at this level, or its cells'
    reason when the section has no valid level."""
    mine = sec.cells[sec.cells["server"] == model]
    if mine.empty:
        return _cell("not run", css="na", title=f"{model} has no cell in {sec.name}")
    if level is None:
        return _invalid(mine)
    return _cell("not run here", css="na", title=f"{model} has no cell at {sec.at(level)}")


def _invalid(cells: pd.DataFrame) -> dict:
    """An excluded level: the short form of its cells' commonest reason (all of it in the
    title)."""
    reasons = cells["reason"].dropna().astype(str) if "reason" in cells else pd.Series(dtype=str)
    reasons = reasons[reasons != ""]
    if reasons.empty and "bottleneck" in cells:
        reasons = cells["bottleneck"].dropna().astype(str)
    reason = reasons.mode().iloc[0] if len(reasons) else "no valid repeat"
    label = short_reason(reason)
    if (cells["status"] == "failed").all() and not label.startswith("fail"):
        label = f"failed: {label}"
    return _cell(label, css="na", title=reason)


def short_reason(reason: str) -> str:
    """The first clause of a reason, at most SHORT_REASON characters, e.g. ``machine CPU
    saturated: 92% of all cores busy, …`` → ``machine CPU saturated``."""
    text = re.split(r"; |: | \(|, ", reason.strip(), maxsplit=1)[0].strip()
    if len(text) <= SHORT_REASON:
        return text
    return text[:SHORT_REASON].rsplit(" ", 1)[0] + "…"


def _agg_row(agg: pd.DataFrame, model: str, level: float) -> pd.Series | None:
    rows = agg[(agg["server"] == model) & (agg["load"] == level)]
    return None if rows.empty else rows.iloc[0]


def _at_level(cells: pd.DataFrame, model: str, level: float) -> pd.DataFrame:
    return cells[(cells["server"] == model) & (cells["load"] == level)]


# --- Who wins, and the shading ----------------------------------------------------------------


def _request_judged(sec: Section, level: float) -> pd.DataFrame:
    """The level's valid rows, best throughput first (as ``verdicts.verdict`` orders them)."""
    rows = sec.agg[(sec.agg["load"] == level) & sec.agg["rps_median"].notna()]
    rows = rows.sort_values("rps_median", ascending=False)
    return rows.assign(figure=rows["rps_median"])


def _room_judged(sec: Section, level: float) -> pd.DataFrame:
    """The level's valid rows where every member got in (a WebSocket member left waiting
    receives nothing, so its fast p99 says nothing), lowest delivery p99 first."""
    rows = sec.agg[(sec.agg["load"] == level) & sec.agg["delivery_p99_ms"].notna()]
    all_in = rows["members_connected"].isna() | (rows["members_connected"] >= rows["load"])
    rows = rows[all_in].sort_values("delivery_p99_ms")  # as _all_in
    return rows.assign(figure=rows["delivery_p99_ms"])


def _mark(cells: dict[str, dict], judged: pd.DataFrame, tied: list[str], room: bool) -> None:
    """Shade each judged cell by value / best and mark the winner, or the models tied with
    it (``tied``, the winner aside)."""
    if judged.empty:
        return
    best = judged["figure"].iloc[0]
    for _, r in judged.iterrows():
        shade = best / r["figure"] if room else r["figure"] / best
        cells[r["server"]].update(shade=round(float(shade), 3), background=background(shade))
    winner = judged["server"].iloc[0]
    for model in [winner, *tied] if tied else [winner]:
        cells[model]["mark"] = TIE if tied else WIN
        cells[model]["css"] = "tie" if tied else "win"


def _request_ties(sec: Section, judged: pd.DataFrame, floors: NoiseFloors) -> list[str]:
    """The models the top one does not beat (``analyze.compare_models``, as the verdict)."""
    if len(judged) < 2:
        return []
    found = analyze.compare_models(sec.cells, judged["load"].iloc[0], judged["server"].iloc[0],
                                   list(judged["server"].iloc[1:]), floors)  # fmt: skip
    return [c.other for c in found if c.rps.verdict != "wins"]


def _room_ties(judged: pd.DataFrame, floors: NoiseFloors) -> list[str]:
    """The models whose delivery p99 is within the p99 noise floor of the lowest."""
    floor = floors.relative("delivery_p99_ms" if floors.room else "p99_ms")
    floor = floor if np.isfinite(floor) else 0.0
    rest = judged.iloc[1:]
    return list(rest.loc[rest["figure"] <= judged["figure"].iloc[0] * (1 + floor), "server"])


def background(shade: float) -> str:
    """A green whose depth follows value / best (1: the best), light enough for dark text."""
    shade = min(max(float(shade), 0.0), 1.0)
    return f"hsl(150, 50%, {97 - 27 * shade:.0f}%)"


# --- Why --------------------------------------------------------------------------------------


def _limits(judged: pd.DataFrame) -> str:
    """The named limit of the top model and of the slowest, e.g. ``Why: A — offered load (64
    users, 100 ms each); B — slots: workers = 4.``"""
    return _why(_named_limits(judged))


def _named_limits(judged: pd.DataFrame) -> list[str]:
    if "bottleneck" not in judged:
        return []
    ends = judged.iloc[[0, -1]] if len(judged) > 1 else judged.iloc[[0]]
    return [f"{r['server']} — {short_limit(r['bottleneck'])}" for _, r in ends.iterrows()
            if isinstance(r["bottleneck"], str) and r["bottleneck"]]  # fmt: skip


def _why(clauses: list[str]) -> str:
    """One sentence: ``Why: `` and the clauses, or "" without any."""
    return "Why: " + "; ".join(clauses) + "." if clauses else ""


def short_limit(text: str) -> str:
    """A named limit, shortened past SHORT_LIMIT characters: no parentheses, the first clause."""
    if len(text) <= SHORT_LIMIT:
        return text
    return re.sub(r"\s*\([^()]*\)", "", text).split(", ")[0]


def _room_why(judged: pd.DataFrame, sec: Section, level: float) -> str:
    """The named limits of the row's best and worst delivery (stored runs from before rooms
    had limits name none), and which models held (or connected) fewer than every member: the
    slots that set the delivery p99, or left members without a socket. One sentence."""
    clauses = _named_limits(judged)
    rows = sec.agg[(sec.agg["load"] == level) & sec.agg["delivery_p99_ms"].notna()]
    socket = rows["members_connected"].notna().any()
    column = "members_connected" if socket else "members_held_max"
    short = rows[rows[column] < rows["load"]]
    if len(short):
        counts = ", ".join(f"{r['server']} {r[column]:,.0f}" for _, r in short.iterrows())
        fewer = (f"connected fewer than all {level:,.0f} members" if socket
                 else f"held fewer than all {level:,.0f} members at once")  # fmt: skip
        clauses.append(f"{fewer}: {counts}")
    return _why(clauses)

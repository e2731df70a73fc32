"""The verdict of each report section, in words computed from the aggregates: who wins at the
comparison level, where each model stops growing, and how far the measurement is from the
prediction. Who wins or ties is decided in ``analyze``; this module only says it."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from asyncbench import analyze, view
from asyncbench.store import RunMeta
from asyncbench.view import Section

GAP_WORTH_EXPLAINING = 0.10  # |measured / predicted - 1| above this is called out in the verdict
CLEAR_WIN = 1.5  # "N×" from here on; below it, a percentage


@dataclass(frozen=True)
class Verdict:
    """A section's verdict: one bold headline, then the evidence."""

    headline: str
    text: str


def verdict(sec: Section, meta: RunMeta) -> Verdict:
    """The section's verdict, computed from the aggregates: a headline and its evidence."""
    level = analyze.comparison_level(sec.agg, sec.scenario, sec.loop)
    if level is None:
        reasons = sorted({r for r in sec.cells["reason"] if r}) or ["no cell has results yet"]
        return Verdict(
            headline="No valid measurements.",
            text=f"All {len(sec.cells)} cells of {sec.name} are excluded: {'; '.join(reasons)}.",
        )
    rows = sec.agg[(sec.agg["load"] == level) & sec.agg["rps_median"].notna()]
    rows = rows.sort_values("rps_median", ascending=False)
    winner, others = rows.iloc[0], rows.iloc[1:]
    at = sec.at(level)
    sentences = []
    if others.empty:
        headline = f"Only {winner['server']} has valid cells at {at}."
        sentences.append(f"It served {view.rps(winner['rps_median'])} req/s.")
    else:
        margins = [_margin(winner, other) for _, other in others.iterrows()]
        runner_up = others.iloc[0]
        if analyze.margin(winner, runner_up).tied:
            headline = (
                f"No clear winner at {at}: {winner['server']} and {runner_up['server']} are "
                "within the spread across repeats."
            )
        else:
            ratio = winner["rps_median"] / runner_up["rps_median"]
            lead = f"{ratio:.1f}×" if ratio >= CLEAR_WIN else f"{ratio - 1:.0%} more than"
            headline = (
                f"{winner['server']} wins at {at}: {lead} {runner_up['server']}'s throughput."
            )
        sentences.append(
            f"At {at}, the highest load where the most models have valid cells, it served "
            f"{view.rps(winner['rps_median'])} req/s: " + ", ".join(margins) + "."
        )
        p99 = ", ".join(
            f"{r['server']} {view.ms(r['p99_ms_median'])} ms" for _, r in rows.iterrows()
        )
        sentences.append(f"Median p99 there: {p99}.")
    sentences += _knee_sentences(sec) if sec.loop == "open" else _plateau_sentences(sec, meta)
    sentences += _prediction_sentences(sec)
    excluded = int((~sec.cells["included"]).sum())
    unstable = int(sec.agg["unstable"].sum())
    if excluded or unstable:
        parts = [f"{excluded} of {len(sec.cells)} cells excluded"] if excluded else []
        if unstable:
            parts.append(
                f"{unstable} of {len(sec.agg)} levels vary by more than "
                f"{analyze.UNSTABLE_COV:.0%} CoV across repeats"
            )
        text = " and ".join(parts)
        sentences.append(text[0].upper() + text[1:] + " (see the table).")
    return Verdict(headline, " ".join(sentences))


def _margin(winner: pd.Series, other: pd.Series) -> str:
    """How the winner compares with one other model, e.g. ``7.6× tornado-forked (40.0 req/s)``."""
    found = analyze.margin(winner, other)
    theirs = f"{other['server']} ({view.rps(other['rps_median'])} req/s)"
    if found.tied:
        return f"tied with {theirs} within the spread across repeats"
    if found.ratio >= CLEAR_WIN:
        return f"{found.ratio:.1f}× {theirs}"
    return f"{found.ratio - 1:.0%} more than {theirs}"


def _plateau_sentences(sec: Section, meta: RunMeta) -> list[str]:
    """Where each model stops growing, compared with its slots (Little's law: rps × delay)."""
    found = analyze.plateaus(sec.agg, sec.scenario, sec.loop)
    delay = sec.spec.get("delay_ms") or 0
    unit = "users" if sec.loop == "closed" else "req/s offered"
    limited, unexplained, cpu_bound = [], [], []
    for server, p in found.items():
        where = f"{server} between {p['after']:g} and {p['before']:g} {unit}"
        if p["in_service"] is None:
            cpu_bound.append(f"{where} ({view.rps(p['ceiling_rps'])} req/s)")
        elif p["slots"]:
            unit_name = meta.servers.get(server, {}).get("slot_unit", "slots")
            limit = p.get("slot_limit") or f"{p['slots']:.0f} {unit_name}"
            limited.append(
                f"{where} at {view.rps(p['ceiling_rps'])} req/s, {p['in_service']:.1f} requests "
                f"in service (rps × {delay} ms): {limit}"
            )
        else:
            unexplained.append(
                f"{where} at {view.rps(p['ceiling_rps'])} req/s ({p['in_service']:.1f} in service)"
            )
    out = []
    if limited:
        out.append("Throughput stops growing at the slot limit: " + "; ".join(limited) + ".")
    if unexplained:
        out.append(
            "Stops growing with no slot limit, a bottleneck to explain: "
            + "; ".join(unexplained)
            + "."
        )
    if cpu_bound:
        out.append(
            "Throughput stops growing (no I/O to overlap, so CPU-bound): "
            + "; ".join(cpu_bound)
            + "."
        )
    rows = sec.agg[sec.agg["rps_median"].notna()]
    still = [
        f"{server} (up to {sec.at(group['load'].max())})"
        for server, group in rows.groupby("server", sort=False)
        if server not in found and group["load"].nunique() > 1
    ]
    if still:
        out.append("Still scaling: " + ", ".join(still) + ".")
    return out


def _knee_sentences(sec: Section) -> list[str]:
    """Where each model's corrected latency turns upwards (the knee of the hockey stick)."""
    parts = []
    for server, knee in analyze.knees(sec.agg, sec.scenario).items():
        capacity = knee["capacity_rps"]
        expected = f" (predicted capacity {view.rps(capacity)} req/s)" if capacity else ""
        if knee["fell_behind_at"] is None:
            parts.append(f"{server} kept up to {knee['kept_up_to']:g} req/s{expected}")
        elif knee["kept_up_to"] is None:
            parts.append(f"{server} fell behind already at {knee['fell_behind_at']:g} req/s"
                         f"{expected}")  # fmt: skip
        else:
            parts.append(f"{server} between {knee['kept_up_to']:g} and "
                         f"{knee['fell_behind_at']:g} req/s{expected}")  # fmt: skip
    if not parts:
        return []
    return [
        "Knee, where the server falls behind the offered rate and corrected latency climbs: "
        + "; ".join(parts) + ". Past it, the queue grows for as long as the load lasts."
    ]


def _explained_sentence(sec: Section) -> list[str]:
    """How many cells the second prediction explains within analyze.EXPLAINED_WITHIN."""
    if "explained_gap" not in sec.cells:
        return []
    gaps = sec.cells.loc[sec.cells["included"], "explained_gap"].dropna()
    if gaps.empty:
        return []
    within = int((gaps.abs() <= analyze.EXPLAINED_WITHIN).sum())
    worst = sec.cells.loc[gaps.abs().idxmax()]
    text = (f"The second prediction (each model's own round trip at its lowest load, its slots "
            f"held for the handler time, and its CPU demands) explains {within} of {len(gaps)} "
            f"cells within {analyze.EXPLAINED_WITHIN:.0%}")
    if within < len(gaps):
        text += (f"; furthest: {worst['server']} at {sec.at(worst['load'])} "
                 f"{worst['explained_gap']:+.1%} ({worst.get('bottleneck') or 'no limit named'})")
    return [text + "."]


def _prediction_sentences(sec: Section) -> list[str]:
    return _textbook_sentences(sec) + _explained_sentence(sec)


def _textbook_sentences(sec: Section) -> list[str]:
    rows = sec.agg[sec.agg["rps_gap"].notna()]
    if rows.empty:
        return ["No queueing prediction applies (no delay): this measures framework cost."]
    order = rows["rps_gap"].abs().sort_values(ascending=False).index
    worst, others = rows.loc[order[0]], rows.loc[order[1:]]
    others = others[others["rps_gap"].abs() > GAP_WORTH_EXPLAINING].head(3)
    also = "; ".join(
        f"{r['server']} at {sec.at(r['load'])} {r['rps_gap']:+.0%}" for _, r in others.iterrows()
    )
    if abs(worst["rps_gap"]) <= GAP_WORTH_EXPLAINING:
        closed = sec.loop == "closed"
        formula = "min(users, slots) / delay" if closed else "min(rate, slots / delay)"
        return [
            f"Measured throughput is within {abs(worst['rps_gap']):.0%} of the queueing "
            f"prediction {formula} everywhere."
        ]
    return [
        f"Largest gap to the prediction: {worst['server']} at {sec.at(worst['load'])} measured "
        f"{view.rps(worst['rps_median'])} req/s against "
        f"{view.rps(worst['predicted_rps'])} predicted "
        f"({worst['rps_gap']:+.0%}; CPU there: {_cpu_context(worst)}) — a finding to explain, "
        "not to hide." + (f" Other gaps above {GAP_WORTH_EXPLAINING:.0%}: {also}." if also else "")
    ]


def _cpu_context(row: pd.Series) -> str:
    parts = [("server", "cpu_server", "of a core"), ("Locust", "cpu_locust", "of a core"),
             ("machine", "cpu_machine", "of all cores")]  # fmt: skip
    shown = [
        f"{name} {row[col]:.0f}% {unit}" for name, col, unit in parts if not view.missing(row[col])
    ]
    return ", ".join(shown) or "not sampled"

"""The verdict of each report section, in words computed from the aggregates: who wins at the
comparison level, where each model stops growing, and how far the measurement is from the
prediction. Who wins or ties is decided in ``analyze`` (intervals on the repeats and the noise
floor); this module only says it, always with the interval."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from asyncbench.judging import analyze, curves
from asyncbench.judging.analyze import ModelComparison
from asyncbench.judging.bottleneck import EXPLAINED_WITHIN
from asyncbench.judging.comparison import Comparison, format_ratio
from asyncbench.judging.noise import NoiseFloors
from asyncbench.reporting import view
from asyncbench.reporting.view import Section
from asyncbench.storing.records import RunMeta
from servers import MODELS

GAP_WORTH_EXPLAINING = 0.10  # |measured / predicted - 1| above this is called out in the verdict
CLEAR_WIN = 1.5  # "N×" from here on; below it, a percentage


@dataclass(frozen=True)
class Verdict:
    """A section's verdict: one bold headline, then the evidence."""

    headline: str
    text: str


def verdict(sec: Section, meta: RunMeta, floors: NoiseFloors) -> Verdict:
    """The section's verdict, computed from the aggregates and the repeats at the comparison
    level (``floors``: the run's noise floor, or the section's own where it has an A/A pair):
    a headline and its evidence."""
    floors = floors.for_scenario(sec.scenario)
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
        found = analyze.compare_models(sec.cells, level, winner["server"],
                                       list(others["server"]), floors)  # fmt: skip
        headline = _headline(winner["server"], found[0], at)
        beside = _tie_beside_the_rest(found, others)
        headline = f"{headline.removesuffix('.')}{beside}." if beside else headline
        sentences.append(
            f"At {at}, the highest load where the most models have valid cells, it served "
            f"{view.rps(winner['rps_median'])} req/s: "
            + "; ".join(_margin(c, others) for c in found) + "."
        )
        p99 = ", ".join(
            f"{r['server']} {view.ms(r['p99_ms_median'])} ms" for _, r in rows.iterrows()
        )
        sentences.append(f"Median p99 there: {p99}. {winner['server']}'s p99 is "
                         + "; ".join(_p99(c.p99) for c in found) + ".")  # fmt: skip
        sentences += alternatives_sentences(sec.cells, level, list(rows["server"]), floors)
    cost = _framework_cost(sec)
    if cost:  # no I/O: the framework's own cost decides, not one latency-bound level
        headline, sentences = cost, [headline, *sentences]
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


def alternatives_sentences(
    cells: pd.DataFrame, level: float, present: list[str], floors: NoiseFloors
) -> list[str]:
    """Where each model people pick instead of a rewrite stands against the models its entry
    names (``ModelSpec.compared_with``), at the comparison level: its throughput and p99 as
    ratios of theirs, each with its interval and verdict."""
    out = []
    for model in present:
        spec = MODELS.get(model)
        against = [m for m in (spec.compared_with if spec else ()) if m in present]
        if not against:
            continue
        found = analyze.compare_models(cells, level, model, against, floors)
        parts = [f"throughput {_ratio_of(c.rps, 'higher')}, p99 {_ratio_of(c.p99, 'lower')}"
                 for c in found]  # fmt: skip
        out.append(f"{spec.label} against " + "; against ".join(
            f"{c.other}: {part}" for c, part in zip(found, parts, strict=True)) + ".")
    return out


def _ratio_of(c: Comparison, better: str) -> str:
    """E.g. ``0.98× (no clear difference; 95 % CI 0.95–1.01×)``; ``better`` is what a win is
    ("higher" throughput, "lower" p99)."""
    if c.verdict == "insufficient data":
        return f"not comparable ({c.method})"
    worse = {"higher": "lower", "lower": "higher"}[better]
    word = {"wins": better, "loses": worse}.get(c.verdict, "no clear difference")
    return f"{format_ratio(c.ratio)}× ({word}; {interval(c)})"


def _framework_cost(sec: Section) -> str | None:
    """For a scenario with no I/O: the server CPU each model spends per request, the median
    over every measured cell. It stays meaningful when the machine saturates (the cell is
    invalid, its CPU per request is not), so no single latency-bound level decides."""
    if "cpu_ms_server" not in sec.cells or sec.agg["predicted_rps"].notna().any():
        return None
    measured = sec.cells[sec.cells["status"] != "failed"]
    cost = measured.groupby("server")["cpu_ms_server"].median().dropna().sort_values()
    if cost.empty:
        return None
    parts = ", ".join(f"{model} {ms * 1000:,.0f} µs" for model, ms in cost.items())
    return f"Framework cost, server CPU per request (median over every measured cell): {parts}."


def _headline(winner: str, first: ModelComparison, at: str) -> str:
    c = first.rps
    if c.verdict == "wins":
        return f"{winner} wins at {at}: {_lead(c.ratio)} {c.b}'s throughput ({interval(c)})."
    if c.verdict == "insufficient data":
        return f"No verdict at {at}: too few repeats to compare {winner} with {c.b}."
    return (f"No clear winner at {at}: {winner} and {c.b} differ by {format_ratio(c.ratio)}× "
            f"({interval(c)}), {_within(c)}.")  # fmt: skip


def _tie_beside_the_rest(found: list[ModelComparison], others: pd.DataFrame) -> str:
    """After "No clear winner": how many models tie at the top and how far the top one stands
    above the slowest model it beats (``; 5 models tie at the top, and tornado-threadpool
    serves 15.9× flask-blocking's 38.8 req/s (95 % CI …)``); "" where it beats none. A tie at
    the top is not the scenario's whole answer when the models it beats are far below."""
    if not found or found[0].rps.verdict in ("wins", "insufficient data"):
        return ""  # the headline names a winner, or no verdict
    beaten = [c for c in found if c.rps.verdict == "wins"]
    if not beaten:
        return ""
    tied = 1 + len(found) - len(beaten)  # as the first screen marks them: all it does not beat
    slowest = max(beaten, key=lambda c: c.rps.ratio)
    rps = others.loc[others["server"] == slowest.other, "rps_median"].iloc[0]
    return (f"; {tied} models tie at the top, and {slowest.rps.a} serves "
            f"{_lead(slowest.rps.ratio)} {slowest.other}'s {view.rps(rps)} req/s "
            f"({interval(slowest.rps)})")


def _lead(ratio: float) -> str:
    return f"{ratio:.1f}×" if ratio >= CLEAR_WIN else f"{ratio - 1:.0%} more than"


def interval(c: Comparison) -> str:
    """E.g. ``95 % CI 14.1–16.0×``."""
    return f"{c.confidence * 100:g} % CI {format_ratio(c.low)}–{format_ratio(c.high)}×"


def _within(c: Comparison) -> str:
    if c.low > 1 or c.high < 1:
        return f"within the ±{c.noise_floor:.1%} noise floor"
    return "an interval that includes 1"


def _margin(c: ModelComparison, others: pd.DataFrame) -> str:
    """How the winner compares with one other model on throughput, with the interval, e.g.
    ``7.6× tornado-forked (40.0 req/s; 95 % CI 7.1–8.2×)``."""
    rps = others.loc[others["server"] == c.other, "rps_median"].iloc[0]
    theirs = f"{c.other} ({view.rps(rps)} req/s; {interval(c.rps)})"
    if c.rps.verdict == "wins":
        return f"{_lead(c.rps.ratio)} {theirs}"
    if c.rps.verdict == "insufficient data":
        return f"too few repeats to compare with {c.other} ({c.rps.method})"
    if c.rps.verdict == "loses":
        return f"{format_ratio(c.rps.ratio)}× {theirs}, less on the mean of its repeats"
    return f"no clear difference from {theirs}, {_within(c.rps)}"


def _p99(c: Comparison) -> str:
    """The winner's p99 against another model's, e.g. ``0.95× tornado-forked's (lower; 95 % CI
    0.91–0.99×)``."""
    if c.verdict == "insufficient data":
        return f"not comparable with {c.b}'s (too few repeats)"
    word = {"wins": "lower", "loses": "higher"}.get(c.verdict, "no clear difference")
    if c.verdict == "no clear difference" and (c.low > 1 or c.high < 1):
        word += f", within the ±{c.noise_floor:.1%} noise floor"
    return f"{format_ratio(c.ratio)}× {c.b}'s ({word}; {interval(c)})"


def _plateau_sentences(sec: Section, meta: RunMeta) -> list[str]:
    """Where each model stops growing, compared with its slots (Little's law: rps × delay)."""
    found = curves.plateaus(sec.agg, sec.scenario, sec.loop)
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
    for server, knee in curves.knees(sec.agg, sec.scenario).items():
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
    """How many cells the second prediction explains within EXPLAINED_WITHIN."""
    if "explained_gap" not in sec.cells:
        return []
    gaps = sec.cells.loc[sec.cells["included"], "explained_gap"].dropna()
    if gaps.empty:
        return []
    within = int((gaps.abs() <= EXPLAINED_WITHIN).sum())
    worst = sec.cells.loc[gaps.abs().idxmax()]
    text = (f"The second prediction (each model's own round trip at its lowest load, its slots "
            f"held for the handler time, and its CPU demands) explains {within} of {len(gaps)} "
            f"cells within {EXPLAINED_WITHIN:.0%}")
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

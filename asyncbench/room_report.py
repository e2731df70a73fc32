"""A room scenario's report section: delivery, members held, memory per member and the probe,
per model and member count, with a verdict computed from the data."""

from __future__ import annotations

from dataclasses import asdict

import pandas as pd

from asyncbench import figures, view
from asyncbench.tables import Column, level_table
from asyncbench.verdicts import Verdict
from asyncbench.view import Section

TARGET_P99_MS = 100.0  # "delivers within 100 ms p99": what a chat user reads as instant


def _pair(a, b, fmt) -> str:
    return f"{fmt(a)} · {fmt(b)}"


def _count(value) -> str:
    return "—" if view.missing(value) else f"{value:,.0f}"


COLUMNS = (
    Column("members", lambda r: f"{r['load']:g}", lambda c: f"{c['load']:g}"),
    Column("repeats", lambda r: f"{r['repeats']}/{r['cells']}", lambda c: c["status"]),
    Column("held max · predicted", lambda r: _pair(r["members_held_max"], r["predicted_held"],
                                                   _count),
           lambda c: _pair(c["members_held_max"], c["predicted_held"], _count)),
    Column("lost", lambda r: _count(r["lost"]), lambda c: _count(c["lost"])),
    Column("delivery p50 · p99 ms", lambda r: _pair(r["delivery_p50_ms"], r["delivery_p99_ms"],
                                                    view.ms),
           lambda c: _pair(c["delivery_p50_ms"], c["delivery_p99_ms"], view.ms)),
    Column("last member p50 ms", lambda r: view.ms(r["last_member_p50_ms"]),
           lambda c: view.ms(c["last_member_p50_ms"])),
    Column("probe p50 · p99 ms", lambda r: _pair(r["probe_p50_ms"], r["probe_p99_ms"], view.ms),
           lambda c: _pair(c["probe_p50_ms"], c["probe_p99_ms"], view.ms)),
    Column("KB per member", lambda r: _count(r["mem_per_member_kb"]),
           lambda c: _count(c["mem_per_member_kb"])),
    Column("CPU server · locust · all",
           lambda r: view.cpus(r["cpu_server"], r["cpu_locust"], r["cpu_machine"]),
           lambda c: view.cpus(c["cpu_server"], c["cpu_locust"], c.get("cpu_machine"))),
)  # fmt: skip


def section_data(sec: Section, meta, samples, models, palette, with_baseline: bool) -> dict:
    title = "members"
    charts = [
        figures.per_level(f"fig-{sec.slug}-delivery", "Delivery p99: send to every member",
                          "milliseconds", sec.agg, models, palette, "delivery_p99_ms", title,
                          caption="From the time the sender embedded to the member's receipt; "
                          "every (message, member) pair of the window."),
        figures.per_level(f"fig-{sec.slug}-held", "Polls held at once (dashed: predicted)",
                          "held polls", sec.agg, models, palette, "members_held_max", title,
                          predicted="predicted_held",
                          caption="The bus's gauge of held polls, sampled each second; a model "
                          "with S slots holds at most S, the others wait to be accepted."),
        figures.per_level(f"fig-{sec.slug}-memory", "Server memory per held member",
                          "KB", sec.agg, models, palette, "mem_per_member_kb", title,
                          caption="Server RSS over its idle baseline, per poll held."),
        figures.per_level(f"fig-{sec.slug}-probe", "GET /hello meanwhile: probe p99",
                          "milliseconds", sec.agg, models, palette, "probe_p99_ms", title,
                          caption="An open-loop probe at a low fixed rate, from its intended "
                          "time: can the server still serve anything else?"),
    ]  # fmt: skip
    return {
        "name": sec.name,
        "anchor": f"scenario-{sec.slug}",
        "description": sec.spec.get("description", ""),
        "path": f"{sec.spec.get('transport', 'long-poll')}: GET /room/poll · "
        f"{sec.spec.get('message_rate', '?')} message/s",
        "verdict": asdict(room_verdict(sec)),
        "figures": charts,
        "table": level_table(sec, models, palette, with_baseline, columns=list(COLUMNS)),
    }


def room_verdict(sec: Section) -> Verdict:
    """Which model keeps the most members within TARGET_P99_MS, at 0 lost; the probe at the
    top level; where messages were lost."""
    reach = _reach(sec.agg)
    if not reach:
        return Verdict("No valid room cell.", "Every cell lost messages or failed (see the table).")
    ranked = sorted(reach.items(), key=lambda item: -item[1])
    best, most = ranked[0]
    others = ", ".join(f"{m} {_members(n)}" for m, n in ranked[1:]) or "no other model"
    headline = (f"{best} delivers every message to {_members(most)} within "
                f"{TARGET_P99_MS:.0f} ms p99; {others}.")  # fmt: skip
    sentences = [_probe_sentence(sec), _lost_sentence(sec.cells)]
    return Verdict(headline, " ".join(s for s in sentences if s))


def _reach(agg: pd.DataFrame) -> dict[str, float]:
    """Per model, the most members at a valid level whose median delivery p99 is in target."""
    good = agg[agg["delivery_p99_ms"].notna() & (agg["delivery_p99_ms"] <= TARGET_P99_MS)]
    reach = {m: float(g["load"].max()) for m, g in good.groupby("server", sort=False)}
    for model in agg["server"].unique():
        reach.setdefault(model, 0.0)
    return reach


def _members(n: float) -> str:
    return "no member count" if not n else f"{n:,.0f} members"


def _probe_sentence(sec: Section) -> str:
    top = sec.agg[sec.agg["probe_p99_ms"].notna()]
    if top.empty:
        return ""
    level = top["load"].max()
    rows = top[top["load"] == level]
    shown = ", ".join(f"{r['server']} {view.ms(r['probe_p99_ms'])} ms" for _, r in rows.iterrows())
    return f"At {level:,.0f} members a GET /hello took (p99): {shown}."


def _lost_sentence(cells: pd.DataFrame) -> str:
    lossy = cells[cells["lost"].fillna(0) > 0]
    if lossy.empty:
        return "No valid cell lost a message."
    worst = lossy.groupby("server")["load"].min()
    parts = ", ".join(f"{m} from {n:,.0f} members" for m, n in worst.items())
    return f"Messages were lost (cells invalid): {parts}."

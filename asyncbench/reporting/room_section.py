"""A room scenario's report section: delivery, members held, memory per member and the probe,
per model and member count, with a verdict computed from the data; and, when a run has the room
over more than one transport, the transports side by side."""

from __future__ import annotations

from dataclasses import asdict
from itertools import groupby

import pandas as pd

from asyncbench.planning.transports import TRANSPORTS, transport
from asyncbench.reporting import figures, view
from asyncbench.reporting.tables import LIMIT, Column, level_table
from asyncbench.reporting.verdicts import Verdict
from asyncbench.reporting.view import Section

TARGET_P99_MS = 100.0  # "delivers within 100 ms p99": what a chat user reads as instant


def _pair(a, b, fmt) -> str:
    return f"{fmt(a)} · {fmt(b)}"


def _count(value) -> str:
    return "—" if view.missing(value) else f"{value:,.0f}"


def _cpu_ms(value) -> str:
    return "—" if view.missing(value) else f"{value:.2f}"


def _transport(spec: dict):
    return transport(spec.get("transport"))


COLUMNS = (
    Column("members", lambda r: f"{r['load']:g}", lambda c: f"{c['load']:g}"),
    Column("repeats", lambda r: f"{r['repeats']}/{r['cells']}", lambda c: c["status"]),
    Column("held max · predicted", lambda r: _pair(r["members_held_max"], r["predicted_held"],
                                                   _count),
           lambda c: _pair(c["members_held_max"], c["predicted_held"], _count)),
    Column("connected", lambda r: _count(r["members_connected"]),
           lambda c: _count(c["members_connected"])),
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
    Column("CPU ms per delivery", lambda r: _cpu_ms(r["cpu_ms_per_delivery"]),
           lambda c: _cpu_ms(c["cpu_ms_per_delivery"])),
    Column("CPU server · locust · all",
           lambda r: view.cpus(r["cpu_server"], r["cpu_locust"], r["cpu_machine"]),
           lambda c: view.cpus(c["cpu_server"], c["cpu_locust"], c.get("cpu_machine"))),
    LIMIT,
)  # fmt: skip


def section_data(sec: Section, meta, samples, models, palette, floors, with_baseline: bool) -> dict:
    title, transport = "members", _transport(sec.spec)
    held = transport.held
    charts = [
        figures.per_level(f"fig-{sec.slug}-delivery", "Delivery p99: send to every member",
                          "milliseconds", sec.agg, models, palette, "delivery_p99_ms", title,
                          caption="From the time the sender embedded to the member's receipt; "
                          "every (message, member) pair of the window."),
        figures.per_level(f"fig-{sec.slug}-held", f"{held.capitalize()} at once (dashed: "
                          "predicted)", held, sec.agg, models, palette, "members_held_max",
                          title, predicted="predicted_held",
                          caption=f"The bus's gauge of {held}, summed over the server's "
                          "processes, sampled each second; a model with S slots holds at most "
                          "S, the others wait to be accepted."),
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
        "path": f"{transport.endpoint} ({transport.name}) · "
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
    sentences = [_probe_sentence(sec), _lost_sentence(sec.cells)]
    return Verdict(_reach_headline(sec.agg, reach), " ".join(s for s in sentences if s))


def _reach_headline(agg: pd.DataFrame, reach: dict[str, float]) -> str:
    """The models grouped by how many members they reached, most first, each group by its
    delivery p99 there: "A delivers every message to 1,000 members within 100 ms p99 (62 ms),
    as does B (78 ms); 100 members: C, D; none: E."."""
    ranked = sorted(reach.items(), key=lambda item: (-item[1], _p99_at(agg, *item)))
    groups = [(n, [m for m, _ in group]) for n, group in groupby(ranked, key=lambda it: it[1])]
    (most, top), rest = groups[0], groups[1:]
    if not most:
        return f"No model delivers every message within {TARGET_P99_MS:.0f} ms p99."
    p99 = {m: f"({view.ms(_p99_at(agg, m, most))} ms)" for m in top}
    headline = (f"{top[0]} delivers every message to {_members(most)} within "
                f"{TARGET_P99_MS:.0f} ms p99 {p99[top[0]]}")  # fmt: skip
    if len(top) > 1:
        peers = [f"{m} {p99[m]}" for m in top[1:]]
        headline += f", as {'does' if len(peers) == 1 else 'do'} {_listed(peers)}"
    return headline + "".join(f"; {_members(n)}: {', '.join(ms)}" for n, ms in rest) + "."


def _listed(items) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _reach(agg: pd.DataFrame) -> dict[str, float]:
    """Per model, the most members at a valid level whose median delivery p99 is in target and
    where every member got in (a WebSocket member left waiting receives nothing)."""
    connected = agg["members_connected"].isna() | (agg["members_connected"] >= agg["load"])
    good = agg[agg["delivery_p99_ms"].notna() & (agg["delivery_p99_ms"] <= TARGET_P99_MS)
               & connected]  # fmt: skip
    reach = {m: float(g["load"].max()) for m, g in good.groupby("server", sort=False)}
    for model in agg["server"].unique():
        reach.setdefault(model, 0.0)
    return reach


def _p99_at(agg: pd.DataFrame, model: str, members: float) -> float:
    """A model's delivery p99 at ``members`` (ties on members go to the lower one)."""
    found = agg[(agg["server"] == model) & (agg["load"] == members)]["delivery_p99_ms"].dropna()
    return float(found.iloc[0]) if len(found) else float("inf")


def _members(n: float) -> str:
    return "none" if not n else f"{n:,.0f} members"


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


# --- Transports compared ---------------------------------------------------------------------


TRANSPORT_METRICS = (  # (header, aggregate column, format)
    ("held", "members_held_max", _count),
    ("connected", "members_connected", _count),
    ("delivery p99 ms", "delivery_p99_ms", view.ms),
    ("last member p50 ms", "last_member_p50_ms", view.ms),
    ("KB per member", "mem_per_member_kb", _count),
    ("CPU ms per delivery", "cpu_ms_per_delivery", _cpu_ms),
)


def transports_block(sections: list[Section], models, palette) -> dict | None:
    """Long-poll and WebSocket side by side per model and member count (same message rate),
    and which transport and model deliver to the most members within TARGET_P99_MS."""
    rooms = {_transport(s.spec).name: s for s in sections if s.spec.get("kind_name") == "room"}
    if len(rooms) < 2 or len({s.spec.get("message_rate") for s in rooms.values()}) > 1:
        return None
    names = list(rooms)
    shown = [(header, column, fmt, n) for header, column, fmt in TRANSPORT_METRICS for n in names
             if rooms[n].agg[column].notna().any()]  # e.g. "connected" means nothing for polls
    columns = ["members", *(f"{header} · {n}" for header, _, _, n in shown)]
    rows = []
    for model in models:
        loads = sorted(set().union(*(set(s.agg.loc[s.agg["server"] == model, "load"])
                                     for s in rooms.values())))  # fmt: skip
        for load in loads:
            picked = {n: _level(rooms[n].agg, model, load) for n in names}
            values = [f"{load:,.0f}"] + [
                fmt(picked[n][column]) if picked[n] is not None else "—"
                for _, column, fmt, n in shown
            ]  # fmt: skip
            rows.append({"label": model, "values": values, "css": "", "note": "",
                         "color": palette[model]})  # fmt: skip
    return {
        "name": "room: transports compared",
        "anchor": "room-transports",
        "description": f"The same room, members and message rate over {' and '.join(names)}: "
        "what each transport costs the server per member, and how far each model gets.",
        "path": " vs ".join(TRANSPORTS[n].endpoint for n in names),
        "verdict": asdict(_transports_verdict(rooms)),
        "figures": [],
        "table": {"columns": ["model", *columns], "rows": rows, "width": len(columns) + 2},
    }


def _level(agg: pd.DataFrame, model: str, load: float) -> pd.Series | None:
    rows = agg[(agg["server"] == model) & (agg["load"] == load)]
    return None if rows.empty else rows.iloc[0]


def _transports_verdict(rooms: dict[str, Section]) -> Verdict:
    reach = {(model, name): n
             for name, sec in rooms.items() for model, n in _reach(sec.agg).items()}
    if not any(reach.values()):
        return Verdict("No transport delivered within target on any model.", "")
    (model, name), most = max(reach.items(), key=lambda item: item[1])
    per_transport = "; ".join(
        f"{n}: " + ", ".join(f"{m} {_members(v)}" for (m, t), v in reach.items() if t == n)
        for n in rooms
    )  # fmt: skip
    headline = (f"{model} over {name} delivers to the most members within "
                f"{TARGET_P99_MS:.0f} ms p99: {_members(most)}.")  # fmt: skip
    return Verdict(headline, f"Members reached within target, per transport: {per_transport}.")

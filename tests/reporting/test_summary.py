"""The report's first screen, the who-wins-where matrix, from synthetic sections (no processes)."""

from __future__ import annotations

import math
import re

import pandas as pd

from asyncbench.judging import analyze
from asyncbench.judging.noise import NoiseFloors, default_floor
from asyncbench.reporting.summary import TIE, WIN, short_limit, short_reason, summary_table
from asyncbench.reporting.view import Section

PALETTE = {"tornado-coroutine": "#1b9e77", "flask-blocking": "#d95f02", "tornado-forked": "#7570b3"}
FLOORS = NoiseFloors(default_floor("rps"), default_floor("p99_ms"))  # 5 % rps, 15 % p99
SATURATED = "machine CPU saturated: 92% of all cores busy, so the load generator competes"


def requests(rows, scenario: str = "sleep") -> Section:
    """``rows``: (model, users, [rps of each repeat], p99 ms, bottleneck, reason); a reason
    makes every repeat of the level invalid ("failed: …" makes them failed)."""
    cells = []
    for model, users, repeats, p99, bottleneck, reason in rows:
        status = "ok" if not reason else "failed" if reason.startswith("failed: ") else "invalid"
        for i, rps in enumerate(repeats, 1):
            cells.append({
                "scenario": scenario, "server": model, "rate": 0.0, "users": users,
                "loop": "closed", "load": float(users), "repeat": i, "status": status,
                "included": not reason, "reason": reason.removeprefix("failed: "),
                "rps": rps, "rps_stderr": rps * 0.01, "p50_ms": p99 / 2, "p90_ms": p99 * 0.9,
                "p99_ms": p99 * (1 + i / 1000), "predicted_rps": 640.0, "bottleneck": bottleneck,
            })  # fmt: skip
    frame = pd.DataFrame(cells)
    return Section(scenario, "closed", {"kind_name": scenario}, frame, analyze.aggregate(frame))


def room(rows, transport: str = "long-poll") -> Section:
    """``rows``: (model, members, delivery p99 ms or nan when the cell was invalid, and for a
    WebSocket room the members connected)."""
    agg = pd.DataFrame([
        {"server": m, "load": float(n), "delivery_p99_ms": p99, "rps_median": n,
         "members_connected": connected[0] if connected else math.nan,
         "members_held_max": n, "predicted_held": n, "mem_per_member_kb": 20.0,
         "rss_server_mb": 60.0, "repeats": 0 if math.isnan(p99) else 1, "bottleneck": "",
         "status": "invalid" if math.isnan(p99) else "ok",
         "reason": "3 of 300 deliveries lost (never received)" if math.isnan(p99) else ""}
        for m, n, p99, *connected in rows
    ])  # fmt: skip
    name = "room-longpoll" if transport == "long-poll" else "room-websocket"
    spec = {"kind_name": "room", "transport": transport, "message_rate": 1}
    return Section(name, "closed", spec, agg, agg)


def table(*sections: Section, models=tuple(PALETTE)) -> dict:
    blocks = [{"anchor": f"scenario-{s.slug}", "verdict": {"headline": f"{s.name} verdict."}}
              for s in sections]  # fmt: skip
    return summary_table(list(sections), blocks, list(models), PALETTE, FLOORS)


def cells(row: dict) -> dict[str, dict]:
    return dict(zip(PALETTE, row["cells"], strict=True))


def text(cell: dict) -> str:
    return " ".join([cell["value"], cell["ci"], *cell["lines"], cell["mark"]])


CLEAR = [("tornado-coroutine", 64, [600, 606, 612], 110.0, "offered load (64 users)", ""),
         ("flask-blocking", 64, [38, 39, 40], 1700.0, "slots: workers = 4", ""),
         ("tornado-forked", 64, [300, 303, 306], 400.0, "slots: workers = 4", "")]  # fmt: skip


def test_one_row_per_scenario_and_one_column_per_model_in_the_report_order():
    order = ["tornado-forked", "tornado-coroutine", "flask-blocking"]
    found = table(requests(CLEAR), room([("tornado-coroutine", 100, 50.0)]), models=order)
    assert [m["name"] for m in found["models"]] == order
    assert [m["color"] for m in found["models"]] == [PALETTE[m] for m in order]
    assert [r["scenario"] for r in found["rows"]] == ["sleep", "room-longpoll"]
    assert [r["anchor"] for r in found["rows"]] == ["scenario-sleep", "scenario-room-longpoll"]
    assert [r["at"] for r in found["rows"]] == ["at 64 users", "at 100 members"]
    assert all(len(r["cells"]) == len(order) for r in found["rows"])
    assert found["rows"][0]["cells"][1]["value"] == "606 req/s"  # tornado-coroutine's median


def test_a_clear_lead_wins_and_the_others_are_unmarked():
    row = table(requests(CLEAR))["rows"][0]
    marks = {m: c["mark"] for m, c in cells(row).items()}
    assert marks == {"tornado-coroutine": WIN, "flask-blocking": "", "tornado-forked": ""}


def test_models_within_the_noise_floor_tie_and_nobody_wins():
    close = [("tornado-coroutine", 64, [600, 606, 612], 110.0, "", ""),
             ("flask-blocking", 64, [38, 39, 40], 1700.0, "", ""),
             ("tornado-forked", 64, [598, 604, 611], 112.0, "", "")]  # fmt: skip
    marks = {m: c["mark"] for m, c in cells(table(requests(close))["rows"][0]).items()}
    assert marks == {"tornado-coroutine": TIE, "flask-blocking": "", "tornado-forked": TIE}


def test_cells_are_shaded_by_value_against_the_rows_best():
    shades = {m: c["shade"] for m, c in cells(table(requests(CLEAR))["rows"][0]).items()}
    assert shades["tornado-coroutine"] == 1.0
    assert 1.0 > shades["tornado-forked"] > shades["flask-blocking"] > 0
    assert shades["tornado-forked"] == round(303 / 606, 3)
    row = table(room([("tornado-coroutine", 100, 50.0), ("flask-blocking", 100, 100.0),
                      ("tornado-forked", 100, 400.0)]))["rows"][0]  # fmt: skip
    room_shades = {m: c["shade"] for m, c in cells(row).items()}
    assert room_shades == {"tornado-coroutine": 1.0, "flask-blocking": 0.5, "tornado-forked": 0.125}
    lightness = [int(re.search(r"(\d+)%\)$", cells(row)[m]["background"]).group(1))
                 for m in ("tornado-coroutine", "flask-blocking", "tornado-forked")]  # fmt: skip
    assert lightness == sorted(lightness) and lightness[0] >= 65  # darker = better, text readable


def test_a_request_cell_shows_its_interval_and_p99_and_says_how():
    many = cells(table(requests(CLEAR))["rows"][0])["tornado-coroutine"]
    assert many["ci"] == "± 14.9"  # t(0.975, 2) × 6 / √3
    assert many["lines"] == ["p99 110.2 ms"]
    assert "t-interval" in many["title"] and "3 repeats" in many["title"]
    one = [("tornado-coroutine", 64, [600], 110.0, "", ""),
           ("flask-blocking", 64, [40], 1700.0, "", "")]  # fmt: skip
    single = cells(table(requests(one))["rows"][0])["tornado-coroutine"]
    assert single["ci"] == "± 11.8" and "1.96 × the one repeat's own standard error" in single[
        "title"]  # fmt: skip


def test_an_invalid_or_failed_level_shows_its_short_reason_never_a_dash():
    rows = [*CLEAR[:2], ("tornado-forked", 64, [300, 301], 400.0, "", SATURATED)]
    invalid = cells(table(requests(rows))["rows"][0])["tornado-forked"]
    assert invalid["value"] == "machine CPU saturated" and invalid["css"] == "na"
    assert invalid["title"] == SATURATED and invalid["shade"] is None and not invalid["mark"]
    failed = [*CLEAR[:2], ("tornado-forked", 64, [math.nan], math.nan, "",
                           "failed: tornado-forked exited with code 1 before it was ready")]
    label = cells(table(requests(failed))["rows"][0])["tornado-forked"]["value"]
    assert label.startswith("failed: tornado-forked exited") and len(label) <= 40
    assert all("—" not in text(c) for r in (rows, failed)
               for c in table(requests(r))["rows"][0]["cells"])  # fmt: skip


def test_a_model_without_a_cell_in_the_scenario_shows_not_run():
    row = table(requests(CLEAR[:2]))["rows"][0]
    assert cells(row)["tornado-forked"]["value"] == "not run"
    assert cells(row)["tornado-forked"]["css"] == "na"


def test_a_room_cell_shows_delivery_p99_held_memory_and_rss_not_deliveries():
    row = table(room([("tornado-coroutine", 100, 50.0), ("flask-blocking", 100, 120.0)]))["rows"][0]
    cell = cells(row)["tornado-coroutine"]
    assert cell["value"] == "p99 50.0 ms"
    assert cell["lines"] == ["held 100 of 100", "20 KB/member · RSS 60 MB"]
    assert all("deliver" not in text(c) for c in row["cells"])  # deliveries/s = offered rate
    assert cells(row)["tornado-forked"]["value"] == "not run"
    socket = room([("tornado-coroutine", 1000, 80.0, 1000), ("flask-blocking", 1000, 3.0, 4)],
                  transport="websocket")  # fmt: skip
    row = table(socket)["rows"][0]
    assert cells(row)["flask-blocking"]["lines"][0] == "4 of 1,000 connected"
    # 996 members never got in: the 3 ms p99 of the four who did wins nothing
    assert cells(row)["tornado-coroutine"]["mark"] == WIN
    left_out = cells(row)["flask-blocking"]
    assert left_out["mark"] == "not judged" and left_out["shade"] is None
    assert "left waiting" in left_out["title"]


def test_a_room_winner_has_the_lowest_delivery_p99_and_ties_within_the_p99_floor():
    marks = {m: c["mark"] for m, c in cells(table(room([
        ("tornado-coroutine", 100, 50.0), ("flask-blocking", 100, 56.0),
        ("tornado-forked", 100, 80.0)]))["rows"][0]).items()}  # fmt: skip
    assert marks == {"tornado-coroutine": TIE, "flask-blocking": TIE, "tornado-forked": ""}
    row = table(room([("tornado-coroutine", 100, 50.0), ("flask-blocking", 100, 80.0)]))
    assert cells(row["rows"][0])["tornado-coroutine"]["mark"] == WIN


def test_the_verdict_under_a_row_is_the_headline_and_one_sentence_of_why():
    row = table(requests(CLEAR))["rows"][0]
    assert row["headline"] == "sleep verdict."
    assert row["why"] == ("Why: tornado-coroutine — offered load (64 users); "
                          "flask-blocking — slots: workers = 4.")  # fmt: skip
    said = f"{row['headline']} {row['why']}"
    assert len(re.findall(r"\.(?:\s|$)", said)) <= 2
    held = room([("tornado-coroutine", 100, 50.0), ("flask-blocking", 100, 80.0)])
    held.agg.loc[held.agg["server"] == "flask-blocking", "members_held_max"] = 4
    assert table(held)["rows"][0]["why"] == (
        "Why: held fewer than all 100 members at once: flask-blocking 4.")
    held.agg["bottleneck"] = held.agg["server"].map({
        "tornado-coroutine": "offered load (100 members, 2 messages/s)",
        "flask-blocking": "slots: workers = 4 (100 members)"})  # fmt: skip
    said = table(held)["rows"][0]["why"]
    assert said == ("Why: tornado-coroutine — offered load (100 members, 2 messages/s); "
                    "flask-blocking — slots: workers = 4 (100 members); held fewer than all "
                    "100 members at once: flask-blocking 4.")  # fmt: skip
    assert len(re.findall(r"\.(?:\s|$)", f"{row['headline']} {said}")) <= 2


def test_a_room_is_compared_where_the_most_models_were_judged_not_at_its_largest_level():
    """At 3,000 members only the coroutine model had a valid cell: comparing there would show
    no figure for every other model (seen in a default run); 100 members has both."""
    section = room([("tornado-coroutine", 10, 5.0), ("tornado-coroutine", 100, 9.0),
                    ("tornado-coroutine", 3000, 400.0), ("flask-blocking", 10, 12.0),
                    ("flask-blocking", 100, 95.0), ("flask-blocking", 3000, math.nan)])  # fmt: skip
    row = table(section)["rows"][0]
    assert row["at"] == "at 100 members"
    assert cells(row)["tornado-coroutine"]["value"] == "p99 9.0 ms"
    assert cells(row)["flask-blocking"]["value"] == "p99 95.0 ms"


def test_a_room_judged_at_one_level_only_is_compared_there():
    section = room([("tornado-coroutine", 3000, 400.0), ("flask-blocking", 3000, math.nan)])
    row = table(section)["rows"][0]
    assert row["at"] == "at 3,000 members"
    assert cells(row)["flask-blocking"]["value"] == "3 of 300 deliveries lost"
    assert cells(row)["tornado-coroutine"]["mark"] == WIN


def test_a_scenario_without_a_valid_level_shows_each_models_reason():
    rows = [(m, 64, [10], 100.0, "", SATURATED) for m in ("tornado-coroutine", "flask-blocking")]
    row = table(requests(rows))["rows"][0]
    assert row["at"] == "no valid level" and row["why"] == ""
    assert [c["value"] for c in row["cells"]] == ["machine CPU saturated"] * 2 + ["not run"]


def test_short_reasons_and_limits():
    assert short_reason(SATURATED) == "machine CPU saturated"
    assert short_reason("load generator saturated: Locust used 97% of a core") == (
        "load generator saturated")
    assert short_reason("no request completed in the measured window") == (
        "no request completed in the…")
    assert short_limit("slots: workers = 4") == "slots: workers = 4"
    assert short_limit("outside the handler: 3.7 of each 105 ms round trip (1.5 of it waiting "
                       "for the server's CPU; client, transport), 605 of 640 req/s") == (
        "outside the handler: 3.7 of each 105 ms round trip")  # fmt: skip


def test_two_repeats_show_their_range_not_a_one_degree_of_freedom_interval():
    """A default run showed "586 req/s ± 150" for repeats of 576 and 596: the t quantile of one
    degree of freedom is 12.7. Two repeats show their range."""
    from asyncbench.reporting.summary import _request_cell

    cells = pd.DataFrame([
        {"server": "m", "load": 64.0, "rps": rps, "rps_stderr": 2.0, "included": True,
         "status": "ok", "reason": "", "repeat": r} for r, rps in ((1, 576.0), (2, 596.0))
    ])  # fmt: skip
    agg = pd.DataFrame([{"server": "m", "load": 64.0, "rps_median": 586.0, "rps_min": 576.0,
                         "rps_max": 596.0, "p99_ms_median": 110.0, "repeats": 2, "cells": 2}])
    spec = {"kind_name": "", "endpoint": "/sleep"}
    cell = _request_cell(Section("sleep", "closed", spec, cells, agg), "m", 64.0)
    assert cell["ci"] == "576–596" and "range of its 2 repeats" in cell["title"]


def test_a_room_row_ties_within_its_own_delivery_p99_floor_not_the_request_p99s():
    """A default run's room pair measured ±99 %: 57 ms against 67 ms is a tie there, while the
    request p99 floor (15 %) called tornado-coroutine the winner."""
    from dataclasses import replace

    from asyncbench.judging.comparison import NoiseFloor

    room_floor = NoiseFloors.of_room(NoiseFloor(0.994, 1.0, 0.2, 3))
    floors = replace(FLOORS, scenarios={"room-longpoll": room_floor})
    section = room([("tornado-coroutine", 100, 57.2), ("flask-blocking", 100, 66.7)])
    blocks = [{"anchor": "scenario-room-longpoll", "verdict": {"headline": "room verdict."}}]
    row = summary_table([section], blocks, list(PALETTE), PALETTE, floors)["rows"][0]
    marks = {m: c["mark"] for m, c in cells(row).items() if m != "tornado-forked"}  # not run
    assert marks == {"tornado-coroutine": TIE, "flask-blocking": TIE}
    assert cells(table(section)["rows"][0])["tornado-coroutine"]["mark"] == WIN  # 15 %

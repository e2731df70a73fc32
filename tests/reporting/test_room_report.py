"""The room's report pieces from synthetic aggregates (no processes): the reach verdict and the
transports side by side."""

from __future__ import annotations

import math

import pandas as pd

from asyncbench.reporting.room_section import TARGET_P99_MS, room_verdict, transports_block
from asyncbench.reporting.view import Section

MODELS = ["tornado-coroutine", "flask-blocking"]
PALETTE = {"tornado-coroutine": "#1b9e77", "flask-blocking": "#d95f02"}


def agg(rows) -> pd.DataFrame:
    """``rows``: (model, members, delivery p99 ms, members connected or nan)."""
    return pd.DataFrame([
        {"server": m, "load": float(n), "delivery_p99_ms": p99, "members_connected": conn,
         "members_held_max": conn if not math.isnan(conn) else n, "last_member_p50_ms": p99 / 2,
         "mem_per_member_kb": 20.0, "cpu_ms_per_delivery": 0.05, "probe_p99_ms": 4.0,
         "predicted_held": n}
        for m, n, p99, conn in rows
    ])  # fmt: skip


def section(name, transport, rows, rate=1) -> Section:
    spec = {"kind_name": "room", "transport": transport, "message_rate": rate}
    table = agg(rows)
    return Section(name, "closed", spec, table.assign(lost=0), table)


LONG_POLL = section("room-longpoll", "long-poll", [
    ("tornado-coroutine", 10, 5.0, math.nan), ("tornado-coroutine", 1000, 60.0, math.nan),
    ("flask-blocking", 10, 900.0, math.nan)])  # fmt: skip
SOCKETS = section("room-websocket", "websocket", [
    ("tornado-coroutine", 10, 3.0, 10), ("tornado-coroutine", 1000, 20.0, 1000),
    ("tornado-coroutine", 3000, 80.0, 3000),
    ("flask-blocking", 10, 2.0, 4)])  # fmt: skip


def test_a_level_where_members_were_left_out_is_not_reached():
    verdict = room_verdict(SOCKETS)
    assert verdict.headline.startswith("tornado-coroutine delivers every message to 3,000")
    assert verdict.headline.endswith("; none: flask-blocking.")  # 4 of 10 got in: not reached


def test_models_that_reach_as_many_members_are_ranked_by_their_delivery_p99():
    """A default run headlined flask-blocking (73.9 ms at 100 members) over tornado-coroutine
    (57.2 ms there): both reached 100, the first listed won."""
    room = section("room-longpoll", "long-poll", [
        ("flask-blocking", 100, 73.9, math.nan), ("tornado-coroutine", 100, 57.2, math.nan)])
    assert room_verdict(room).headline.startswith("tornado-coroutine delivers every message")


def test_the_headline_groups_the_models_by_the_members_they_reached_most_first():
    """A seven-model default run listed "fastapi-uvicorn 100 members, flask-gevent 100 members,
    ..." model by model; grouped, it says at once who reached how far."""
    room = section("room-websocket", "websocket", [
        ("tornado-forked", 1000, 62.2, 1000), ("flask-gevent", 1000, 77.9, 1000),
        ("tornado-coroutine", 1000, 105.2, 1000), ("tornado-coroutine", 100, 9.0, 100),
        ("flask-threaded", 1000, 48.2, 256), ("flask-threaded", 100, 18.7, 100),
        ("flask-blocking", 100, 3.3, 4)])  # fmt: skip
    assert room_verdict(room).headline == (
        f"tornado-forked delivers every message to 1,000 members within {TARGET_P99_MS:.0f} ms "
        "p99 (62.2 ms), as does flask-gevent (77.9 ms); 100 members: tornado-coroutine, "
        "flask-threaded; none: flask-blocking.")  # fmt: skip
    nobody = section("room-longpoll", "long-poll", [("flask-blocking", 100, 900.0, math.nan)])
    assert room_verdict(nobody).headline == (
        f"No model delivers every message within {TARGET_P99_MS:.0f} ms p99.")


def test_transports_side_by_side_with_the_verdict_from_the_data():
    block = transports_block([LONG_POLL, SOCKETS], MODELS, PALETTE)
    assert block["verdict"]["headline"] == (
        f"tornado-coroutine over websocket delivers to the most members within "
        f"{TARGET_P99_MS:.0f} ms p99: 3,000 members.")
    columns = block["table"]["columns"]
    assert columns[:2] == ["model", "members"]
    assert "delivery p99 ms · long-poll" in columns and "delivery p99 ms · websocket" in columns
    rows = {(r["label"], r["values"][0]): dict(zip(columns[1:], r["values"], strict=True))
            for r in block["table"]["rows"]}  # fmt: skip
    assert rows[("tornado-coroutine", "3,000")]["delivery p99 ms · long-poll"] == "—"
    assert rows[("tornado-coroutine", "3,000")]["delivery p99 ms · websocket"] == "80.0"
    assert rows[("flask-blocking", "10")]["connected · websocket"] == "4"
    assert "connected · long-poll" not in columns  # a poll has no connection to count


def test_no_comparison_with_one_transport_or_different_rates():
    assert transports_block([SOCKETS], MODELS, PALETTE) is None
    other_rate = section("room-fast", "long-poll", [("tornado-coroutine", 10, 5.0, math.nan)], 5)
    assert transports_block([other_rate, SOCKETS], MODELS, PALETTE) is None

"""The room over both transports, end to end: real servers, a real Redis, real Locust members."""

from __future__ import annotations

import threading

import pytest

from asyncbench.cli import main, run_and_report
from asyncbench.judging import analyze
from asyncbench.measuring.run import RunHooks, RunSettings
from asyncbench.measuring.services import throwaway_redis
from asyncbench.reporting.report import build_report
from asyncbench.storing.store import RunDir

pytestmark = pytest.mark.slow


def room_run(tmp_path, servers, members, redis_url=None, hooks=None, workers=2,
             scenario="room-longpoll") -> RunDir:  # fmt: skip
    settings = RunSettings(
        scenarios=(scenario,), servers=servers, users=(members,), duration_s=3,
        warmup_s=1.5, repeat=1, workers=workers, reports_dir=str(tmp_path), seed=5, new=True,
        redis_url=redis_url,
    )  # fmt: skip
    return run_and_report(settings, hooks)


@pytest.fixture(scope="module")
def rooms(tmp_path_factory) -> dict[str, RunDir]:
    """200 members on the coroutine model; 20 on a 2-worker blocking model."""
    out = tmp_path_factory.mktemp("rooms")
    return {"tornado-coroutine": room_run(out, ("tornado-coroutine",), 200),
            "flask-blocking": room_run(out, ("flask-blocking",), 20)}  # fmt: skip


def cell(run: RunDir, server: str):
    results = run.results()
    return results[results["server"] == server].iloc[0]


def test_coroutine_room_delivers_every_message_to_200_members(rooms):
    run = rooms["tornado-coroutine"]
    row = cell(run, "tornado-coroutine")
    assert row["status"] == "ok", row["reason"]
    assert row["messages"] >= 2 and row["lost"] == 0 and row["duplicates"] == 0
    assert row["delivered"] == 200 * row["messages"]
    assert row["delivery_p99_ms"] < 1000  # generous: a message a second to 200 members
    # The event loop holds many members at once, far beyond a worker-bound model's 2 (the gauge
    # is sampled each second and some members are always between two polls: 81 to 200 seen)
    assert row["members_held_max"] >= 40
    assert row["probe_p99_ms"] < 500
    assert (run.path / "index.html").exists()


def test_a_room_run_is_its_own_baseline(rooms, capsys):
    """A baseline's room cells are re-judged from their deliveries, as the run's are: without
    them they came back with no status, and the report stopped on their empty reasons. Its room
    level is gated on its delivery p99 (200 members: no A/A pair, the default room floor) and
    its lost deliveries."""
    run = rooms["tornado-coroutine"]
    page = build_report(run, run).read_text()
    assert "OK: 1 levels (1 of them room levels), none regressed" in page
    assert main(["compare", str(run.path), "--baseline", str(run.path)]) == 0
    out = capsys.readouterr().out
    assert "room-longpoll / tornado-coroutine / 200 members" in out
    assert "room-longpoll: delivery p99 ±50.0 %, the default, conservative floor" in out


def test_a_two_worker_blocking_model_holds_two_and_the_probe_waits(rooms):
    row = cell(rooms["flask-blocking"], "flask-blocking")
    assert row["status"] in ("ok", "invalid"), row["reason"]
    assert row["members_held_max"] <= 2 and row["predicted_held"] == 2
    # the probe queues behind held polls: far slower than on an idle server
    assert row["probe_p99_ms"] > 50 or row["lost"] > 0


@pytest.fixture(scope="module")
def sockets(tmp_path_factory) -> dict[str, RunDir]:
    """200 WebSocket members on the coroutine model; 6 on a 2-worker blocking model."""
    out = tmp_path_factory.mktemp("sockets")
    return {model: room_run(out, (model,), members, scenario="room-websocket")
            for model, members in (("tornado-coroutine", 200), ("flask-blocking", 6))}


def test_coroutine_socket_room_delivers_every_message_to_200_members(sockets):
    row = cell(sockets["tornado-coroutine"], "tornado-coroutine")
    assert row["status"] == "ok", row["reason"]
    assert row["members_connected"] == 200 and row["reconnects"] == 0
    assert row["messages"] >= 2 and row["lost"] == 0 and row["duplicates"] == 0
    assert row["delivered"] == 200 * row["messages"]
    assert row["members_held_max"] >= 195  # sockets stay open: the gauge sees them all
    assert row["delivery_p99_ms"] < 1000 and row["probe_p99_ms"] < 500
    # nothing saturated at a message a second: the room itself sets the pace
    assert row["bottleneck"].startswith(("offered load (200 members", "server CPU")), row


@pytest.mark.parametrize("model", ["tornado-coroutine", "flask-blocking"])
def test_the_report_rejudges_a_socket_room_as_the_run_did(sockets, model):
    run = sockets[model]
    cells = analyze.cell_table(run.results(), run.samples(), run.resources(), run.deliveries(),
                               run.messages())  # fmt: skip
    stored = cell(run, model)
    again = cells[cells["server"] == model].iloc[0]
    for column in ("status", "delivered", "lost", "members_connected", "delivery_p99_ms",
                   "bottleneck"):
        assert again[column] == stored[column], column


def test_a_two_worker_blocking_model_connects_two_sockets_and_reports_the_rest(sockets):
    row = cell(sockets["flask-blocking"], "flask-blocking")
    assert row["status"] == "ok", row["reason"]
    assert row["members_connected"] <= 2 and row["members_held_max"] <= 2
    assert row["predicted_held"] == 2
    assert row["lost"] == 0  # the connected members got every message; the others are
    assert row["delivered"] == row["members_connected"] * row["messages"]  # not connected
    # the cell names why the rest waited: the 2 workers its registry entry says bind sockets
    assert row["slot_limit"] == "workers = 2"
    assert row["bottleneck"] == "slots: workers = 2 (6 members)", row["bottleneck"]


@pytest.mark.parametrize("scenario", ["room-longpoll", "room-websocket"])
def test_killing_redis_mid_cell_fails_that_cell_and_the_matrix_goes_on(tmp_path, scenario):
    with throwaway_redis() as bus:
        class KillRedis(RunHooks):
            def cell_started(self, cell, index, expected_s):
                if index == 0:
                    threading.Timer(2.5, bus.process.popen.kill).start()

        run = room_run(tmp_path, ("tornado-coroutine", "tornado-threadpool"), 20,
                       redis_url=bus.url, hooks=KillRedis(), scenario=scenario)  # fmt: skip
    results = run.results()
    assert len(results) == 2 and run.read_meta().status == "complete"
    first = results.sort_values("order").iloc[0]
    assert first["status"] == "failed"
    assert "publish" in first["reason"] or "bus" in first["reason"], first["reason"]
    second = results.sort_values("order").iloc[1]
    assert second["status"] == "failed" and "message bus" in second["reason"]

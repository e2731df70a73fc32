"""Real runs of the matrix: Locust against real servers, result files, validity, predictions."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from asyncbench.cli import run_and_report
from asyncbench.judging import analyze
from asyncbench.measuring.run import CELL_OVERHEAD_S, RunSettings, _expected_s, run_matrix
from asyncbench.planning.plan import Scenario
from asyncbench.storing.migrate import SCHEMA_VERSION
from asyncbench.storing.records import CellResult
from asyncbench.storing.store import RunDir
from servers import MODELS as REGISTRY

pytestmark = pytest.mark.slow

MODELS = ("flask-blocking", "tornado-forked", "tornado-coroutine")


@pytest.fixture(scope="module")
def sleep_run(tmp_path_factory) -> RunDir:
    """sleep at 100 ms, 2 and 24 users, 3 s windows, 2 workers for the blocking models."""
    reports = tmp_path_factory.mktemp("reports")
    settings = RunSettings(
        scenarios=("sleep",), servers=MODELS, users=(2, 24), duration_s=3, warmup_s=1,
        repeat=1, workers=2, reports_dir=str(reports), seed=11, new=True,
    )  # fmt: skip
    return run_and_report(settings)


def test_run_writes_every_file(sleep_run: RunDir):
    meta = json.loads(sleep_run.meta_json.read_text())
    assert meta["status"] == "complete" and meta["seed"] == 11
    assert meta["schema_version"] == SCHEMA_VERSION
    assert set(meta["servers"]) == set(MODELS)
    results = sleep_run.results()
    assert list(results.columns) == CellResult.columns()
    assert len(results) == 6 and set(results["status"]) <= {"ok", "invalid"}
    assert (results["workers"] == 2).all()
    samples = sleep_run.samples()
    assert set(samples["cell_id"]) == set(results["cell_id"])
    assert {"start_time", "latency_ms", "status", "bytes", "error"} <= set(samples.columns)
    resources = sleep_run.resources()
    assert {"cpu_server", "cpu_locust", "cpu_machine"} <= set(resources.columns)
    assert (sleep_run.path.parent / "latest").resolve() == sleep_run.path.resolve()
    assert (sleep_run.path / "index.html").stat().st_size > 100_000  # built after the run
    # No sample lost between Locust's own count and the raw file.
    assert (results["locust_requests"] == results["recorded_samples"]).all()
    assert (results["abandoned"] == 0).all()
    users = samples.groupby("cell_id")["user"].nunique()
    assert (users == results.set_index("cell_id")["users"]).all()  # every user has its id
    # The report re-judges from the stored raw facts: same verdicts as at run time.
    cells = analyze.cell_table(results, samples, resources)
    for column in ("status", "reason", "rps", "p99_ms", "cpu_machine"):
        assert cells[column].tolist() == results[column].tolist()
    # The second prediction is stored as cells arrive (the same the report computes).
    ok = results["status"] == "ok"
    assert results.loc[ok, "explained_rps"].notna().all()
    stored = results["explained_rps"].round(6).fillna(-1).tolist()
    assert cells["explained_rps"].round(6).fillna(-1).tolist() == stored


def test_run_json_says_where_the_time_went(sleep_run: RunDir):
    invocation = sleep_run.read_meta().invocations[-1]
    results = sleep_run.results()
    windows = (results["window_end"] - results["window_start"]).sum()
    assert invocation.measured_s == pytest.approx(windows)
    assert invocation.warmup_s == pytest.approx(results["warmup_used_s"].sum(), abs=0.05)
    assert invocation.report_s > 0 and invocation.wall_s > invocation.measured_s
    assert invocation.outside_share == pytest.approx(1 - windows / invocation.wall_s, abs=1e-3)
    # Stage by stage: the windows as Locust timed them, and every stage within the wall time.
    phases = invocation.phases
    assert phases["window"] == pytest.approx(windows, abs=0.05)
    assert phases["warmup"] == pytest.approx(invocation.warmup_s, abs=0.05)
    assert all(phases[stage] > 0 for stage in ("server_start", "verify", "locust_start",
                                               "locust_stop", "server_stop", "save"))
    assert sum(phases.values()) < invocation.wall_s


def test_the_warm_up_ends_once_every_user_has_settled(sleep_run: RunDir):
    """Early where every user completed two requests after spawning, the full warm-up where
    users queue for the slots (24 users on 2 workers: each answered every 1.2 s)."""
    results, samples = sleep_run.results(), sleep_run.samples()
    queued = results["users"] > results["slots"]
    assert queued.any() and (~queued).any()
    assert results.loc[queued, "warmup_used_s"].tolist() == pytest.approx(
        results.loc[queued, "warmup_s"].tolist(), abs=0.05)  # fmt: skip
    # Users that fit in the slots may warm up longer while their server still warms up.
    assert (results["warmup_used_s"] <= 3 * results["warmup_s"] + 0.05).all()
    # A forked server whose idle child took both connections serves them in turn (the
    # imbalance): its users may or may not complete two requests within the warm-up.
    balanced = results.apply(lambda r: _serving_processes(r) >= min(r["users"], r["slots"]), axis=1)
    settled = results[~queued & balanced]
    assert (settled["warmup_used_s"] >= 0.2).all()  # two 100 ms cycles at least
    assert (settled["warmup_used_s"] < settled["warmup_s"] - 0.3).all()
    for row in settled.itertuples():
        spawned = row.window_start - row.warmup_used_s - 0.002  # stored to the millisecond
        cell = samples[samples["cell_id"] == row.cell_id]
        done = cell["start_time"].ge(spawned) & (cell["start_time"] + cell["latency_ms"] / 1000).le(
            row.window_start + 0.05)  # fmt: skip
        per_user = cell[done].groupby("user").size()
        assert len(per_user) == row.users and (per_user >= 2).all(), row.cell_id


def test_orchestrator_never_imports_locust(sleep_run: RunDir):
    """Locust monkey-patches the standard library on import (DESIGN rule 1)."""
    from gevent import monkey

    assert "locust" not in sys.modules
    assert not monkey.is_module_patched("socket")


def _serving_processes(row) -> int:
    """Processes that answered any request in the window (``process_requests``: one count each)."""
    return sum(int(n) > 0 for n in str(row["process_requests"]).split())


def _balanced_prediction(row) -> float:
    """The prediction with the slots a forked server really used: an idle child accepts every
    pending connection at once, so kept-alive connections may all land in fewer children than it
    has, and each serves its own one at a time (the imbalance the harness names)."""
    if row["server"] != "tornado-forked":
        return row["predicted_rps"]
    return min(row["users"], _serving_processes(row)) / (row["delay_ms"] / 1000)


def test_coroutine_beats_blocking_by_the_predicted_ratio(sleep_run: RunDir):
    results = sleep_run.results().set_index(["server", "users"], drop=False)
    coroutine = results.loc[("tornado-coroutine", 24)]
    for blocking in ("flask-blocking", "tornado-forked"):
        row = results.loc[(blocking, 24)]
        measured_ratio = coroutine["rps"] / row["rps"]
        predicted_ratio = coroutine["predicted_rps"] / _balanced_prediction(row)
        assert 0.7 * predicted_ratio < measured_ratio < 1.3 * predicted_ratio, row.to_dict()


def test_measured_within_15_percent_of_prediction(sleep_run: RunDir):
    results = sleep_run.results()
    assert results["valid"].all(), results[["cell_id", "reason"]]
    gap = results["rps"] / results["predicted_rps"] - 1
    assert (gap < 0.15).all(), results[["cell_id", "rps", "predicted_rps"]]
    explained = results.apply(_balanced_prediction, axis=1)
    balanced_gap = results["rps"] / explained - 1
    assert (balanced_gap.abs() < 0.15).all(), results[["cell_id", "rps", "process_requests"]]
    # Where the children's balance cost throughput, the harness says so itself.
    unbalanced = results["predicted_rps"] > 1.15 * explained
    short = results[unbalanced & (results["users"] > results["slots"])]
    assert short["bottleneck"].str.startswith("unbalanced workers").all(), short["bottleneck"]


def test_percentiles_come_from_raw_samples_in_the_window(sleep_run: RunDir):
    results = sleep_run.results()
    samples = sleep_run.samples()
    for row in results.itertuples():
        cell = samples[samples["cell_id"] == row.cell_id]
        inside = cell[
            (cell["start_time"] >= row.window_start) & (cell["start_time"] < row.window_end)
        ]
        before = cell[cell["start_time"] < row.window_start]
        assert len(before) > 0, "the warm-up produced samples that must be excluded"
        latencies = sorted(inside["latency_ms"])
        assert row.requests == len(latencies)
        assert row.p50_ms == pytest.approx(np.percentile(latencies, 50))
        assert row.p99_ms == pytest.approx(np.percentile(latencies, 99))
        assert row.max_ms == pytest.approx(latencies[-1])
        span = row.window_end - row.window_start
        assert row.rps_count == pytest.approx(len(latencies) / span)
        # free users are read from their own cycles, users queued for a blocking model's
        # workers from the completions, users that stay with a forked child child by child;
        # either way the count's phase error bounds the gap
        pinned = "closed-loop per process"
        assert row.rps_method in ("closed-loop completions", "closed-loop cycles") or (
            row.server == "tornado-forked" and row.rps_method.startswith(pinned)), row.rps_method
        assert row.rps == pytest.approx(row.rps_count, abs=row.users / span)
        # A forked child may take both users' connections and serve them in turn (the accept
        # imbalance): read child by child, that is two users in one queue, not noise.
        assert 0 <= row.rps_rel_stderr < 0.05, row.cell_id
        # Exact, not Locust's rounding: latencies are not all multiples of 10 ms.
        assert any(v % 10 for v in latencies)


def test_the_windows_last_requests_are_answered_before_locust_stops(sleep_run: RunDir):
    """Locust's stop work used to delay the answer to each user's last request of the window by
    30-70 ms: the requests of its last 0.2 s took as long as the median here, on the model
    whose users hold their own slots."""
    results = sleep_run.results()
    for row in results[results["server"] == "tornado-coroutine"].itertuples():
        samples = sleep_run.samples([row.cell_id])
        window = samples[samples["start_time"].between(row.window_start, row.window_end,
                                                       inclusive="left")]  # fmt: skip
        last = window[window["start_time"] >= row.window_end - 0.2]["latency_ms"]
        assert len(last) and last.max() < window["latency_ms"].median() + 20, (
            row.cell_id, window["latency_ms"].median(), sorted(last))


def test_every_answer_names_the_process_that_served_it(sleep_run: RunDir):
    """``Server-Timing`` carries the serving pid: a forked server's users each stayed with one
    child (kept-alive connections), and the cell says how many landed on each."""
    results, samples = sleep_run.results(), sleep_run.samples()
    assert (samples["server_pid"] > 0).all()
    for row in results.itertuples():
        pids = samples.loc[samples["cell_id"] == row.cell_id, "server_pid"].unique()
        assert len(pids) <= (row.workers if REGISTRY[row.server].multi_process else 1)
        if row.server == "tornado-forked":
            assert sum(map(int, row.process_users.split())) == row.users, row.cell_id
        if row.server == "tornado-coroutine":
            assert row.process_users == str(row.users)


def test_saturated_load_generator_is_marked_invalid(tmp_path):
    # hello on 8 forked workers can use both cores, so Locust and the server fight for CPU.
    # (hello on tornado-coroutine is not such a cell: its one process is the bottleneck there.)
    # At 100 users on 4 workers the machine sat at 90-93 %, on the rule's edge; at 300 on 8 it
    # is 97-99 %.
    settings = RunSettings(
        scenarios=("hello",), servers=("tornado-forked",), users=(300,), duration_s=3,
        warmup_s=1, repeat=1, workers=8, reports_dir=str(tmp_path), seed=1, new=True,
    )  # fmt: skip
    run = run_matrix(settings)
    row = run.results().iloc[0]
    assert not row["valid"] and row["status"] == "invalid"
    # Locust pegs its core, or (on 2 cores, with the server on the other) the whole machine.
    assert "load generator saturated" in row["reason"] or "machine CPU saturated" in row["reason"]
    assert row["cpu_locust"] > 90 or row["cpu_machine"] > 90


def test_rerun_replaces_only_its_cells(tmp_path):
    base = RunSettings(
        scenarios=("sleep",), servers=MODELS, users=(1,), duration_s=1, warmup_s=0.5,
        repeat=1, reports_dir=str(tmp_path), seed=3,
    )  # fmt: skip
    first = run_matrix(base)
    before = first.results().set_index("cell_id")
    second = run_matrix(RunSettings(**{**base.__dict__, "servers": ("tornado-coroutine",)}))
    assert second.path == first.path
    after = second.results().set_index("cell_id")
    assert set(after.index) == set(before.index)
    changed = after["started_at"] != before["started_at"]
    assert set(after.index[changed]) == {"sleep.tornado-coroutine.u1.r1"}
    assert isinstance(second.samples(), pd.DataFrame)


def test_the_bottleneck_is_named_from_measured_demands(sleep_run: RunDir, tmp_path):
    """A 2-worker blocking model on sleep is slot-bound; the coroutine model on sleep is paced by
    its users' round trips (at 24 users a CI run served 228 of 240 req/s, just 5 % short: the
    round-trip rule says where the time went); on hello (no I/O) it is bound by its one
    process's CPU."""
    results = sleep_run.results().set_index("cell_id")
    assert results.loc["sleep.flask-blocking.u24.r1", "bottleneck"] == "slots: workers = 2"
    coroutine = results.loc["sleep.tornado-coroutine.u24.r1", "bottleneck"]
    assert coroutine.startswith(("offered load", "outside the handler", "inside the handler")), \
        coroutine  # fmt: skip
    settings = RunSettings(
        scenarios=("hello",), servers=("tornado-coroutine",), users=(32,), duration_s=3,
        warmup_s=1, repeat=1, reports_dir=str(tmp_path), seed=2, new=True,
    )  # fmt: skip
    hello = run_matrix(settings).results().iloc[0]
    assert hello["bottleneck"].startswith("server CPU: one process"), (
        hello["bottleneck"], hello["cpu_server"], hello["cpu_locust_max"])
    assert hello["cpu_ms_server"] > 0 and hello["handler_p50_ms"] < hello["p50_ms"]


ADAPTIVE = """description = "sleep with an adaptive window"
endpoint = "/sleep"
delay_ms = 100
users = [1, 64]
warmup_s = 1
measure_min_s = 1
measure_s = 8
servers = ["tornado-coroutine"]
"""


def test_an_adaptive_window_ends_once_precise_and_says_why(tmp_path):
    """64 users on the coroutine model complete 300 requests and a 1 % error within a second or
    two; one user (10 req/s) cannot reach 300 requests before the 8 s cap. Nothing starts after
    a window, so no sample is taken past it but the window's own last answers."""
    path = tmp_path / "adaptive.toml"
    path.write_text(ADAPTIVE)
    settings = RunSettings(scenarios=(str(path),), repeat=1, reports_dir=str(tmp_path / "r"),
                           seed=3, new=True)  # fmt: skip
    run = run_matrix(settings)
    rows = run.results().set_index("users")
    many, one = rows.loc[64], rows.loc[1]
    assert many["window_reason"].startswith("precise: standard error"), many["window_reason"]
    assert many["window_end"] - many["window_start"] < 6
    assert one["window_reason"].startswith("cap:") and "the p99 wants 300" in one["window_reason"]
    assert one["window_end"] - one["window_start"] == pytest.approx(8, abs=0.05)
    for row in rows.itertuples():
        samples = run.samples([row.cell_id])
        assert samples["start_time"].max() < row.window_end + 0.5  # at most one round trip on


def test_the_ceiling_warning_counts_polls_not_socket_frames():
    """1,000 long-poll members at 2 messages/s poll about 2,000 times a second, Locust's ceiling
    here; 1,000 socket members receive 2,000 frames on connections they hold (measured: Locust
    at 16-21 % of a core), so only the long-poll room is warned about."""
    from asyncbench.measuring.run import RunHooks, _warn_about_ceiling
    from asyncbench.planning.scenario_files import resolve_scenarios
    from asyncbench.planning.settings import RunPlan

    said = []

    class Hooks(RunHooks):
        def warn(self, message: str) -> None:
            said.append(message)

    rooms = {s.name: s.profile("default")
             for s in resolve_scenarios(["room-longpoll", "room-websocket"])}  # fmt: skip
    _warn_about_ceiling(RunPlan(RunSettings(), rooms, [], 1), Hooks())
    polls = [m for m in said if "polls/s" in m]
    assert len(polls) == 1 and polls[0].startswith("room-longpoll: 1000 members")


def test_the_eta_counts_an_adaptive_window_halfway_between_its_floor_and_cap():
    """A default run announced its 127 planned cells as "about 14 min" (every window at its cap)
    and measured them in 11.6; its 2-3 s windows averaged 2.61 s."""
    adaptive = Scenario("sleep", "", "/sleep", 100, (8,), warmup_s=1.0, measure_s=3.0,
                        servers=(), measure_min_s=2.0)  # fmt: skip
    fixed = replace(adaptive, measure_min_s=None)
    assert _expected_s(adaptive) == pytest.approx(CELL_OVERHEAD_S + 1.0 + 2.5)
    assert _expected_s(fixed) == pytest.approx(CELL_OVERHEAD_S + 1.0 + 3.0)

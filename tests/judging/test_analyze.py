"""Analysis on a real (trimmed) run: every statistic checked against an independent computation.

The fixture in ``tests/fixtures/small-run`` is a real ``asyncbench run`` (see its run.json for
the command). The reference numbers here are computed straight from the parquet files with
plain Python (sorted lists, ``statistics``), not with the code under test.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pandas as pd
import pytest

from asyncbench.judging import analyze, bottleneck, curves, evaluate
from asyncbench.storing.store import RunDir

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "small-run"
PERCENTILES = {"p50_ms": 50, "p90_ms": 90, "p99_ms": 99}


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), by hand."""
    rank = q / 100 * (len(sorted_values) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


def reference_cell(results_row: dict) -> dict | None:
    """A cell's rps and percentiles from its own parquet file, windowed with plain Python."""
    path = FIXTURE / "samples.parquet" / f"{results_row['cell_id']}.parquet"
    if not path.exists():
        return None
    start, end = results_row["window_start"], results_row["window_end"]
    records = pd.read_parquet(path).to_dict("records")
    latencies = sorted(r["latency_ms"] for r in records if start <= r["start_time"] < end)
    out = {"requests": len(latencies), "rps": len(latencies) / (end - start)}
    out.update({k: percentile(latencies, q) for k, q in PERCENTILES.items()})
    return out


@pytest.fixture(scope="module")
def run() -> RunDir:
    return RunDir(FIXTURE)  # the constructor reads only; RunDir.open would add a logs folder


@pytest.fixture(scope="module")
def results(run) -> pd.DataFrame:
    return run.results()


@pytest.fixture(scope="module")
def cells(run, results) -> pd.DataFrame:
    return analyze.cell_table(results, run.samples(), run.resources())


@pytest.fixture(scope="module")
def agg(cells) -> pd.DataFrame:
    return analyze.aggregate(cells)


def level_key(row) -> tuple:
    return (row["scenario"], row["server"], int(row["users"]))


def test_fixture_is_a_real_run_with_excluded_cells(results):
    assert {"sleep", "hello"} <= set(results["scenario"])
    assert results["window_start"].notna().any()
    assert (~analyze.included(results)).any(), "the fixture should keep an invalid cell"
    assert analyze.included(results).sum() >= 10


def test_cell_stats_agrees_with_a_direct_computation(run, results):
    samples = run.samples()
    checked = 0
    for row in results.to_dict("records"):
        expected = reference_cell(row)
        if expected is None:
            continue
        own = samples[samples["cell_id"] == row["cell_id"]]
        got = evaluate.cell_stats(own, row["window_start"], row["window_end"])
        assert got.requests == expected["requests"]
        assert got.rps == pytest.approx(expected["rps"])
        for column in PERCENTILES:
            assert getattr(got, column) == pytest.approx(expected[column], rel=1e-9)
            # and the number stored at run time is the same computation
            assert row[column] == pytest.approx(expected[column], rel=1e-9)
        checked += 1
    assert checked == len(results)


def test_warm_up_samples_do_not_count(run, results):
    row = results[analyze.included(results)].iloc[0]
    own = run.samples([row["cell_id"]])
    start, end = row["window_start"], row["window_end"]
    warmup = own[own["start_time"] < start]
    assert len(warmup) > 0, "the fixture's cells have a warm-up"
    base = evaluate.cell_stats(own, start, end)
    assert base.requests == ((own["start_time"] >= start) & (own["start_time"] < end)).sum()
    assert base.requests < len(own)

    def with_sample(start_time: float) -> evaluate.CellStats:
        extra = own.iloc[[0]].assign(start_time=start_time, latency_ms=1e7)
        return evaluate.cell_stats(pd.concat([own, extra]), start, end)

    assert with_sample(start - 1e-6) == base  # just before the window: ignored
    assert with_sample(end) == base  # the window is half-open
    assert with_sample(start).requests == base.requests + 1  # its first instant counts
    assert with_sample(start).max_ms == 1e7


def test_aggregate_matches_independent_computation(cells, agg):
    reference: dict[tuple, list[dict]] = {}
    for row in cells[cells["included"]].to_dict("records"):
        reference.setdefault(level_key(row), []).append(reference_cell(row))
    assert reference
    by_level = {level_key(r): r for r in agg.to_dict("records")}
    for key, repeats in reference.items():
        got = by_level[key]
        assert got["repeats"] == len(repeats)
        for metric in ("rps", *PERCENTILES):
            values = [r[metric] for r in repeats]
            assert got[f"{metric}_median"] == pytest.approx(statistics.median(values))
            assert got[f"{metric}_min"] == pytest.approx(min(values))
            assert got[f"{metric}_max"] == pytest.approx(max(values))
            if len(values) > 1:
                cov = statistics.stdev(values) / statistics.mean(values)
                assert got[f"{metric}_cov"] == pytest.approx(cov, abs=1e-12)
            else:
                assert math.isnan(got[f"{metric}_cov"])


def test_ratio_to_best_and_gap_to_prediction(agg):
    measured = agg[agg["rps_median"].notna()]
    for (_scenario, _users), level in measured.groupby(["scenario", "users"]):
        best = max(level["rps_median"])
        lowest_p99 = min(level["p99_ms_median"])
        for row in level.to_dict("records"):
            assert row["rps_ratio"] == pytest.approx(row["rps_median"] / best)
            assert row["p99_ratio"] == pytest.approx(row["p99_ms_median"] / lowest_p99)
            assert row["best"] == (row["rps_median"] == best)
            if row["predicted_rps"] is not None and not pd.isna(row["predicted_rps"]):
                gap = row["rps_median"] / row["predicted_rps"] - 1
                assert row["rps_gap"] == pytest.approx(gap)
    # at least one best per level (count-based rps can tie exactly)
    assert measured.groupby(["scenario", "users"])["best"].any().all()


def test_excluded_cells_stay_out_of_the_aggregates(cells, agg):
    excluded = cells[~cells["included"]]
    for row in excluded.to_dict("records"):
        level = agg[
            (agg["scenario"] == row["scenario"]) & (agg["server"] == row["server"])
            & (agg["users"] == row["users"])
        ].iloc[0]  # fmt: skip
        kept = cells[
            cells["included"] & (cells["scenario"] == row["scenario"])
            & (cells["server"] == row["server"]) & (cells["users"] == row["users"])
        ]  # fmt: skip
        assert level["cells"] > level["repeats"] == len(kept)
        assert row["reason"] in level["reasons"]
        if len(kept):
            assert level["rps_median"] == pytest.approx(kept["rps"].median())
        else:
            assert math.isnan(level["rps_median"])


def test_rejudging_applies_todays_rules_to_an_old_run(results, cells):
    """The fixture predates the machine-saturation rule: re-judged, the cells recorded while
    the machine was saturated turn invalid with that reason, and nothing else changes."""
    was_valid = results["valid"].astype(bool).to_numpy()
    now_valid = cells["valid"].astype(bool).to_numpy()
    assert not (now_valid & ~was_valid).any()
    changed = cells[was_valid & ~now_valid]
    assert len(changed) >= 1
    assert changed["reason"].str.startswith("machine CPU saturated").all()
    assert (changed["cpu_machine"] > evaluate.MACHINE_CPU_LIMIT).all()
    kept = cells[was_valid & now_valid]
    assert (kept["cpu_machine"] <= evaluate.MACHINE_CPU_LIMIT).all()


def test_a_stored_verdict_is_rejudged_from_the_raw_facts(run, results):
    """An edited results.csv cannot make a cell valid or invalid: the raw facts decide."""
    target = results[analyze.included(results) & (results["scenario"] == "sleep")].iloc[0]
    edited = results.copy()
    where = edited["cell_id"] == target["cell_id"]
    edited["valid"] = edited["valid"].where(~where, False)
    edited["status"] = edited["status"].where(~where, "invalid")
    cells = analyze.cell_table(edited, run.samples(), run.resources())
    assert cells.loc[cells["cell_id"] == target["cell_id"], "status"].item() == "ok"


def _saturated_locust(resources: pd.DataFrame, cell_id: str) -> pd.DataFrame:
    busy = resources.copy()
    busy.loc[busy["cell_id"] == cell_id, "cpu_locust"] = 99.0
    return busy


def test_marking_a_cell_invalid_or_failed_removes_it(run, results):
    target = results[analyze.included(results) & (results["scenario"] == "sleep")].iloc[0]
    key = (target["scenario"], target["server"], target["users"])
    for status in ("invalid", "failed"):
        changed, resources = results.copy(), run.resources()
        where = changed["cell_id"] == target["cell_id"]
        if status == "invalid":  # the raw facts say so: Locust was saturated
            resources = _saturated_locust(resources, target["cell_id"])
        else:  # a failed cell has nothing to re-judge
            changed["valid"] = changed["valid"].where(~where, False)
            changed["status"] = changed["status"].where(~where, status)
            changed["reason"] = changed["reason"].astype(object).where(~where, "made up")
        agg = analyze.aggregate(analyze.cell_table(changed, run.samples(), resources))
        level = agg.set_index(["scenario", "server", "users"]).loc[key]
        others = results[
            analyze.included(results) & (results["cell_id"] != target["cell_id"])
            & (results["scenario"] == key[0]) & (results["server"] == key[1])
            & (results["users"] == key[2])
        ]  # fmt: skip
        assert level["repeats"] == len(others)
        assert level[status] == 1
        expected = "load generator saturated" if status == "invalid" else "made up"
        assert expected in level["reasons"]
        assert level["rps_max"] == pytest.approx(others["rps"].max())


def test_blocking_models_plateau_at_their_workers(run, agg):
    servers = run.read_meta().servers
    found = curves.plateaus(agg, "sleep")
    for model, conf in servers.items():
        if conf["concurrency"] == "workers":
            assert model in found, f"{model} should stop growing on sleep"
            p = found[model]
            assert p["slots"] == conf["workers"]
            assert p["after"] >= conf["workers"] or p["before"] > conf["workers"]
            assert p["in_service"] == pytest.approx(conf["workers"], rel=0.25)
        else:
            assert model not in found, f"{model} has no slot limit on sleep"


def test_comparison_level_and_cdf(cells, agg, run):
    samples = run.samples()
    for scenario in agg["scenario"].unique():
        level = analyze.comparison_level(agg, scenario)
        valid = cells[(cells["scenario"] == scenario) & cells["included"]]
        models_per_level = valid.groupby("users")["server"].nunique()
        assert level == max(models_per_level[models_per_level == models_per_level.max()].index)
        for server in valid[valid["users"] == level]["server"].unique():
            latencies = analyze.level_latencies(cells, samples, scenario, server, level)
            chosen = valid[(valid["users"] == level) & (valid["server"] == server)]
            assert len(latencies) == chosen["requests"].sum()
            x, y = analyze.cdf_points(latencies)
            assert x == sorted(x) and y == sorted(y)
            assert (x[0], x[-1]) == (latencies.min(), latencies.max())
            assert (y[0], y[-1]) == (0.0, 1.0)


def test_compare_runs_against_itself_is_no_change(agg):
    compared = analyze.compare_runs(agg, agg)
    measured = compared[compared["rps_median"].notna()]
    assert (measured["rps_change"] == 0).all()
    assert (measured["p99_change"] == 0).all()


def _longwait_cell(users: int, handler_ms: float, rps: float) -> dict:
    from dataclasses import asdict

    from asyncbench.storing.records import CellResult

    cell = CellResult(
        cell_id=f"longwait.tornado-threadpool.u{users}.r1", scenario="longwait",
        server="tornado-threadpool", users=users, repeat=1, status="ok", valid=True, reason="",
        endpoint="/sleep", delay_ms=1000, workers=1, slots=64.0,
        predicted_rps=min(users, 64) / 1.0, warmup_s=2, measure_s=4, rps=rps,
        mean_ms=users / rps * 1000, handler_p50_ms=handler_ms,
    )  # fmt: skip
    return asdict(cell)


def test_a_queued_pool_wait_inside_the_handler_does_not_count_as_holding_a_slot():
    """tornado-threadpool waits for a pool thread inside its handler: at 256 users on 64 threads
    its Server-Timing says 4 s, yet each thread is held 1 s. The second prediction holds a slot
    for the handler time at the lowest load, not the queue (it said 16 req/s for 64 measured)."""
    rows = [_longwait_cell(16, 1002.0, 15.9), _longwait_cell(256, 4001.0, 63.7)]
    explained = analyze.explain(pd.DataFrame(rows)).set_index("users")["explained_rps"]
    assert explained[256] == pytest.approx(64 / 1.002, rel=1e-3)
    assert explained[16] == pytest.approx(16 / (16 / 15.9), rel=1e-3)  # its own round trip


def test_no_second_prediction_where_even_the_lowest_level_queues_for_slots():
    """The default profile runs longwait at 512 users only: on tornado-threadpool's 64 threads
    the handler time (8 s) and the round trip are the queue's, and the second prediction read
    64 threads / 8 s = 8 req/s for 64 measured (+699 %). With no level free of the queue there
    is nothing to explain from; the textbook prediction and the named limit stand."""
    rows = [_longwait_cell(512, 8001.0, 63.98)]
    explained = analyze.explain(pd.DataFrame(rows)).iloc[0]
    assert pd.isna(explained["explained_rps"]) and pd.isna(explained["explained_gap"])
    rows.append(_longwait_cell(16, 1002.0, 15.9))  # a level in its slots: explained again
    explained = analyze.explain(pd.DataFrame(rows)).set_index("users")["explained_rps"]
    assert explained[512] == pytest.approx(64 / 1.002, rel=1e-3)


def test_a_slot_is_held_for_the_mean_handler_time_not_the_median():
    """Throughput is slots over the mean hold: a handler time with a slow tail (p50 100.9 ms,
    mean 102.7 ms) bounds four slots at 4 / 102.7 ms, where the median would say 39.6 req/s."""
    rows = [_longwait_cell(1, 100.9, 0.97), _longwait_cell(256, 4001.0, 38.8)]
    for row in rows:
        row.update(slots=4.0, handler_mean_ms=row["handler_p50_ms"])
    rows[0]["handler_mean_ms"] = 102.7
    explained = analyze.explain(pd.DataFrame(rows)).set_index("users")["explained_rps"]
    assert explained[256] == pytest.approx(4 / 0.1027, rel=1e-6)
    stale = [{**row, "handler_mean_ms": None} for row in rows]  # before schema 7: the median
    explained = analyze.explain(pd.DataFrame(stale)).set_index("users")["explained_rps"]
    assert explained[256] == pytest.approx(4 / 0.1009, rel=1e-6)


def test_storing_a_cell_explains_its_own_model_only_and_the_same_as_the_whole_table(results):
    whole = analyze.explain(results)
    stale = results.assign(explained_rps=-1.0, explained_gap=-1.0)
    one = analyze.explain_model(stale, "sleep", "tornado-coroutine")
    mine = (results["scenario"].eq("sleep") & results["server"].eq("tornado-coroutine")).to_numpy()
    assert mine.any() and (~mine).any()
    assert one.loc[mine, "explained_rps"].fillna(-2).tolist() == pytest.approx(
        whole.loc[mine, "explained_rps"].fillna(-2).tolist())  # fmt: skip
    assert one["explained_rps"].notna()[mine].any()
    assert (one.loc[~mine, "explained_rps"] == -1.0).all()  # other models untouched


def _split_cell(users: int, rps: float, mean_ms: float, handler_mean_ms: float, slots=None):
    from dataclasses import asdict

    from asyncbench.storing.records import CellResult

    cell = CellResult(
        cell_id=f"sleep.tornado-coroutine.u{users}.r1", scenario="sleep",
        server="tornado-coroutine", users=users, repeat=1, status="ok", valid=True, reason="",
        endpoint="/sleep", delay_ms=100, workers=1, slots=slots,
        predicted_rps=users / 0.1, warmup_s=1, measure_s=3, rps=rps, mean_ms=mean_ms,
        handler_mean_ms=handler_mean_ms,
    )  # fmt: skip
    return asdict(cell)


def test_the_second_prediction_reads_the_handler_time_at_load_and_the_outside_at_the_lowest():
    """The lowest level: 102.6 ms round trips, 101.0 ms in the handler (1.6 ms outside). At 64
    users the handler takes 104.0 ms: the bound is 64 / (104.0 + 1.6) ms. Users queued for
    slots are not bounded this way (a handler that waits for its thread reports the queue)."""
    rows = [_split_cell(1, 9.74, 102.6, 101.0), _split_cell(64, 601.0, 106.5, 104.0)]
    explained = analyze.explain(pd.DataFrame(rows)).set_index("users")
    assert explained.loc[64, "explained_rps"] == pytest.approx(64 / 0.1056, rel=1e-6)
    assert explained.loc[1, "explained_rps"] == pytest.approx(1 / 0.1026, rel=1e-6)
    queued = [_split_cell(1, 9.74, 102.6, 101.0, slots=4.0),
              _split_cell(64, 39.0, 1640.0, 1500.0, slots=4.0)]  # fmt: skip
    found = analyze.explain(pd.DataFrame(queued)).set_index("users").loc[64, "explained_rps"]
    assert found == pytest.approx(4 / 0.1010, rel=1e-6)  # the slots, held for the lowest H


def test_the_split_bound_adds_the_waits_for_cpu_the_cells_trains_met():
    """Measured (sleep on tornado-coroutine, 64 users): 589.5 req/s where the handler time and
    the lowest level's time outside allowed 617.6; its requests waited 1.54 ms for the loop's
    CPU and 0.78 ms for Locust's, in the order they came, and with them the bound is 604."""
    rows = [_split_cell(1, 9.74, 102.6, 101.0), _split_cell(64, 589.5, 107.5, 102.0)]
    rows[1].update(queue_server_ms=1.54, queue_client_ms=0.78)
    explained = analyze.explain(pd.DataFrame(rows)).set_index("users")
    assert explained.loc[64, "explained_rps"] == pytest.approx(64 / 0.10592, rel=1e-6)


def test_a_worker_holds_its_slot_for_the_handler_and_its_own_cpu():
    """A sync worker accepts, parses, writes and closes too, one request at a time: measured
    (sql on flask-blocking, 64 users on 4 workers), 38.08 req/s, a mean handler time of
    102.9 ms and 1.5 ms of worker CPU per request: 4 / 104.4 ms = 38.3, where the handler
    time alone said 39.6 (−3.9 %)."""
    rows = [_split_cell(1, 9.65, 103.5, 101.0, slots=4.0),
            _split_cell(64, 38.08, 1686.0, 102.9, slots=4.0)]  # fmt: skip
    for row in rows:
        row.update(server="flask-blocking", workers=4)
    rows[1]["cpu_ms_server"] = 1.5
    explained = analyze.explain(pd.DataFrame(rows)).set_index("users").loc[64, "explained_rps"]
    assert explained == pytest.approx(4 / 0.1044, rel=1e-6)


def test_the_busiest_process_may_hold_one_request_beyond_its_part_by_counting_alone():
    """16 users on 4 forked processes, "36 35 35 34" requests started in the window: an even
    split whose busiest count is one over, not a process at 25.7 % holding the others back. Its
    bound is the even one; "40 34 33 33" (a busiest process at 28.6 %, 27.9 % less the one) is
    bounded by that process."""
    rows = [_split_cell(1, 9.74, 102.6, 101.0, slots=16.0),
            _split_cell(16, 153.0, 104.0, 101.0, slots=16.0)]  # fmt: skip
    for row in rows:
        row.update(server="tornado-forked", workers=4)
    rows[1].update(process_requests="36 35 35 34", busiest_process_share=36 / 140)
    explained = analyze.explain(pd.DataFrame(rows)).set_index("users").loc[16, "explained_rps"]
    assert explained == pytest.approx(16 / 0.1026, rel=1e-6)  # the round trip binds, not 0.257
    rows[1].update(process_requests="40 34 33 33", busiest_process_share=40 / 140)
    explained = analyze.explain(pd.DataFrame(rows)).set_index("users").loc[16, "explained_rps"]
    assert explained == pytest.approx(4 / (0.101 * 39 / 140), rel=1e-6)


def test_users_pinned_to_forked_children_are_bounded_child_by_child():
    """4 users that landed 3-1 on tornado-forked's children (``process_users``): the second
    prediction is one closed loop per child, 1 / hold + 1 / R1, not the busiest share's."""
    rows = [_split_cell(1, 9.73, 102.76, 100.4, slots=4.0),
            _split_cell(4, 19.49, 205.0, 100.45, slots=4.0)]  # fmt: skip
    for row in rows:
        row.update(server="tornado-forked", workers=4, cpu_ms_server=1.55)
    rows[1].update(process_users="3 1", process_requests="31 31 0 0", busiest_process_share=0.5)
    explained = analyze.explain(pd.DataFrame(rows)).set_index("users").loc[4, "explained_rps"]
    assert explained == pytest.approx(1 / 0.102 + 1 / 0.10276, rel=1e-6)


def test_the_named_limit_is_named_again_once_the_prediction_explains_the_cell():
    """Measured (issue 28): sleep on tornado-forked at 40 users, the users 22/17/1 on its
    children and one with none, 30 req/s. At the cell the rule saw no idle slots' reason and
    said "unexplained"; with the split the explaining prediction gives about 30 and the limit
    reads the split."""
    rows = [_split_cell(1, 9.73, 102.76, 100.4, slots=4.0),
            _split_cell(40, 30.0, 1330.0, 100.6, slots=4.0)]  # fmt: skip
    for row in rows:
        row.update(server="tornado-forked", workers=4, bottleneck="unexplained: stale")
    rows[1].update(process_users="22 17 1", process_requests="100 100 100",
                   busiest_process_share=1 / 3)  # fmt: skip
    explained = analyze.explain(pd.DataFrame(rows)).set_index("users").loc[40]
    assert abs(explained["explained_gap"]) <= bottleneck.EXPLAINED_WITHIN
    assert explained["bottleneck"].startswith("unbalanced workers: users per worker 22/17/1/0")

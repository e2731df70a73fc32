"""Open-loop load: corrected latency exposes the queue that a closed loop hides."""

from __future__ import annotations

import numpy as np
import pytest

from asyncbench.judging.analyze import aggregate, cell_table, corrected_latency_ms, in_window
from asyncbench.judging.curves import knees
from asyncbench.measuring.run import RunSettings, run_matrix
from asyncbench.reporting.report import report_data

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def open_loop_run(tmp_path_factory):
    """sleep 100 ms on flask-blocking with 2 workers (capacity 20 req/s), offered 10 and 40."""
    settings = RunSettings(
        scenarios=("sleep",), servers=("flask-blocking",), rates=(10.0, 40.0), duration_s=6,
        warmup_s=1, repeat=1, workers=2, reports_dir=str(tmp_path_factory.mktemp("r")),
        seed=5, new=True,
    )  # fmt: skip
    run = run_matrix(settings)
    return run.results().set_index("rate"), run.samples(), run


def thirds(samples, row, latency) -> tuple[float, float]:
    """Median latency of the first and the last third of the window's sends, by intended time.

    (Past capacity the senders fall seconds behind, so the last sends are due well before the
    window ends: split by count, not by time.)
    """
    window = in_window(samples[samples["cell_id"] == row.cell_id], row.window_start, row.window_end)
    values = latency(window.sort_values("intended_time")).to_numpy()
    third = len(values) // 3
    return float(np.median(values[:third])), float(np.median(values[-third:]))


def test_below_capacity_both_latencies_stay_near_the_delay(open_loop_run):
    results, _, _ = open_loop_run
    row = results.loc[10.0]
    assert row["valid"], row["reason"]
    assert row["rps"] == pytest.approx(10, rel=0.1)
    for column in ("p50_ms", "p50_uncorrected_ms"):
        assert 100 <= row[column] < 150
    assert row["late_sends"] == 0 and row["dropped_sends"] == 0


def test_above_capacity_corrected_latency_grows_while_uncorrected_stays_bounded(open_loop_run):
    results, samples, _ = open_loop_run
    row = results.loc[40.0]
    assert row["offered_rps"] == 40
    assert row["rps"] == pytest.approx(20, rel=0.15)  # the 2 workers' capacity, not the offer
    assert row["late_sends"] > 0  # the senders ran dry: what a closed loop would hide
    first, last = thirds(samples, row, corrected_latency_ms)
    assert last > first + 1000, (first, last)  # the real queue keeps growing
    raw_first, raw_last = thirds(samples, row, lambda w: w["latency_ms"])
    bound = row["users"] / 2 * 100  # every sender waiting behind 2 workers
    assert raw_last < 1.3 * bound and raw_last < 1.5 * raw_first + 200, (raw_first, raw_last)
    assert row["p99_ms"] > 2 * row["p99_uncorrected_ms"]


def test_knee_is_found_and_reported(open_loop_run):
    _, samples, run = open_loop_run
    agg = aggregate(cell_table(run.results(), samples))
    knee = knees(agg, "sleep")["flask-blocking"]
    assert knee == {"kept_up_to": 10.0, "fell_behind_at": 40.0, "capacity_rps": 20.0}
    verdict = report_data(run)["verdicts"][0]
    assert verdict["name"] == "sleep (open loop)"
    assert "flask-blocking between 10 and 40 req/s (predicted capacity 20" in verdict["text"]

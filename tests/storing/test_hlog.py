"""HdrHistogram logs: a level's latencies round-trip through the HdrHistogram reader."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asyncbench.storing.hlog import (
    HIGHEST_US,
    CellLatencies,
    level_filename,
    merged,
    read_hlog,
    write_level_hlog,
)

W0 = 1_700_000_000.25


def cell(rng, window_start, n=3000, label=""):
    """Requests from 1 s before to 1 s after a 3 s window, lognormal latencies around 100 ms."""
    start = np.sort(rng.uniform(window_start - 1, window_start + 4, n))
    latency = rng.lognormal(math.log(100), 0.4, n)
    return CellLatencies(start, latency, window_start, window_start + 3, label)


def in_window(c: CellLatencies) -> np.ndarray:
    return c.latency_ms[(c.start_time >= c.window_start) & (c.start_time < c.window_end)]


def nearest_rank(values: np.ndarray, q: float) -> float:
    """HdrHistogram's (Python) percentile definition: the value at rank round(q/100 · n)."""
    ordered = np.sort(values)
    rank = max(1, int(q / 100 * len(ordered) + 0.5))
    return float(ordered[rank - 1])


def test_a_level_round_trips_through_the_reader(tmp_path):
    rng = np.random.default_rng(7)
    # Given out of time order, as a shuffled run measures repeats.
    cells = [cell(rng, W0 + 40, label="r2"), cell(rng, W0, label="r1")]
    path = write_level_hlog(tmp_path / "sleep.flask-blocking.u4.hlog", cells, comment="sleep")
    intervals = read_hlog(path)
    assert [round(i.start - W0, 6) for i in intervals] == [0, 1, 2, 40, 41, 42]
    assert all(i.end - i.start == pytest.approx(1.0, abs=1e-5) for i in intervals)
    expected = np.concatenate([in_window(c) for c in sorted(cells, key=lambda c: c.window_start)])
    assert sum(i.histogram.get_total_count() for i in intervals) == len(expected)
    level = merged(intervals)
    for q in (50, 90, 99, 99.9, 100):
        raw = nearest_rank(expected, q)
        # 3 significant digits: within 1/1024 of the value (plus the microsecond rounding).
        assert level.get_value_at_percentile(q) / 1000 == pytest.approx(raw, rel=1 / 1024, abs=1e-3)


def test_each_interval_holds_the_requests_that_started_in_it(tmp_path):
    rng = np.random.default_rng(8)
    c = cell(rng, W0)
    intervals = read_hlog(write_level_hlog(tmp_path / "x.hlog", [c], interval_s=0.5))
    assert len(intervals) == 6
    for interval in intervals:
        started = (c.start_time >= interval.start - 1e-6) & (c.start_time < interval.end - 1e-6)
        assert interval.histogram.get_total_count() == np.count_nonzero(started)


def test_a_window_not_a_multiple_of_the_interval_ends_with_a_short_interval(tmp_path):
    c = CellLatencies(np.array([W0 + 0.1, W0 + 2.4]), np.array([5.0, 7.0]), W0, W0 + 2.5)
    intervals = read_hlog(write_level_hlog(tmp_path / "x.hlog", [c]))
    assert [round(i.end - i.start, 6) for i in intervals] == [1.0, 1.0, 0.5]
    assert [i.histogram.get_total_count() for i in intervals] == [1, 0, 1]


def test_unrecordable_values_are_dropped_or_capped(tmp_path):
    start = np.full(4, W0 + 0.5)
    latency = np.array([math.nan, 12.5, 5e9, 0.0])  # no answer, normal, beyond an hour, instant
    c = CellLatencies(start, latency, W0, W0 + 1)
    (interval,) = read_hlog(write_level_hlog(tmp_path / "x.hlog", [c]))
    histogram = interval.histogram
    assert histogram.get_total_count() == 3
    assert histogram.values_are_equivalent(histogram.get_max_value(), HIGHEST_US)
    assert histogram.get_min_value() == 0


def test_the_log_is_the_standard_text_format(tmp_path):
    rng = np.random.default_rng(9)
    text = write_level_hlog(tmp_path / "x.hlog", [cell(rng, W0, n=50)]).read_text()
    lines = text.splitlines()
    assert lines[0] == "#[Histogram log format version 1.2]"
    assert any(line.startswith(f"#[StartTime: {W0:f} (seconds since epoch), ") for line in lines)
    assert (
        '"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"' in lines
    )
    first = next(line for line in lines if line[0].isdigit())
    stamp, length, _max_ms, payload = first.split(",")
    assert float(stamp) == pytest.approx(W0) and float(length) == pytest.approx(1.0)
    assert payload.startswith("HIST")


def test_level_filenames_follow_cell_ids():
    assert level_filename("sleep", "flask-blocking", 64) == "sleep.flask-blocking.u64.hlog"
    assert level_filename("fetch", "tornado-coroutine", 0, 200.0) == (
        "fetch.tornado-coroutine.rate200.hlog"
    )


def test_bad_interval_is_refused(tmp_path):
    with pytest.raises(ValueError, match="interval_s"):
        write_level_hlog(tmp_path / "x.hlog", [], interval_s=0)

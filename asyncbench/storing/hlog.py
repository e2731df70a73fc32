"""HdrHistogram interval logs (``.hlog``): one per level, so any HdrHistogram tool can read latency.

A level's log holds, for each of its cells (repeats) in time order, one interval histogram per
``interval_s`` of the measured window, stamped with absolute epoch seconds. A request belongs to
the interval in which it *started* (the rule that puts it in the window at all), so the log holds
exactly the requests the percentiles are computed from. Values are latencies in **microseconds**
(HdrHistogram records integers; 1 µs is far below Locust's timing resolution), tracked from 1 µs
to one hour with 3 significant digits: every recorded value is within 0.1 % of the raw one.
The ``Interval_Max`` column is in milliseconds. Written with the ``hdrhistogram`` package's
``HistogramLogWriter`` (log format 1.2), read back with its ``HistogramLogReader``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader, HistogramLogWriter

LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # one hour; longer latencies are recorded as one hour
SIGNIFICANT_DIGITS = 3
MAX_COLUMN_UNIT_RATIO = 1000.0  # µs ÷ 1000: the log's Interval_Max column in milliseconds


@dataclass(frozen=True)
class CellLatencies:
    """One cell's raw requests for the log: start times (epoch s), latencies (ms), its window."""

    start_time: np.ndarray
    latency_ms: np.ndarray
    window_start: float
    window_end: float
    label: str = ""  # written as a comment before the cell's intervals, e.g. its cell id


@dataclass(frozen=True)
class HlogInterval:
    """One interval histogram read back from a log."""

    start: float  # epoch seconds
    end: float
    histogram: HdrHistogram


def new_histogram() -> HdrHistogram:
    """An empty histogram with the range and precision every asyncbench log uses."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def level_filename(scenario: str, server: str, users: int, rate: float = 0.0) -> str:
    """The log's file name for one level, in the style of cell ids: ``sleep.flask-blocking.u64``
    (closed loop) or ``sleep.flask-blocking.rate200`` (open loop), plus ``.hlog``."""
    load = f"rate{rate:g}" if rate > 0 else f"u{users}"
    return f"{scenario}.{server}.{load}.hlog"


def write_level_hlog(
    path: Path, cells: Sequence[CellLatencies], *, interval_s: float = 1.0, comment: str = ""
) -> Path:
    """Write one level's log: every cell's window in ``interval_s`` intervals, in time order."""
    if not interval_s > 0:
        raise ValueError(f"interval_s must be positive, got {interval_s}")
    ordered = sorted(cells, key=lambda cell: cell.window_start)
    path = Path(path)
    with path.open("w", encoding="utf-8") as out:
        writer = HistogramLogWriter(out)
        writer.output_log_format_version()
        if comment:
            writer.output_comment(comment)
        writer.output_comment("values: latency in microseconds; Interval_Max in milliseconds")
        if ordered:
            # The package's output_start_time is broken (it calls a missing isoformat method),
            # so the StartTime line is written as the comment it is, in the same format.
            start = ordered[0].window_start
            when = datetime.fromtimestamp(start, UTC).isoformat(" ")
            writer.output_comment(f"[StartTime: {start:f} (seconds since epoch), {when}]")
        writer.output_base_time(0)
        writer.output_legend()
        for cell in ordered:
            _write_cell(writer, cell, interval_s)
    return path


def _write_cell(writer: HistogramLogWriter, cell: CellLatencies, interval_s: float) -> None:
    if cell.label:
        writer.output_comment(f"cell {cell.label}: window {cell.window_start:f} to "
                              f"{cell.window_end:f}")  # fmt: skip
    start = np.asarray(cell.start_time, dtype=float)
    latency_us = np.rint(np.asarray(cell.latency_ms, dtype=float) * 1000)
    keep = (start >= cell.window_start) & (start < cell.window_end) & np.isfinite(latency_us)
    keep &= latency_us >= 0
    start, latency_us = start[keep], np.minimum(latency_us[keep], HIGHEST_US).astype(np.int64)
    slot = np.floor((start - cell.window_start) / interval_s).astype(np.int64)
    intervals = max(1, math.ceil((cell.window_end - cell.window_start) / interval_s - 1e-9))
    for k in range(intervals):
        begin = cell.window_start + k * interval_s
        end = min(begin + interval_s, cell.window_end)
        histogram = _histogram_of(latency_us[slot == k])
        writer.output_interval_histogram(histogram, begin, end, MAX_COLUMN_UNIT_RATIO)


def _histogram_of(values_us: np.ndarray) -> HdrHistogram:
    histogram = new_histogram()
    for value, count in zip(*np.unique(values_us, return_counts=True), strict=True):
        histogram.record_value(int(value), int(count))
    return histogram


def read_hlog(path: Path) -> list[HlogInterval]:
    """Every interval of a log, with absolute start and end times (HdrHistogram's reader)."""
    reader = HistogramLogReader(str(path), new_histogram())
    try:
        intervals = []
        while (histogram := reader.get_next_interval_histogram()) is not None:
            start = histogram.get_start_time_stamp() / 1000
            end = histogram.get_end_time_stamp() / 1000
            intervals.append(HlogInterval(start, end, histogram))
        return intervals
    finally:
        reader.close()


def merged(intervals: Sequence[HlogInterval]) -> HdrHistogram:
    """All intervals added into one histogram (e.g. a level's whole latency distribution)."""
    total = new_histogram()
    for interval in intervals:
        total.add(interval.histogram)
    return total

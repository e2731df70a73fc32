"""The one judgement of a cell, table-driven on synthetic facts (no processes)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from asyncbench.judging.evaluate import (
    CellStats,
    cell_stats,
    evaluate_cell,
    judge,
    process_users,
    train_waits,
)
from asyncbench.judging.resources import ResourceUsage, resource_usage, window_rows

OK = CellStats(requests=100, failures=0, rps=33.3)


@pytest.mark.parametrize(
    ("stats", "usage", "abandoned", "reason"),
    [
        (OK, ResourceUsage(cpu_locust=50, cpu_machine=60), 0, ""),
        (OK, ResourceUsage(cpu_locust=120, cpu_locust_max=95), 0, "load generator saturated"),
        (OK, ResourceUsage(cpu_locust=120, cpu_locust_max=60), 0, ""),  # judged per process
        (OK, ResourceUsage(cpu_locust=95), 0, "load generator saturated"),  # no per-process
        (OK, ResourceUsage(cpu_machine=97), 0, "machine CPU saturated"),
        (OK, ResourceUsage(cpu_upstream=93), 0, "upstream saturated"),
        (OK, ResourceUsage(), 3, "3 requests were still unanswered"),
        (CellStats(requests=100, failures=2, rps=33.3), ResourceUsage(), 0, "failures 2.0%"),
        (CellStats(requests=100, failures=1, rps=33.3), ResourceUsage(), 0, ""),
        (CellStats(), ResourceUsage(), 0, "no request completed"),
        (CellStats(rps=0.0, dropped_sends=40), ResourceUsage(), 0, "far past capacity"),
        (CellStats(requests=100, rps=50, offered_rps=50, late_sends=5), ResourceUsage(), 0,
         "load generator missed the schedule"),
        # the server fell behind: late sends are its doing, not the senders'
        (CellStats(requests=100, rps=30, offered_rps=50, late_sends=50), ResourceUsage(), 0, ""),
        (OK, ResourceUsage(cpu_locust=math.nan, cpu_locust_max=math.nan), 0, ""),
    ],
)  # fmt: skip
def test_judge(stats, usage, abandoned, reason):
    verdict = judge(stats, usage, abandoned)
    assert verdict.valid == (reason == "")
    assert verdict.status == ("ok" if reason == "" else "invalid")
    assert reason in verdict.reason


def test_every_reason_is_kept():
    verdict = judge(CellStats(requests=10, failures=5, rps=1),
                    ResourceUsage(cpu_locust=99, cpu_machine=99), 1)  # fmt: skip
    assert verdict.reason.count("; ") == 3


def samples(starts, latency_ms=100.0, intended=None) -> pd.DataFrame:
    n = len(starts)
    return pd.DataFrame({
        "start_time": np.asarray(starts, dtype=float), "latency_ms": np.full(n, latency_ms),
        "status": np.full(n, 200), "bytes": np.full(n, 30), "error": [None] * n,
        "intended_time": np.full(n, np.nan) if intended is None else np.asarray(intended),
    })  # fmt: skip


def test_closed_loop_counts_starts_in_the_half_open_window():
    stats = cell_stats(samples([0.9, 1.0, 1.5, 2.0, 3.0, 3.1]), 1.0, 3.0)
    assert stats.requests == 3 and stats.rps == 1.5
    assert stats.p50_ms == 100.0 and stats.offered_rps is None


def test_open_loop_latency_is_corrected_from_the_intended_time():
    intended = [1.0, 1.1, 1.2, 1.3]
    stats = cell_stats(samples([1.0, 1.3, 1.5, 1.7], 100.0, intended), 1.0, 2.0, rate=4.0)
    assert stats.p50_uncorrected_ms == 100.0
    assert stats.max_ms == pytest.approx(500.0)  # sent 0.4 s late, answered in 0.1 s
    assert stats.late_sends == 3 and stats.dropped_sends == 0


def test_resource_usage_means_over_the_window_only():
    frame = pd.DataFrame({
        "t": [0.5, 1.5, 2.5, 3.4, 9.0], "cpu_server": [100, 10, 20, 30, 100],
        "cpu_machine": [1, 2, 3, 4, 5], "rss_server_mb": [1, 2, 2, 2, 9],
    })  # fmt: skip
    usage = resource_usage(frame, 1.0, 3.0)
    assert usage.cpu_server == 20.0 and usage.rss_server_mb == 2.0
    assert usage.cpu_locust is None


def test_a_sample_counts_when_half_its_interval_lies_in_the_window():
    # Sampled every 0.5 s from an idle sample at 0.0; the window starts 0.3 s in (a short
    # warm-up): the sample at 0.5 describes mostly start-up, the one at 3.5 half the window.
    frame = pd.DataFrame({
        "t": [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0],
        "phase": ["idle"] + [None] * 8,
        "cpu_server": [None, 5, 40, 40, 40, 40, 40, 40, 5],
        "cpu_locust": [None, None, 20, 20, 20, 20, 20, 20, 2],  # new at 0.5: unknown
    })  # fmt: skip
    assert window_rows(frame, 0.3, 3.3)["t"].tolist() == [1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    usage = resource_usage(frame, 0.3, 3.3)
    assert usage.cpu_server == 40.0 and usage.cpu_locust == 20.0


def test_stored_usage_stands_in_for_lost_resource_samples():
    stored = ResourceUsage(cpu_machine=99.0)
    evaluation = evaluate_cell(samples([1.0, 1.5]), pd.DataFrame(), 1.0, 2.0,
                               stored_usage=stored)  # fmt: skip
    assert not evaluation.judgement.valid
    columns = evaluation.columns()
    assert columns["status"] == "invalid" and columns["cpu_machine"] == 99.0


def closed_loop_schedule(users: int, cycle_s: float, span_s: float, user_ids: bool = True):
    """Each user sends its next request as soon as the last answered: a regular schedule whose
    phases differ per user, so a count of starts is off by the phases."""
    rows = []
    for user in range(users):
        t = user * cycle_s / users / 3
        while t < span_s:
            rows.append({"start_time": t, "latency_ms": cycle_s * 1000, "status": 200,
                         "error": None, "user": user if user_ids else -1})  # fmt: skip
            t += cycle_s
    return pd.DataFrame(rows)


def test_throughput_is_the_cycle_estimator_with_the_count_beside_it():
    samples = closed_loop_schedule(users=4, cycle_s=0.3, span_s=6.0)
    stats = cell_stats(samples, 1.05, 4.2)  # 10.5 cycles per user: the count is off by phase
    assert stats.rps == pytest.approx(4 / 0.3, rel=1e-9)  # exact for a regular schedule
    assert stats.rps_count == pytest.approx(stats.requests / 3.15)
    assert stats.rps_count != pytest.approx(stats.rps, rel=1e-2)
    assert stats.rps_method == "closed-loop cycles"
    assert stats.rps_rel_stderr == pytest.approx(0, abs=1e-9)  # no cycle varies
    assert stats.rps_stderr == pytest.approx(stats.rps * stats.rps_rel_stderr)


def test_samples_without_user_ids_fall_back_to_the_count_and_say_so():
    samples = closed_loop_schedule(users=4, cycle_s=0.3, span_s=6.0, user_ids=False)
    stats = cell_stats(samples, 1.05, 4.05)
    assert stats.rps == stats.rps_count == stats.requests / 3.0
    assert stats.rps_rel_stderr == pytest.approx(1 / math.sqrt(stats.requests))
    assert "no user ids" in stats.rps_method


@pytest.mark.parametrize(
    ("homes", "expected"),
    [({0: [7], 1: [7], 2: [8], 3: [9], 4: [7]}, "3 1 1"),
     ({0: [7, 7], 1: [8]}, "1 1"),
     ({0: [7, 8], 1: [8]}, ""),  # a user moved: its connection did not stay
     ({0: [7], 1: [-1]}, "")],  # a process not known
)  # fmt: skip
def test_process_users_says_how_users_landed_on_the_processes(homes, expected):
    samples = pd.DataFrame([{"user": u, "server_pid": pid} for u, pids in homes.items()
                            for pid in pids])  # fmt: skip
    assert process_users(samples) == expected


def test_users_pinned_to_processes_are_read_process_by_process_when_the_caller_says_so():
    samples = closed_loop_schedule(users=4, cycle_s=0.3, span_s=6.0)
    samples["server_pid"] = samples["user"].map({0: 7, 1: 7, 2: 8, 3: 9})
    stats = cell_stats(samples, 1.05, 4.2, process_slots=1)
    assert stats.rps_method.startswith("closed-loop per process (3: ")
    assert stats.process_users == "2 1 1"
    assert cell_stats(samples, 1.05, 4.2).rps_method == "closed-loop cycles"


def test_train_waits_queue_each_process_apart_and_need_the_cpu():
    """Two server processes, each receiving two requests at once, at 1 ms of CPU each: each
    second request waits 1 ms (0.5 on average); one process receiving all four would make
    the last wait 3 ms. Locust answers them spread out: no wait there."""
    samples = pd.DataFrame({"start_time": [1.0, 1.0, 1.0, 1.0], "latency_ms": [10, 20, 30, 40],
                            "server_pid": [7, 7, 8, 8], "worker": "w", "status": 200,
                            "error": None, "user": [0, 1, 2, 3]})  # fmt: skip
    stats, usage = CellStats(rps=100.0), ResourceUsage(cpu_server=10.0, cpu_locust=10.0)
    waits = train_waits(samples, 0.0, 2.0, stats, usage)  # 1 ms per request at 100 req/s
    assert waits.queue_server_ms == pytest.approx(0.5)
    assert waits.queue_client_ms == pytest.approx(0.0)
    one = train_waits(samples.assign(server_pid=-1), 0.0, 2.0, stats, usage)
    assert one.queue_server_ms == pytest.approx((0 + 1 + 2 + 3) / 4)
    unknown = train_waits(samples, 0.0, 2.0, stats, ResourceUsage())
    assert unknown.queue_server_ms is None and unknown.queue_client_ms is None
    # the same four requests from two users: each queue holds at most the other user's
    two_users = train_waits(samples.assign(server_pid=-1, user=[0, 1, 0, 1]), 0.0, 2.0, stats,
                            usage)  # fmt: skip
    assert two_users.queue_server_ms == pytest.approx((0 + 1 + 1 + 1) / 4)

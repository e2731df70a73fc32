"""The bottleneck rules on synthetic service demands (no processes)."""

from __future__ import annotations

import math
import os

import pytest

from asyncbench.judging.bottleneck import (
    columns,
    demands,
    name_bottleneck,
    name_room_limit,
    slot_use,
)

CORES = os.cpu_count() or 1


def cell(**facts) -> dict:
    base = {"server": "flask-blocking", "workers": 4, "users": 64, "slots": 4.0,
            "delay_ms": 100, "rps": 39.0, "cpu_server": 10.0, "cpu_locust": 20.0,
            "cpu_locust_max": 20.0, "cpu_machine": 30.0, "slot_limit": "workers = 4"}  # fmt: skip
    return {**base, **facts}


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        ({}, "slots: workers = 4"),
        ({"users": 4, "rps": 39.0}, "offered load (4 users, 100 ms each)"),
        ({"cpu_locust_max": 95.0}, "load generator"),
        # measured in CI: hello on tornado-coroutine, 32 users; the server the busier of the two
        ({"server": "tornado-coroutine", "slots": math.nan, "delay_ms": 0, "users": 32,
          "cpu_server": 89.45, "cpu_locust_max": 86.05, "cpu_machine": 88.0},
         "server CPU: one process at 89% of its one core"),
        ({"server": "tornado-coroutine", "slots": math.nan, "delay_ms": 0, "users": 32,
          "cpu_server": 84.0, "cpu_locust_max": 92.0}, "load generator"),
        ({"cpu_machine": 97.0}, "machine CPU"),
        ({"cpu_upstream": 91.0}, "upstream CPU"),
        ({"server": "tornado-coroutine", "slots": math.nan, "delay_ms": 0, "rps": 3000,
          "cpu_server": 97.0}, "server CPU: one process"),
        ({"server": "tornado-coroutine", "slots": math.nan, "users": 64, "rps": 600,
          "cpu_server": 40.0}, "offered load (64 users"),
        ({"rps": 20.0, "busiest_process_share": 0.7, "predicted_rps": 40.0},
         "unbalanced workers: 20 of 40 req/s, the busiest worker served 70%"),
        # measured here: 4 users on tornado-forked, all on one child; its "lag" is its handler
        ({"server": "tornado-forked", "users": 4, "predicted_rps": 40.0, "rps": 9.9,
          "busiest_process_share": 1.0, "loop_lag_max_ms": 384.0},
         "unbalanced workers: 10 of 40 req/s, the busiest worker served 100%"),
        # measured here: 1-user sql on flask-blocking, a cold worker's first request in the
        # window; one user uses one worker at a time, whichever it reaches
        ({"users": 1, "predicted_rps": 10.0, "rps": 9.5, "busiest_process_share": 0.41},
         "offered load (1 users, 100 ms each)"),
        ({"server": "tornado-forked", "users": 4, "predicted_rps": 40.0, "rps": 30.0,
          "busiest_process_share": 0.3, "loop_lag_max_ms": 384.0}, "offered load (4 users"),
        # one process serves everything: its 100 % is no imbalance (measured: fetch, 64 users)
        ({"server": "tornado-coroutine", "slots": math.nan, "users": 64, "predicted_rps": 640.0,
          "rps": 526.0, "cpu_server": 40.0, "busiest_process_share": 1.0, "workers": 4},
         "offered load (64 users"),
        ({"rps": 20.0}, "unexplained: 20 of the 40 req/s"),
        # explained within 3 %: never "unexplained", the prediction's reason instead
        ({"rps": 20.0, "explained_rps": 20.3, "explained_gap": -0.015},
         "overheads: 20 of the 40 req/s its slots allow, as its measured overheads predict (20)"),
        ({"rps": 20.0, "explained_rps": 20.3, "explained_gap": -0.015, "handler_mean_ms": 198.0},
         "slots held longer: 198 ms a request for a 100 ms wait, 20 of the 40 req/s"),
        ({"rps": 20.0, "explained_rps": 26.0, "explained_gap": -0.23},
         "unexplained: 20 of the 40 req/s"),
        # measured (issue 28): sleep on tornado-forked, 40 users on 4 one-slot children, 22/17/1
        # and one child with none; the explaining prediction gave 29.5
        ({"server": "tornado-forked", "users": 40, "rps": 30.0, "predicted_rps": 40.0,
          "process_users": "22 17 1", "busiest_process_share": 0.34, "explained_rps": 29.5,
          "explained_gap": 0.017},
         "unbalanced workers: users per worker 22/17/1/0 left 1 of 4 slots idle, 30 of 40 req/s"),
        # measured: flask-threaded, 2 workers × 4 threads, 32 users split 29/3 (over 85 % of the
        # slots' 80 req/s, so "slots" came first)
        ({"server": "flask-threaded", "workers": 2, "threads": 4, "slots": 8.0, "users": 32,
          "rps": 68.6, "predicted_rps": 80.0, "process_users": "29 3",
          "slot_limit": "workers × threads = 2 × 4"},
         "unbalanced workers: users per worker 29/3 left 1 of 8 slots idle, 69 of 80 req/s"),
        # measured: longwait on flask-threaded, 512 users on 4 × 64 threads split 248/200/39/25
        ({"server": "flask-threaded", "threads": 64, "slots": 256.0, "users": 512,
          "delay_ms": 1000, "rps": 192.0, "predicted_rps": 256.0,
          "process_users": "248 200 39 25", "explained_rps": 192.0, "explained_gap": 0.0},
         "unbalanced workers: users per worker 248/200/39/25 left 64 of 256 slots idle, "
         "192 of 256 req/s"),
        # every worker full, or users that fit: the split cost nothing
        ({"server": "flask-threaded", "threads": 4, "slots": 16.0, "users": 32, "rps": 158.0,
          "predicted_rps": 160.0, "process_users": "9 8 8 7"}, "slots: workers = 4"),
        # measured here (sleep and fetch on tornado-coroutine, 64 users): where the round trip grew
        ({"server": "tornado-coroutine", "slots": math.nan, "users": 64, "predicted_rps": 640.0,
          "rps": 584.0, "cpu_server": 25.0, "mean_ms": 108.4, "handler_mean_ms": 102.1},
         "outside the handler: 6.3 of each 108 ms round trip (client, transport, the loop around "
         "the handler), 584 of 640 req/s"),
        # measured (sleep on tornado-coroutine, 64 users): the trains' waits for CPU named
        ({"server": "tornado-coroutine", "slots": math.nan, "users": 64, "predicted_rps": 640.0,
          "rps": 589.5, "cpu_server": 25.2, "mean_ms": 107.5, "handler_mean_ms": 102.0,
          "queue_server_ms": 1.54, "queue_client_ms": 0.78},
         "outside the handler: 5.5 of each 108 ms round trip (1.5 of it waiting for the "
         "server's CPU and 0.8 for Locust's behind requests that came together; client, "
         "transport, the loop around the handler), 590 of 640 req/s"),
        ({"server": "tornado-coroutine", "slots": math.nan, "users": 64, "predicted_rps": 640.0,
          "rps": 534.0, "cpu_server": 40.0, "mean_ms": 117.3, "handler_mean_ms": 112.4},
         "inside the handler: 112 ms for a 100 ms wait, 534 of 640 req/s"),
        ({"server": "tornado-coroutine", "slots": math.nan, "users": 64, "predicted_rps": 640.0,
          "rps": 620.0, "cpu_server": 25.0, "mean_ms": 103.1, "handler_mean_ms": 101.4},
         "offered load (64 users"),  # kept up: no round trip to blame
        ({"rps": 20.0, "mean_ms": 3200.0, "handler_mean_ms": 100.0},
         "unexplained: 20 of the 40 req/s"),  # queued for slots: outside is the queue
        # measured here: sql on tornado-threadpool, 64 users on 64 threads
        ({"server": "tornado-threadpool", "slots": 64.0, "users": 64, "threads": 64,
          "predicted_rps": 640.0, "rps": 541.0, "cpu_server": 62.0, "loop_lag_max_ms": 81.6},
         "event loop (the GIL, with 64 threads): up to 82 ms late, 541 of 640 req/s"),
        # a driver that never yields: a gevent hub as late as the wait, the cell short
        ({"server": "flask-gevent", "slots": 8192.0, "users": 64, "workers": 4,
          "predicted_rps": 640.0, "rps": 40.0, "cpu_server": 12.0, "loop_lag_max_ms": 100.4},
         "gevent hub (one per process): up to 100 ms late, 40 of 640 req/s"),
        ({"server": "fastapi-uvicorn", "slots": math.nan, "delay_ms": 0, "users": 32,
          "cpu_server": 89.0, "cpu_locust_max": 70.0, "cpu_machine": 88.0},
         "server CPU: one process at 89% of its one core (a one-process event loop: uvicorn"),
        # a late loop in a cell that kept up (a pause), or a short one in a cell that did not
        ({"server": "tornado-coroutine", "slots": math.nan, "users": 64, "predicted_rps": 640.0,
          "rps": 620.0, "cpu_server": 30.0, "loop_lag_max_ms": 80.0}, "offered load (64 users"),
        ({"server": "tornado-coroutine", "slots": math.nan, "users": 64, "predicted_rps": 640.0,
          "rps": 580.0, "cpu_server": 30.0, "loop_lag_max_ms": 17.0}, "offered load (64 users"),
        ({"server": "tornado-forked", "cpu_server": 0.9 * 100 * min(4, CORES)}, "server CPU ("),
        # no I/O, nobody saturated alone (measured in CI: server 85 %, Locust 79 %)
        ({"server": "tornado-coroutine", "slots": math.nan, "delay_ms": 0, "users": 32,
          "cpu_server": 84.7, "cpu_locust_max": 78.9, "cpu_machine": 82.0},
         "server CPU: one process at 85% of its one core, Locust at 79%"),
        ({"server": "tornado-coroutine", "slots": math.nan, "delay_ms": 0, "users": 32,
          "cpu_server": 60.0, "cpu_locust_max": 80.0}, "load generator (busiest Locust"),
    ],
)  # fmt: skip
def test_rules(facts, expected):
    assert name_bottleneck(cell(**facts)).startswith(expected)


def test_service_demands_are_cpu_ms_per_request():
    found = demands(cell(rps=50.0, cpu_server=25.0, cpu_locust=10.0))
    assert found.server == pytest.approx(5.0)  # 0.25 core-s per s / 50 req/s = 5 ms
    assert found.locust == pytest.approx(2.0) and found.upstream is None
    assert columns(cell())["cpu_ms_server"] == pytest.approx(10 / 100 / 39 * 1000)
    assert demands(cell(rps=0)).server is None


@pytest.mark.parametrize(
    ("server", "users", "slots", "expected"),
    [
        ("tornado-coroutine", 64, None, "own"),  # unlimited
        ("tornado-coroutine", 64, math.nan, "own"),
        ("flask-threaded", 64, 256.0, "own"),  # 64 threads in every worker
        ("flask-threaded", 128, 256.0, "unknown"),  # could all land on one worker
        ("flask-threaded", 1024, 256.0, "queued"),
        # tornado-forked keeps a connection on the child that accepted it: 4 users on 4
        # children often share two of them
        ("tornado-forked", 4, 4.0, "unknown"),
        ("tornado-forked", 1, 4.0, "own"),
        ("tornado-forked", 16, 4.0, "queued"),
        ("flask-blocking", 4, 4.0, "own"),  # a new connection per request
        ("flask-blocking", 16, 4.0, "queued"),
    ],
)
def test_what_is_sure_of_how_users_use_the_slots(server, users, slots, expected):
    assert slot_use(server, users, slots, 4) == expected


def room_cell(**facts) -> dict:
    """A stored room row: 100 members on flask-blocking's 4 workers, nothing saturated."""
    base = {"server": "flask-blocking", "workers": 4, "users": 100, "slots": 4.0,
            "slot_limit": "workers = 4", "message_rate": 2.0, "transport": "long-poll",
            "cpu_server": 15.0, "cpu_locust_max": 12.0, "cpu_machine": 18.0}  # fmt: skip
    return {**base, **facts}


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        ({}, "slots: workers = 4 (100 members)"),
        # a run stored before rooms recorded what binds their slots
        ({"slot_limit": float("nan")}, "slots: 4 members at once (100 members)"),
        ({"users": 4}, "offered load (4 members, 2 messages/s)"),
        # measured in a default run: 1,000 long-poll members on one asyncio loop, p99 1.6 s
        ({"server": "tornado-coroutine", "workers": 4, "users": 1000, "slots": math.nan,
          "cpu_server": 98.9, "cpu_machine": 76.2, "cpu_locust_max": 41.0},
         "server CPU: one process at 99% of its one core (a one-process event loop: "),
        # flask-threaded's 4 × 64 threads held 256 of 1,000 sockets
        ({"server": "flask-threaded", "users": 1000, "slots": 256.0,
          "slot_limit": "workers × threads = 4 × 64", "transport": "websocket"},
         "slots: workers × threads = 4 × 64 (1,000 members)"),
        ({"server": "tornado-forked", "users": 1000, "slots": math.nan,
          "transport": "websocket"}, "offered load (1,000 members, 2 messages/s)"),
        ({"cpu_locust_max": 95.0}, "load generator"),
        ({"cpu_machine": 97.0}, "machine CPU (97% of all cores)"),
    ],
)
def test_a_room_names_its_limit_as_a_request_cell_would_then_by_its_members(facts, expected):
    assert name_room_limit(room_cell(**facts)).startswith(expected)

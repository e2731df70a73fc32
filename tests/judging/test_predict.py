"""The textbook queueing prediction, table-driven."""

from __future__ import annotations

import math

import pytest

from asyncbench.judging.predict import explained_rps, predicted_rps, train_wait_ms


@pytest.mark.parametrize(
    ("users", "slots", "delay_ms", "rate", "expected"),
    [
        (1, 4, 100, 0, 10.0),
        (64, 4, 100, 0, 40.0),  # slot-bound
        (64, math.inf, 100, 0, 640.0),  # user-bound
        (16, 16, 1000, 0, 16.0),
        (0, 4, 100, 80.0, 40.0),  # open loop beyond capacity: capacity
        (0, 4, 100, 20.0, 20.0),  # open loop within capacity: the offered rate
        (8, None, 0, 0, None),  # hello: nothing to predict
        (8, None, 0, 50.0, 50.0),
    ],
)
def test_predicted_rps(users, slots, delay_ms, rate, expected):
    assert predicted_rps(users, slots, delay_ms, rate) == expected


@pytest.mark.parametrize(
    ("users", "base", "slots", "handler", "cpu", "cores", "expected"),
    [
        (1, 103.0, 4, 103.0, {}, {}, 1000 / 103),  # one user: its own round trip
        (64, 103.0, 4, 102.0, {}, {}, 4000 / 102),  # slots held for the handler time
        (64, 102.0, math.inf, 101.0, {}, {}, 64000 / 102),  # no slot limit: the users
        (64, 1.0, None, None, {"server": 2.0}, {"server": 1.0}, 500.0),  # one core, 2 ms each
        (64, 1.0, None, None, {"server": 0.6, "locust": 0.4}, {"server": 1, "locust": 1,
                                                              "machine": 1.0}, 1000.0),
        (8, None, None, None, {}, {}, None),
    ],
)  # fmt: skip
def test_explained_rps_is_the_tightest_bound(users, base, slots, handler, cpu, cores, expected):
    found = explained_rps(users, base, slots, handler, cpu, cores)
    assert found == (pytest.approx(expected) if expected else None)


def test_the_busiest_worker_bounds_a_multi_process_model():
    """4 workers, 100 ms each, but the busiest served a third of the requests (one idle):
    it saturates at 10 req/s, so the model at 30, not 40."""
    found = explained_rps(4, 102.0, 4, 100.0, {}, {}, busiest_share=1 / 3, processes=4)
    assert found == pytest.approx(30.0)
    assert explained_rps(4, 102.0, 4, 100.0, {}, {}, busiest_share=0.25, processes=4) == \
        pytest.approx(4 / 0.102)  # balanced: the round trip binds  # fmt: skip


def test_users_that_stay_with_their_process_make_one_closed_loop_each():
    """Measured (sleep on tornado-forked, 4 users on 4 one-slot children): they landed 3-1,
    19.49 req/s. The child with three serves one request per hold (102.0 ms: the handler and
    its CPU), the other one per round trip (R1, 102.76 ms): 19.53 req/s, where the busiest
    share (half the requests) said 19.6 and 4 / R1 said 38.9."""
    found = explained_rps(4, 102.76, 4, 102.0, {}, {}, busiest_share=0.5, processes=4,
                          process_users=(3, 1))  # fmt: skip
    assert found == pytest.approx(1 / 0.102 + 1 / 0.10276)
    spread = explained_rps(4, 102.76, 4, 102.0, {}, {}, processes=4, process_users=(1, 1, 1, 1))
    assert spread == pytest.approx(4 / 0.10276)  # one user each: their round trips bind
    threads = explained_rps(64, 103.0, 256, 103.2, {}, {}, processes=4,
                            process_users=(40, 10, 8, 6))  # fmt: skip
    assert threads == pytest.approx(64 / 0.103)  # 64 threads each: no process is full


def test_a_longer_handler_at_load_lowers_the_round_trip_bound():
    """64 users; 102 ms round trips at the lowest load, 1.6 ms of it outside the handler. At 64
    users the handler took 104.4 ms (a late loop): each user completes one request per
    104.4 + 1.6 ms, not per 102 ms."""
    found = explained_rps(64, 102.0, None, None, {}, {}, split_ms=(104.4, 1.6))
    assert found == pytest.approx(64 / 0.106)
    # A handler no slower than at the lowest load: the lowest level's round trip still binds.
    assert explained_rps(64, 102.0, None, None, {}, {}, split_ms=(100.0, 1.6)) == \
        pytest.approx(64 / 0.102)  # fmt: skip
    # An unknown part leaves the bound out.
    assert explained_rps(64, 102.0, None, None, {}, {}, split_ms=(104.4, float("nan"))) == \
        pytest.approx(64 / 0.102)  # fmt: skip


@pytest.mark.parametrize(
    ("arrivals", "demand_ms", "expected_ms"),
    [
        ([0.0, 0.002, 0.004, 0.006], 1.0, 0.0),  # spaced wider than the CPU each needs
        ([0.0] * 8, 0.5, 0.5 * 7 / 2),  # a train of 8: each waits for those before it
        ([0.0, 0.0, 0.010, 0.010], 1.0, 0.5),  # two trains of two, cleared in between
        ([0.0, 0.0005, 0.001], 1.0, (0.5 + 1.0) / 3),  # a queue that keeps building
        ([0.010, 0.0, 0.0], 1.0, 0.5 / 1.5),  # in any order: they queue as they arrived
        ([0.0], 1.0, 0.0), ([], 1.0, 0.0), ([0.0, 0.0], 0.0, 0.0),
    ],
)  # fmt: skip
def test_train_wait_is_the_queue_the_measured_arrivals_make(arrivals, demand_ms, expected_ms):
    assert train_wait_ms(arrivals, demand_ms) == pytest.approx(expected_ms)


def test_a_closed_loop_request_waits_behind_at_most_the_other_users():
    """Arrivals faster than the server's demand make Lindley's recursion grow without end; 4
    users on hello near a saturated core "waited" 2.0 ms in 0.75 ms round trips. A closed loop
    of 4 users never has more than 3 requests ahead of any."""
    arrivals = [i * 0.0001 for i in range(1000)]  # every 0.1 ms, at 0.2 ms of CPU each
    uncapped = train_wait_ms(arrivals, 0.2)
    capped = train_wait_ms(arrivals, 0.2, most_ahead=3)
    assert uncapped > 10 * 3 * 0.2  # the runaway the cap stops
    assert 0 < capped <= 3 * 0.2 + 1e-9
    assert train_wait_ms(arrivals, 0.2, most_ahead=0) == 0.0  # one user waits for nobody
    spaced = [i * 0.001 for i in range(100)]  # no queue at all: the cap changes nothing
    assert train_wait_ms(spaced, 0.2, most_ahead=3) == train_wait_ms(spaced, 0.2) == 0.0

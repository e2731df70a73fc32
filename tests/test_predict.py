"""The textbook queueing prediction, table-driven."""

from __future__ import annotations

import math

import pytest

from asyncbench.predict import predicted_rps


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

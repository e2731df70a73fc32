"""How each workload warms a cell up (no processes)."""

from __future__ import annotations

from types import SimpleNamespace

from asyncbench.measuring.workloads import UNSETTLED_LIMIT_FACTOR, WORKLOADS
from asyncbench.planning import kinds

REQUEST_RESPONSE = WORKLOADS[kinds.REQUEST_RESPONSE]
ROOM = WORKLOADS[kinds.ROOM]


def test_users_that_fit_in_the_slots_may_warm_up_longer_while_unsettled():
    scenario = SimpleNamespace(warmup_s=1.0)
    fits = REQUEST_RESPONSE.warmup_limit_s(scenario, users=64, slots=64.0)
    assert fits == UNSETTLED_LIMIT_FACTOR * 1.0 > 1.0
    assert REQUEST_RESPONSE.warmup_limit_s(scenario, users=64, slots=None) == fits  # a loop
    assert REQUEST_RESPONSE.warmup_limit_s(scenario, users=64, slots=4.0) == 1.0  # queued


def test_closed_loop_users_settle_after_two_requests_an_open_loop_and_a_room_differently():
    assert REQUEST_RESPONSE.settle_cycles(SimpleNamespace(rate=0.0)) == 2
    assert REQUEST_RESPONSE.settle_cycles(SimpleNamespace(rate=100.0)) == 0
    room = SimpleNamespace(warmup_s=3.0)
    assert ROOM.settle_cycles(SimpleNamespace(rate=0.0)) == 1
    assert ROOM.warmup_limit_s(room, users=3000, slots=None) == 3.0

"""How each workload warms a cell up (no processes)."""

from __future__ import annotations

from types import SimpleNamespace

from asyncbench.measuring.workloads import UNSETTLED_LIMIT_FACTOR, WORKLOADS
from asyncbench.planning import kinds
from servers import MODELS
from servers.config import ServerConfig

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


def test_each_workload_names_what_binds_its_slots_as_the_cell_records_it():
    config = ServerConfig(workers=4, threads=64)
    sql, hello = (SimpleNamespace(kind=kinds.KINDS[name]) for name in ("sql", "hello"))
    assert REQUEST_RESPONSE.slot_limit(sql, MODELS["flask-threaded"], config, 151) == (
        "max_connections = 151")  # the smallest cap: MariaDB's, under its 256 threads
    assert REQUEST_RESPONSE.slot_limit(hello, MODELS["flask-blocking"], config, None) == ""
    poll = SimpleNamespace(transport="long-poll")
    socket = SimpleNamespace(transport="websocket")
    assert ROOM.slot_limit(poll, MODELS["tornado-forked"], config, None) == "workers = 4"
    # a forked Tornado child blocks on a poll, but relays its sockets on its own loop
    assert ROOM.slot_limit(socket, MODELS["tornado-forked"], config, None).startswith(
        "one event loop")
    assert ROOM.slot_limit(socket, MODELS["flask-threaded"], config, None) == (
        "workers × threads = 4 × 64")

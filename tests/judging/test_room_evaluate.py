"""A room cell's numbers and judgement from synthetic raw facts (no processes)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from asyncbench.judging.predict import room_prediction
from asyncbench.judging.room import evaluate_room
from asyncbench.planning.transports import TRANSPORTS

START, END = 100.0, 110.0
PUBLISHED = pd.DataFrame({"message": [1, 2, 3, 4], "sent": [99.0, 101.0, 105.0, 111.0]})


def deliveries(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["member", "message", "sent", "received"])


def every(members=3, latency=0.010, skip=()) -> list[tuple]:
    """Each member receives messages 1..4, in order, ``latency`` after their send."""
    return [(m, i, s, s + latency * (m + 1))
            for i, s in zip(PUBLISHED["message"], PUBLISHED["sent"], strict=True)
            for m in range(members) if (m, i) not in skip]  # fmt: skip


def samples(probe_latency_ms=(5.0, 7.0), failed_polls=0) -> pd.DataFrame:
    probes = [{"start_time": START + k, "latency_ms": ms, "status": 200, "error": None,
               "intended_time": START + k, "endpoint": "/hello"}
              for k, ms in enumerate(probe_latency_ms)]  # fmt: skip
    polls = [{"start_time": START, "latency_ms": 1.0, "status": 0, "error": "refused",
              "intended_time": np.nan, "endpoint": "/room/poll"}] * failed_polls  # fmt: skip
    return pd.DataFrame(probes + polls)


RESOURCES = pd.DataFrame({
    "t": [99.0, 101.0, 105.0, 109.0], "phase": ["idle", None, None, None],
    "room_held": [None, 3, 3, 2], "rss_server_mb": [30.0, 30.6, 30.6, 30.6],
    "cpu_server": [np.nan, 5, 5, 5], "cpu_locust": [np.nan, 10, 10, 10],
})  # fmt: skip


def test_a_healthy_room_is_valid_with_exact_numbers():
    stats, usage, verdict = evaluate_room(samples(), deliveries(every()), PUBLISHED, RESOURCES,
                                          START, END, members=3)  # fmt: skip
    assert verdict.valid, verdict.reason
    assert (stats.messages, stats.delivered, stats.lost, stats.duplicates) == (2, 6, 0, 0)
    assert stats.delivery_max_ms == pytest.approx(30.0)  # member 2, 3 × 10 ms
    assert stats.last_member_p50_ms == pytest.approx(30.0)
    assert stats.members_held_max == 3 and stats.members_held == pytest.approx(8 / 3)
    assert stats.mem_per_member_kb == pytest.approx(0.6 * 1024 / 3)  # per member connected
    assert stats.probe_p50_ms == pytest.approx(6.0)


def test_memory_per_member_divides_by_the_members_connected_not_those_held():
    """tornado-threadpool at 1,000 members held 34 polls: its RSS growth over the 34 said
    22,797 KB a member. Every member holds a connection (a queued one too), so the growth is
    shared by all of them; the members held stay a column of their own."""
    resources = RESOURCES.assign(room_held=[None, 1, 1, 1])
    stats, usage, _ = evaluate_room(samples(), deliveries(every()), PUBLISHED, resources,
                                    START, END, members=3)  # fmt: skip
    assert stats.members_held == 1
    assert stats.mem_per_member_kb == pytest.approx(0.6 * 1024 / 3)
    assert usage.rss_server_mb == pytest.approx(30.6)


def test_a_missing_delivery_is_lost_and_invalidates_the_cell():
    rows = every(skip={(1, 3)})
    stats, _, verdict = evaluate_room(samples(), deliveries(rows), PUBLISHED, RESOURCES,
                                      START, END, members=3)  # fmt: skip
    assert stats.lost == 1 and not verdict.valid and "1 of 6 deliveries lost" in verdict.reason
    assert stats.last_member_p50_ms == pytest.approx(30.0)  # message 3 never reached everyone


def test_a_member_that_never_connected_loses_every_message():
    stats, _, verdict = evaluate_room(samples(failed_polls=4), deliveries(every(members=3)),
                                      PUBLISHED, RESOURCES, START, END, members=4)  # fmt: skip
    assert stats.lost == 2 and stats.member_errors == 4 and not verdict.valid


def test_duplicates_and_disorder_are_counted():
    rows = every() + [(0, 2, 101.0, 106.0)]  # message 2 again, after message 3
    stats, _, verdict = evaluate_room(samples(), deliveries(rows), PUBLISHED, RESOURCES,
                                      START, END, members=3)  # fmt: skip
    assert stats.duplicates == 1 and stats.out_of_order == 1 and not verdict.valid


def test_nothing_published_in_the_window_is_not_a_valid_cell():
    stats, _, verdict = evaluate_room(samples(), deliveries([]), PUBLISHED.iloc[:1], RESOURCES,
                                      START, END, members=3)  # fmt: skip
    assert stats.messages == 0 and not verdict.valid


@pytest.mark.parametrize(("members", "slots", "held"),
                         [(10, 4, 4), (3, 4, 3), (3000, float("inf"), 3000), (50, None, 50)])
def test_held_prediction(members, slots, held):
    assert room_prediction(members, slots) == held


# WebSocket: upgrades are samples; members never connected are capacity, not lost deliveries ---

SOCKETS = TRANSPORTS["websocket"]


def upgrades(connected=(0, 1, 2), waiting=(), reconnected=(), dropped=0) -> pd.DataFrame:
    """Members' upgrade samples: 101 at START - 1 (and again for ``reconnected``); ``waiting``
    members' handshakes complete only after the window; ``dropped`` failed samples."""
    def row(user, start, ms, status=101, error=None):
        return {"start_time": start, "latency_ms": ms, "status": status, "error": error,
                "intended_time": np.nan, "endpoint": "/room/ws", "user": user}  # fmt: skip

    rows = [row(u, START - 1, 2.0) for u in connected]
    rows += [row(u, START - 1, (END - START + 5) * 1000) for u in waiting]
    rows += [row(u, START + 2, 1.0) for u in reconnected]
    rows += [row(0, START + 1, 0.0, status=0, error="SocketDropped")] * dropped
    return pd.concat([samples(), pd.DataFrame(rows)], ignore_index=True)


def socket_resources(sockets) -> pd.DataFrame:
    return RESOURCES.drop(columns="room_held").assign(room_sockets=[None, *sockets])


def test_a_socket_room_owes_messages_only_to_connected_members():
    stats, _, verdict = evaluate_room(
        upgrades(connected=(0, 1), waiting=(2, 3)), deliveries(every(members=2)), PUBLISHED,
        socket_resources([2, 2, 2]), START, END, members=4, transport=SOCKETS,
    )  # fmt: skip
    assert verdict.valid, verdict.reason
    assert (stats.members_connected, stats.lost, stats.reconnects) == (2, 0, 0)
    assert stats.members_held_max == 2  # from the sockets gauge, not the polls gauge


def test_a_connected_member_missing_a_message_is_lost():
    rows = every(members=2, skip={(1, 3)})
    stats, _, verdict = evaluate_room(upgrades(connected=(0, 1)), deliveries(rows), PUBLISHED,
                                      socket_resources([2, 2, 2]), START, END, members=2,
                                      transport=SOCKETS)  # fmt: skip
    assert stats.lost == 1 and not verdict.valid


def test_reconnects_and_drops_are_counted():
    stats, _, _ = evaluate_room(upgrades(reconnected=(1,), dropped=1), deliveries(every()),
                                PUBLISHED, socket_resources([3, 3, 3]), START, END, members=3,
                                transport=SOCKETS)  # fmt: skip
    assert (stats.members_connected, stats.reconnects, stats.member_errors) == (3, 1, 1)


def test_server_cpu_per_delivery():
    stats, usage, _ = evaluate_room(upgrades(), deliveries(every()), PUBLISHED,
                                    socket_resources([3, 3, 3]), START, END, members=3,
                                    transport=SOCKETS)  # fmt: skip
    cpu_s = usage.cpu_server / 100 * (END - START)
    assert stats.cpu_ms_per_delivery == pytest.approx(cpu_s * 1000 / stats.delivered)

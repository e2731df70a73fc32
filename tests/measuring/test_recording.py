"""The locustfile's records and recorder, without Locust: protocol, chunk/absorb, schedule."""

from __future__ import annotations

import json
import math
import statistics

import pandas as pd
import pytest

from loadtests.protocol import (
    PROTOCOL_VERSION,
    SAMPLE_COLUMNS,
    LocustMeta,
    Progress,
    ProtocolError,
    check_sample_columns,
    read_record,
    write_record,
)
from loadtests.recording import (
    STEADY_FALL,
    STEADY_HOLD,
    STEADY_SPAN,
    STEADY_USERS,
    ArrivalSchedule,
    DeliveryRecorder,
    SampleRecorder,
    Settling,
    parse_server_timing,
)


class Response:
    status_code = 200


def record(recorder: SampleRecorder, n: int, user: int, error: bool = False) -> None:
    for i in range(n):
        exc = RuntimeError("boom") if error and i == 0 else None
        recorder.on_request(start_time=float(i), response_time=100.0 + i, response_length=30,
                            response=Response(), exception=exc, context={"user": user})  # fmt: skip


@pytest.mark.parametrize(
    ("value", "expected"),
    [("app;dur=100.412, proc;desc=4242", (100.412, 4242)),
     ("proc;desc=7,app;dur=3", (3.0, 7)),  # any order, spaces or none
     ("app;dur=12.5", (12.5, -1)),  # a server that does not say which process
     ("app;dur=fast, proc;desc=x42", (math.nan, -1)),
     ("", (math.nan, -1)), (None, (math.nan, -1))],
)  # fmt: skip
def test_server_timing_gives_the_handler_time_and_the_serving_process(value, expected):
    handler_ms, pid = parse_server_timing(value)
    assert pid == expected[1]
    assert handler_ms == expected[0] or (math.isnan(handler_ms) and math.isnan(expected[0]))


def test_records_round_trip(tmp_path):
    progress = Progress(t=1.0, requests=5, failures=0, users=2)
    meta = LocustMeta(test_start=1.0, locust_requests=5, locust_failures=0, recorded=5,
                      spawn_complete=1.5, abandoned=[2.0], workers=["w"])  # fmt: skip
    for record_, kind in ((progress, Progress), (meta, LocustMeta)):
        path = tmp_path / f"{kind.__name__}.json"
        write_record(str(path), record_)
        assert read_record(path, kind) == record_


@pytest.mark.parametrize(
    ("change", "message"),
    [({"version": 0}, "protocol version"), ({"rps": 3}, "unknown Progress fields"),
     ({"requests": None, "t": None, "extra": 1}, "unknown")],
)  # fmt: skip
def test_a_drifted_record_fails_loudly(tmp_path, change, message):
    path = tmp_path / "progress.json"
    write_record(str(path), Progress(t=1.0, requests=5, failures=0, users=2))
    data = {**json.loads(path.read_text()), **change}
    path.write_text(json.dumps(data))
    with pytest.raises(ProtocolError, match=message):
        read_record(path, Progress)


def test_a_missing_field_fails_loudly(tmp_path):
    path = tmp_path / "progress.json"
    path.write_text(json.dumps({"t": 1.0, "requests": 1, "version": PROTOCOL_VERSION}))
    with pytest.raises(ProtocolError, match="not a Progress"):
        read_record(path, Progress)


def test_chunks_absorb_into_one_table_with_errors_at_their_rows(tmp_path, monkeypatch):
    import loadtests.recording as recording

    monkeypatch.setattr(recording, "CHUNK_ROWS", 3)
    master = SampleRecorder()
    for worker, user in (("w1", 1), ("w2", 2)):
        recorder = SampleRecorder()
        record(recorder, 7, user, error=True)
        chunks = list(recorder.chunks())
        assert [len(c["columns"]["start_time"]) for c in chunks] == [3, 3, 1]
        for chunk in chunks:
            master.absorb(worker, chunk)
    path = tmp_path / "samples.parquet"
    master.write_parquet(str(path), "master")
    table = pd.read_parquet(path)
    check_sample_columns(table.columns, str(path))
    assert len(table) == 14 and list(table["worker"]).count("w2") == 7
    assert table["error"].notna().sum() == 2
    assert table.loc[table["error"].notna(), "start_time"].tolist() == [0.0, 0.0]
    assert sorted(set(table["user"])) == [1, 2]


def test_absorb_refuses_other_columns():
    chunk = next(SampleRecorder().chunks())
    chunk["columns"].pop("user")
    with pytest.raises(ProtocolError, match="columns"):
        SampleRecorder().absorb("w", chunk)


def test_deliveries_travel_from_workers_to_the_master(tmp_path):
    worker, master = DeliveryRecorder(), DeliveryRecorder()
    worker.record(7, 1, 100.0, 100.25)
    worker.record(7, 2, 101.0, 101.5)
    master.absorb(worker.chunk())
    master.absorb(worker.chunk())
    master.write_parquet(str(tmp_path / "d.parquet"))
    table = pd.read_parquet(tmp_path / "d.parquet")
    assert len(table) == 4 and list(table["message"]) == [1, 2, 1, 2]
    with pytest.raises(ProtocolError, match="columns"):
        master.absorb({"member": [1]})


def test_progress_activity_counts_deliveries():
    assert Progress(t=1.0, requests=3, failures=0, users=2, deliveries=40).activity == 43


def test_sample_columns_are_checked():
    with pytest.raises(ProtocolError, match="missing"):
        check_sample_columns([c for c in SAMPLE_COLUMNS if c != "user"] + ["error", "worker"], "x")


def test_constant_schedule_is_evenly_spaced():
    schedule = ArrivalSchedule(rate=50.0, arrival="constant", seed=1)
    schedule.start(100.0)
    times = [schedule.take() for _ in range(5)]
    assert times == pytest.approx([100.0, 100.02, 100.04, 100.06, 100.08])
    assert schedule.issued == 5


def test_poisson_schedule_has_the_rate_and_is_seeded():
    def gaps(seed):
        schedule = ArrivalSchedule(rate=100.0, arrival="poisson", seed=seed)
        times = [schedule.take() for _ in range(20_000)]
        return [b - a for a, b in zip(times, times[1:], strict=False)]

    first = gaps(3)
    assert first == gaps(3) and first != gaps(4)
    assert statistics.mean(first) == pytest.approx(0.01, rel=0.03)
    assert statistics.stdev(first) == pytest.approx(0.01, rel=0.05)  # exponential: sd = mean
    assert not any(math.isnan(g) for g in first)


def test_a_rooms_drain_reads_the_delivery_p99_and_the_newest_message_of_the_window():
    recorder = DeliveryRecorder()
    assert recorder.p99_latency_s() == 0.0 and recorder.newest_sent_before(10.0) == 0
    for i in range(100):  # message i sent at i s, received after (i % 10) / 100 s
        recorder.record(member=1, message=i + 1, sent=float(i), received=i + (i % 10) / 100)
    assert recorder.p99_latency_s() == pytest.approx(0.09)
    assert recorder.newest_sent_before(50.0) == 50  # sent at 49 s: the last before 50 s
    assert recorder.newest_sent_before(0.0) == 0


def test_the_warm_up_settles_once_every_user_completed_its_cycles_after_spawning():
    settling = Settling()
    assert not settling.settled  # not begun
    settling.begin(100.0, users=3, cycles=2)
    settling.count(0, 99.9)  # began before spawning completed: not counted
    for user in (0, 1, 2):
        settling.count(user, 100.1)
    settling.count(0, 100.2)
    settling.count(1, 100.2)
    settling.count(7, 100.2)  # ids are not known in advance: any user counts toward the 3 ...
    assert not settling.settled  # ... but only users 0 and 1 have two (0's first came early)
    settling.count(2, 100.3)
    assert settling.settled
    settling.count(9, 100.4)  # counting stops once settled
    assert 9 not in settling.counts


def test_many_users_settle_only_once_their_round_trips_stop_falling():
    users = STEADY_USERS
    settling = Settling()
    settling.begin(0.0, users=users, cycles=1)
    span = STEADY_SPAN * users
    falling = [0.130 - 0.001 * i for i in range(2 * span)]  # a train spreading out
    for i, round_trip in enumerate(falling):
        settling.count(i % users, 0.1 + i / 100, round_trip)
    assert settling.waiting == 0 and not settling.settled  # every user counted, still falling
    for i in range(span):  # steady round trips: the last span is no longer shorter
        settling.count(i % users, 1.0 + i / 100, falling[-1])
    assert not settling.settled  # the span before still holds falling ones
    for i in range(span):
        settling.count(i % users, 2.0 + i / 100, falling[-1] * (1 - STEADY_FALL / 2))
    assert settling.settled  # within STEADY_FALL of the span before
    settling.end()
    settling.count(0, 3.0, 10.0)  # the window: nothing is kept on the request path
    assert len(settling.round_trips) == 2 * span and settling.round_trips[-1] != 10.0


def test_many_users_settle_once_their_round_trips_stayed_steady_for_two_round_trips():
    """A plateau then a fall passes one comparison of two spans: the warm-up waits until the
    comparison has held for ``STEADY_HOLD`` mean round trips, and starts again if it breaks."""
    users = STEADY_USERS
    span = STEADY_SPAN * users
    settling = Settling()
    settling.begin(0.0, users=users, cycles=1)
    for i in range(2 * span):
        settling.count(i % users, 0.1, 0.100)
    assert settling.settled  # steady at this instant ...
    assert not settling.settled_at(1.0)  # ... but only just
    assert not settling.settled_at(1.0 + 0.100 * STEADY_HOLD * 0.9)
    for i in range(span):  # falling again: the run of steady polls is broken
        settling.count(i % users, 1.2, 0.090)
    assert not settling.settled_at(1.25) and settling.steady_since is None
    for i in range(2 * span):
        settling.count(i % users, 1.3, 0.090)
    assert not settling.settled_at(1.4)
    assert settling.settled_at(1.4 + 0.090 * STEADY_HOLD * 1.1)


def test_few_users_and_room_members_settle_on_their_counts_alone():
    few = Settling()
    few.begin(0.0, users=STEADY_USERS - 1, cycles=1)
    for user in range(STEADY_USERS - 1):
        few.count(user, 0.1, 0.5 - user / 10)  # falling, but too few users to judge
    assert few.settled and few.settled_at(0.2) and not few.round_trips  # nor kept
    members = Settling()
    members.begin(0.0, users=STEADY_USERS, cycles=1)
    for member in range(STEADY_USERS):
        members.count(member, 0.1)  # a message: no round trip
    assert members.settled


def test_a_fixed_warm_up_never_settles_and_unknown_users_are_ignored():
    fixed = Settling()
    fixed.begin(0.0, users=1, cycles=0)
    fixed.count(0, 1.0)
    assert not fixed.settled
    unnamed = Settling()
    unnamed.begin(0.0, users=1, cycles=1)
    unnamed.count(-1, 1.0)  # a sample without its user
    assert not unnamed.settled


def test_a_window_is_precise_once_it_has_enough_steady_completions():
    from loadtests.recording import P99_REQUESTS, WindowPrecision

    precision = WindowPrecision()
    precision.begin(100.0)
    for i in range(400):  # 200 req/s, evenly: a steady rate
        precision.completed(100.0 + i / 200)
    assert precision.enough(102.0).startswith("precise: standard error ")
    assert precision.enough(102.0).endswith(" over 400 requests")
    bursty = WindowPrecision()
    bursty.begin(100.0)
    for i in range(400):  # everything in the first half: far from steady
        bursty.completed(100.0 + i / 400)
    assert bursty.enough(102.0) is None
    assert "standard error" in bursty.shortfall(102.0)
    few = WindowPrecision()
    few.begin(100.0)
    for i in range(P99_REQUESTS - 1):
        few.completed(100.0 + i / 100)
    assert few.enough(103.0) is None
    assert few.shortfall(103.0) == f"cap: {P99_REQUESTS - 1} requests (the p99 wants 300)"
    few.completed(99.0)  # before the window: not counted
    assert few.requests == P99_REQUESTS - 1


def test_a_room_window_is_precise_once_every_member_has_enough_messages():
    from loadtests.recording import ROOM_MESSAGES, WindowPrecision

    precision = WindowPrecision()
    precision.begin(10.0, members=3)
    for message in range(ROOM_MESSAGES):
        for member in (0, 1):
            precision.delivered(member, 10.5 + message)
    precision.delivered(2, 9.0)  # sent before the window
    assert precision.enough(20.0) is None
    assert precision.shortfall(20.0).startswith("cap: the fewest messages a member received was 0")
    for message in range(ROOM_MESSAGES):
        precision.delivered(2, 10.5 + message)
    assert precision.enough(20.0).startswith(f"precise: every member received {ROOM_MESSAGES}")


def test_users_that_hold_their_own_slots_are_judged_by_their_cycles():
    """64 users answering every 100 ms ± 1 ms, in trains: their completions' counts per slice
    jump by whole trains, and a default run's 64-user cells stated 1.5-3 % by them where the
    harness's cycles said 0.1-1 %. Their cycles say about 1 ms / 100 ms / √(64 × n)."""
    from loadtests.recording import WindowPrecision

    precision = WindowPrecision()
    precision.begin(0.0, cycles=True)
    for cycle in range(30):
        for user in range(64):
            round_trip = 0.1 + (0.001 if (cycle + user) % 2 else -0.001)
            precision.completed(cycle * 0.1 + round_trip, user, round_trip)
    rel = precision.rel_stderr(3.0)
    assert rel == pytest.approx(0.01 / math.sqrt(64 * 30), rel=0.1)
    assert precision.enough(3.0).startswith("precise:")
    late = WindowPrecision()
    late.begin(0.0, cycles=True)
    late.completed(0.1, 0, 0.1)  # one user with one cycle: not yet known
    assert late.rel_stderr(1.0) is None

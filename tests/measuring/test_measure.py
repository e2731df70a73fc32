"""The resource sampler: its gauges (one value, several columns, a failure) and its first
reading of a process."""

from __future__ import annotations

import math
import time

import psutil

from asyncbench.measuring.sampling import ResourceSampler


def test_gauges_store_a_value_or_columns_read_together_and_none_when_they_fail():
    reads = []

    def room() -> dict:
        reads.append(1)
        return {"room_held": 3, "room_sockets": 7}

    def broken() -> int:
        raise ConnectionError("the bus went away")

    sampler = ResourceSampler({}, gauges={"answered": lambda: 12, "room": room, "lag": broken})
    row = sampler._sample()
    assert (row["answered"], row["room_held"], row["room_sockets"]) == (12, 3, 7)
    assert row["lag"] is None and "room" not in row
    assert len(reads) == 1  # both room columns from one read


def test_a_process_first_seen_has_no_cpu_reading_until_the_next_sample():
    """psutil's first ``cpu_percent`` of a process is 0 whatever it did: the sampler stores
    NaN (a Locust process handed its work after sampling began must not read as idle)."""
    me = psutil.Process()
    sampler = ResourceSampler({"locust": lambda: [[me]]})
    first = sampler._sample()
    assert math.isnan(first["cpu_locust"]) and math.isnan(first["cpu_locust_max"])
    assert first["rss_locust_mb"] > 0
    busy_until = time.process_time() + 0.05
    while time.process_time() < busy_until:  # 50 ms of CPU: several clock ticks
        pass
    second = sampler._sample()
    assert second["cpu_locust"] > 0 and second["cpu_locust_max"] == second["cpu_locust"]


def test_the_accept_queue_counts_connections_not_yet_accepted_on_that_port():
    import socket

    from asyncbench.measuring.sampling import accept_queue

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    port = server.getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    try:
        assert accept_queue(port) == 3
        conn, _ = server.accept()  # one accepted: two wait; established sockets are not counted
        assert accept_queue(port) == 2
        conn.close()
    finally:
        for client in clients:
            client.close()
        server.close()

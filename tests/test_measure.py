"""The resource sampler's gauges, without processes: one value, several columns, a failure."""

from __future__ import annotations

from asyncbench.measure import ResourceSampler


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

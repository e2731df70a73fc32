"""Per-process gauges: request counts from threads, and an event loop's lag."""

from __future__ import annotations

import asyncio
import threading
import time

from servers.counters import RequestCounter, read_counts, read_loop_lag_ms


def test_counts_from_many_threads_are_exact(tmp_path):
    counter = RequestCounter(str(tmp_path))
    threads = [threading.Thread(target=lambda: [counter.add() for _ in range(500)])
               for _ in range(8)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert list(read_counts(tmp_path).values()) == [4000]


def test_a_blocked_loop_shows_its_lag(tmp_path):
    async def main():
        counter = RequestCounter(str(tmp_path))
        counter.watch_loop()
        await asyncio.sleep(0.2)
        time.sleep(0.25)  # a blocking call inside the loop
        await asyncio.sleep(1.2)

    asyncio.run(main())
    assert 200 <= read_loop_lag_ms(tmp_path) < 600


def test_without_a_directory_nothing_is_counted(tmp_path):
    RequestCounter(None).add()
    assert read_counts(tmp_path) == {} and read_loop_lag_ms(tmp_path) is None

"""Soak: a long sleep cell at the highest default level on tornado-coroutine loses nothing.

Not part of the default run (marker ``soak``): ``nox -s soak``, or ``pytest -m soak``. The
measured window lasts ``ASYNCBENCH_SOAK_SECONDS`` (default 600). It checks that every request
Locust counted is in the raw samples, none failed, the cell is valid, and the server's memory
stays flat over the window.
"""

from __future__ import annotations

import os

import pytest

from asyncbench.measuring.run import RunSettings, run_matrix
from asyncbench.planning.scenario_files import SCENARIO_DIR, load_scenario

pytestmark = [pytest.mark.soak, pytest.mark.slow]

SOAK_S = float(os.environ.get("ASYNCBENCH_SOAK_SECONDS", "600"))
RSS_GROWTH = 0.20  # allowed growth of the server's RSS from the window's start to its end...
RSS_SLACK_MB = 10.0  # ...or this much, whichever is larger (allocator noise on a small heap)


def test_soak_sleep_at_the_highest_level(tmp_path, pytestconfig) -> None:
    if "soak" not in (pytestconfig.getoption("markexpr") or ""):
        # Another -m (e.g. "not slow") replaces the default "not soak": still don't run 10 min.
        pytest.skip("soak runs only when asked for: pytest -m soak, or nox -s soak")
    users = max(load_scenario(SCENARIO_DIR / "sleep.toml").users)
    settings = RunSettings(
        scenarios=("sleep",), servers=("tornado-coroutine",), users=(users,), duration_s=SOAK_S,
        warmup_s=5, repeat=1, reports_dir=str(tmp_path), new=True,
    )  # fmt: skip
    run = run_matrix(settings)

    results = run.results()
    assert len(results) == 1
    cell = results.iloc[0]
    assert cell["status"] == "ok" and cell["valid"], cell["reason"]
    # No sample lost: Locust's own count, the samples recorded, the rows stored.
    samples = run.samples([cell["cell_id"]])
    assert cell["locust_requests"] == cell["recorded_samples"] == len(samples) > 0
    assert cell["failures"] == 0
    assert (samples["status"] == 200).all()

    # Memory stays flat: median RSS of the window's first and last tenth.
    resources = run.resources([cell["cell_id"]])
    in_window = resources[resources["t"].between(cell["window_start"], cell["window_end"])]
    rss = in_window.sort_values("t")["rss_server_mb"].reset_index(drop=True)
    tenth = max(3, len(rss) // 10)
    assert len(rss) >= 2 * tenth, f"only {len(rss)} resource samples in the window"
    first, last = rss.head(tenth).median(), rss.tail(tenth).median()
    allowed = max(first * (1 + RSS_GROWTH), first + RSS_SLACK_MB)
    assert last <= allowed, f"server RSS grew from {first:.1f} MB to {last:.1f} MB"
    print(
        f"soak: {users} users, {SOAK_S:.0f} s, {cell['requests']} requests in the window, "
        f"{cell['rps']:.0f} req/s, p99 {cell['p99_ms']:.1f} ms, RSS {first:.1f} -> {last:.1f} MB"
    )

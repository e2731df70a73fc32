"""``asyncbench compare`` and ``run --check`` on copies of the real fixture run: exit codes."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from asyncbench.cli import main
from asyncbench.judging import gate, regression
from asyncbench.storing.migrate import SCHEMA_VERSION
from asyncbench.storing.store import RunDir

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "small-run"
SLOWED = "sleep.tornado-coroutine.u16"  # a level with two steady repeats in the fixture


def copy_run(tmp_path: Path, name: str) -> Path:
    shutil.copytree(FIXTURE, tmp_path / name)
    return tmp_path / name


def slow_down(run: Path, level: str, factor: float) -> None:
    """Make one level ``factor`` times slower in its raw samples: every latency longer, and
    every request start later (so fewer start inside the window)."""
    for path in (run / "samples.parquet").glob(f"{level}.r*.parquet"):
        table = pq.read_table(path)
        frame = table.to_pandas()
        first = frame["start_time"].min()
        frame["start_time"] = first + (frame["start_time"] - first) * factor
        frame["latency_ms"] *= factor
        pq.write_table(pa_table(frame, table.schema.metadata), path)


def pa_table(frame: pd.DataFrame, metadata) -> pa.Table:
    table = pa.Table.from_pandas(frame, preserve_index=False)
    return table.replace_schema_metadata(metadata)


def compare(run: Path, baseline: Path, capsys) -> tuple[int, str, str]:
    code = main(["compare", str(run), "--baseline", str(baseline)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_run_against_itself_passes(tmp_path, capsys):
    run = copy_run(tmp_path, "a")
    code, out, err = compare(run, copy_run(tmp_path, "b"), capsys)
    assert code == 0, out
    assert out.splitlines()[-1].startswith("OK: 22 levels, none regressed")
    assert "sleep / tornado-coroutine / 16 users" in out and "1.00× (" in out
    assert "Noise floor" in out and err == ""


def test_a_level_30_percent_slower_fails(tmp_path, capsys):
    baseline, run = copy_run(tmp_path, "base"), copy_run(tmp_path, "slow")
    slow_down(run, SLOWED, 1.3)
    code, out, _ = compare(run, baseline, capsys)
    assert code == 1, out
    regressed = [line for line in out.splitlines() if line.endswith("REGRESSED")]
    assert len(regressed) == 1 and regressed[0].startswith("sleep / tornado-coroutine / 16 users")
    assert "run loses on rps" in out.splitlines()[-1] and "run loses on p99" in out


AA_LEVEL = "sleep.tornado-coroutine.u64"


def add_aa_pair(run: Path, level: str) -> None:
    """Give a copied run an A/A pair at ``level``: its repeats measured again, as copies of
    replica "aa" (the same samples and resources under the copies' cell ids)."""
    results = pd.read_csv(run / "results.csv")
    results["replica"] = results["replica"].fillna("") if "replica" in results else ""
    rows = results[results["cell_id"].str.startswith(f"{level}.r")].copy()
    rows["cell_id"] = rows["cell_id"].str.replace(f"{level}.r", f"{level}.aa.r", regex=False)
    rows["replica"] = "aa"
    pd.concat([results, rows]).to_csv(run / "results.csv", index=False)
    for raw in ("samples.parquet", "resources.parquet"):
        for path in (run / raw).glob(f"{level}.r*.parquet"):
            table = pq.read_table(path)
            copy_id = path.stem.replace(f"{level}.r", f"{level}.aa.r")
            frame = table.to_pandas().assign(cell_id=copy_id)
            copy = path.with_name(f"{copy_id}.parquet")
            pq.write_table(pa_table(frame, table.schema.metadata), copy)


def test_drift_between_two_runs_that_moved_the_aa_level_too_is_not_a_regression(tmp_path, capsys):
    """Measured between two default runs of one commit: the machine served a whole scenario
    a third slower in the second, its A/A level too, which no floor inside one run sees. The
    A/A level's move between the runs is the floor then; ``--within-run`` judges without it."""
    base, run = copy_run(tmp_path, "base"), copy_run(tmp_path, "run")
    for copy in (base, run):
        add_aa_pair(copy, AA_LEVEL)
    for level in (AA_LEVEL, f"{AA_LEVEL}.aa", SLOWED):
        slow_down(run, level, 1.25)
    code, out, _ = compare(run, base, capsys)
    assert code == 0, out
    assert ("Between the two runs, the A/A level sleep / tornado-coroutine / 64 users moved "
            "within ±") in out  # fmt: skip
    code = main(["compare", str(run), "--baseline", str(base), "--within-run"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "Between the two runs" not in out
    assert "REGRESSED: " in out.splitlines()[-1] and "sleep / tornado-coroutine / 16 users" in out


def test_run_check_applies_the_scenario_thresholds(tmp_path, capsys):
    run = copy_run(tmp_path, "a")
    meta = json.loads((run / "run.json").read_text())
    meta["scenarios"]["sleep"]["thresholds"] = {"max_p99_ms": 10000}
    (run / "run.json").write_text(json.dumps(meta))
    stored = regression.load(run)
    assert regression.check(stored).status == 0
    meta["scenarios"]["sleep"]["thresholds"] = {"max_p99_ms": 150}
    (run / "run.json").write_text(json.dumps(meta))
    result = regression.check(regression.load(run))
    assert result.status == 1
    assert all(f.startswith("sleep / ") and "above max_p99_ms 150" in f for f in result.failures)


def test_missing_run_is_one_line_and_exit_2(tmp_path, capsys):
    code, out, err = compare(tmp_path / "nothing", copy_run(tmp_path, "b"), capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "no such run directory" in err


def test_schema_mismatch_is_one_line_and_exit_2(tmp_path, capsys):
    old, new = copy_run(tmp_path, "old"), copy_run(tmp_path, "new")
    rewritten = RunDir.open(new)  # as if written by this asyncbench: every file at the current
    rewritten.write_meta(rewritten.read_meta())
    rewritten.results().to_csv(rewritten.results_csv, index=False)
    assert regression.stored_versions(rewritten) == (SCHEMA_VERSION,)
    code, out, err = compare(new, old, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert f"(schema version {SCHEMA_VERSION}) with" in err and "(schema version 1)" in err


def test_bad_confidence_is_a_usage_error(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["compare", str(tmp_path), "--baseline", str(tmp_path), "--confidence", "95"])
    assert exc.value.code == 2


def set_balance(run: Path, level: str, counts: list[int]) -> None:
    """Give one level's resource samples per-worker request counts (``pid:count``), growing
    from the window's start to its end in the proportions ``counts``."""
    for path in (run / "resources.parquet").glob(f"{level}.r*.parquet"):
        table = pq.read_table(path)
        frame = table.to_pandas()
        step = frame["t"].rank(method="first") - 1
        frame["process_requests"] = [
            " ".join(f"{100 + i}:{int(n * k)}" for i, n in enumerate(counts)) for k in step
        ]
        pq.write_table(pa_table(frame, table.schema.metadata), path)


def test_a_slower_level_whose_workers_balanced_differently_is_shown_not_counted(tmp_path, capsys):
    """Forked Tornado's greedy accept lands connections on its workers differently from run to
    run: a slower level whose busiest worker's share moved is evidence of that, not a code
    regression."""
    level = "sleep.tornado-forked.u4"
    base, run = copy_run(tmp_path, "base"), copy_run(tmp_path, "run")
    set_balance(base, level, [10, 10, 10, 10])
    set_balance(run, level, [10, 10, 10, 0])
    slow_down(run, level, 1.4)
    code, out, _ = compare(run, base, capsys)
    assert code == 0, out
    assert "balance changed (not counted)" in out
    assert "busiest worker 25% → 33%" in out.splitlines()[-1]
    slow_down(run, "sleep.tornado-coroutine.u16", 1.3)  # a one-process level still counts
    code, out, _ = compare(run, base, capsys)
    assert code == 1 and "REGRESSED: 1 of" in out


def landed(process_users: str, p99_ms: tuple[float, float]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A saturated tornado-forked level of 64 users (two repeats, 40 req/s, every worker busy:
    the request shares even) whose users landed on the workers as ``process_users`` says."""
    level = {"scenario": "sleep", "server": "tornado-forked", "users": 64, "rate": 0.0}
    repeats = pd.DataFrame([{**level, "repeat": r, "rps": 40.0 + r / 20, "p99_ms": p}
                            for r, p in enumerate(p99_ms, start=1)])  # fmt: skip
    cells = repeats.assign(included=True, busiest_process_share=0.25, process_users=process_users)
    return repeats, cells


def test_a_p99_set_by_how_users_landed_on_the_workers_is_shown_not_counted():
    """Measured between two default runs of one commit: 64 users on four one-slot children, p99
    2.4/2.9 s in one and 5.0/5.7 s in the next, as the busiest child held more of the users.
    The requests' shares stay at 25 %: only the users' landing explains it."""
    run, run_cells = landed("50 6 4 4", (5000.0, 5700.0))
    base, base_cells = landed("24 16 14 10", (2400.0, 2900.0))
    gated = gate.regression_gate(run, base, {"rps": 0.09, "p99_ms": 0.6})
    assert gated.status == 1  # the p99 alone: 1.98×, beyond the floor
    explained = regression._balance_explained(gated, run_cells, base_cells)
    assert explained.status == 0
    assert "busiest worker held 38% → 78% of them" in explained.levels[0].notes[0]
    same, same_cells = landed("24 16 14 10", (5000.0, 5700.0))  # landed alike: a regression
    assert regression._balance_explained(gated, same_cells, base_cells).status == 1
    slower = run.assign(rps=run["rps"] * 0.7)  # throughput lost too: not the landing's doing
    gated = gate.regression_gate(slower, base, {"rps": 0.09, "p99_ms": 0.6})
    assert regression._balance_explained(gated, run_cells, base_cells).status == 1


def room_run_cells(delivery_p99: float, lost: float = 0.0) -> pd.DataFrame:
    """A cell table with a sleep level and its A/A pair, and room-longpoll's 1000-member level
    with its A/A pair (2 + 2 cells each), every other room cell at ``delivery_p99`` and
    ``lost``: what ``analyze.stored_cells`` gives the gate."""
    rows = []
    for replica in ("", "aa"):
        for repeat in (1, 2):
            rows.append({"scenario": "sleep", "server": "tornado-coroutine", "users": 64,
                         "endpoint": "/sleep", "delay_ms": 100, "replica": replica,
                         "repeat": repeat, "rps": 600.0 + repeat, "p99_ms": 110.0 + repeat,
                         "status": "ok", "lost": math.nan, "delivery_p99_ms": math.nan})
            rows.append({"scenario": "room-longpoll", "server": "tornado-coroutine",
                         "users": 1000, "endpoint": "/room/poll", "delay_ms": 0,
                         "replica": replica, "repeat": repeat, "rps": 2000.0,
                         "p99_ms": math.nan, "status": "ok", "lost": 0.0,
                         "delivery_p99_ms": 2000.0 + 40 * repeat + 30 * (replica == "aa")})
    for repeat in (1, 2):
        rows.append({"scenario": "room-longpoll", "server": "tornado-threadpool", "users": 100,
                     "endpoint": "/room/poll", "delay_ms": 0, "replica": "", "repeat": repeat,
                     "rps": 200.0, "p99_ms": math.nan, "status": "invalid" if lost else "ok",
                     "lost": lost, "delivery_p99_ms": delivery_p99 * (1 + 0.01 * repeat)})
    cells = pd.DataFrame(rows).assign(rate=0.0)
    return cells.assign(included=cells["status"] == "ok")


def test_compare_gates_room_levels_by_the_room_pair(capsys):
    base = room_run_cells(80.0)
    floors = regression.gate_floors(room_run_cells(80.0), base)
    assert any(s.startswith("room-longpoll: delivery p99 ±") and "measured by the A/A pair "
               "room-longpoll / tornado-coroutine / 1000 members" in s
               for s in floors.sentences())  # fmt: skip
    room_floor = floors.judged.for_scenario("room-longpoll")
    assert room_floor.room and room_floor.measured("delivery_p99_ms")
    assert floors.judged.rps == regression.gate_floors(
        base[base["scenario"] == "sleep"], base[base["scenario"] == "sleep"]).judged.rps

    same = regression.gate(room_run_cells(80.0), base, floors.judged, {})
    assert same.status == 0
    assert {lv.label for lv in same.levels if lv.room} == {
        "room-longpoll / tornado-coroutine / 1000 members",
        "room-longpoll / tornado-threadpool / 100 members"}
    text = "\n".join(regression.lines(same, floors))
    assert "delivery p99 run/base (95 % CI)" in text
    assert "OK: 3 levels (2 of them room levels), none regressed" in text.splitlines()[-1]

    slower = regression.gate(room_run_cells(240.0), base, floors.judged, {})
    assert slower.status == 1 and slower.failures[0].startswith(
        "room-longpoll / tornado-threadpool / 100 members: run loses on delivery p99: 3.00×")
    lossy = regression.gate(room_run_cells(80.0, lost=12.0), base, floors.judged, {})
    assert lossy.failures == ("room-longpoll / tornado-threadpool / 100 members: lost 24 "
                              "deliveries (2 of 2 cells) where the baseline lost none",)
    line = [ln for ln in regression.lines(lossy, floors) if "tornado-threadpool" in ln][0]
    assert line.endswith("REGRESSED")

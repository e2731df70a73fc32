"""The report, built from a real (trimmed) run and opened in a real headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import markupsafe
import pytest

from asyncbench.judging import analyze
from asyncbench.reporting.report import build_report, render, report_data
from asyncbench.storing.records import RunMeta
from asyncbench.storing.store import RunDir

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "small-run"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MAX_REPORT_BYTES = 6_000_000  # plotly.js alone is about 4.8 MB; everything else is small


def copy_run(tmp: Path, name: str = "small-run") -> RunDir:
    target = tmp / name
    shutil.copytree(FIXTURE, target)
    return RunDir.open(target)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[RunDir, Path, float]:
    run = copy_run(tmp_path_factory.mktemp("report"))
    started = time.perf_counter()
    page = build_report(run)
    return run, page, time.perf_counter() - started


@pytest.fixture(scope="module")
def page_html(built) -> str:
    return built[1].read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def data(built) -> dict:
    return report_data(built[0])


class _Resources(HTMLParser):
    """Every URL-bearing attribute and every <script>/<link> tag of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []
        self.tags: dict[str, int] = {}

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        for name, value in attrs:
            if name in ("src", "href", "srcset", "action", "poster", "data") and value:
                self.urls.append((tag, name, value))


def test_report_is_written_quickly_and_small(built):
    run, page, seconds = built
    assert page == run.path / "index.html"
    assert page.stat().st_size < MAX_REPORT_BYTES
    assert seconds < 10


def test_no_external_resources(page_html):
    parser = _Resources()
    parser.feed(page_html)
    for tag, attribute, url in parser.urls:
        assert not url.lower().startswith(("http:", "https:", "//", "ftp:")), (
            f"<{tag} {attribute}={url!r}> would reach the network"
        )
    assert "link" not in parser.tags  # no stylesheet, no font, no preload
    assert all(attr != "src" for tag, attr, _ in parser.urls if tag == "script")
    assert "@import" not in page_html and "@font-face" not in page_html
    assert page_html.count("* plotly.js v") == 1, "plotly.js is inlined exactly once"


def test_every_scenario_has_its_computed_verdict(built, data, page_html):
    run, _, _ = built
    cells = analyze.cell_table(run.results(), run.samples())
    agg = analyze.aggregate(cells)
    names = set(run.results()["scenario"])
    assert {v["name"] for v in data["verdicts"]} == names
    for verdict in data["verdicts"]:
        assert str(markupsafe.escape(verdict["headline"])) in page_html
        assert str(markupsafe.escape(verdict["text"])) in page_html
        level = analyze.comparison_level(agg, verdict["name"])
        rows = agg[(agg["scenario"] == verdict["name"]) & (agg["load"] == level)]
        winner = rows.loc[rows["rps_median"].idxmax(), "server"]
        said = verdict["headline"] + verdict["text"]
        assert winner in said and f"at {level:g} user" in said
        if verdict["name"] == "hello":  # no I/O: the framework's CPU cost per request leads
            assert verdict["headline"].startswith("Framework cost, server CPU per request")
    sleep = next(v for v in data["verdicts"] if v["name"] == "sleep")
    assert sleep["headline"].startswith("tornado-coroutine wins")
    assert "workers" in sleep["text"]  # where the blocking models hit their worker limit


def test_data_is_plain_json_and_shows_configuration(built, data, page_html):
    run, _, _ = built
    assert json.loads(json.dumps(data)) == data
    meta = run.read_meta()
    assert str(meta.seed) in page_html
    commands = data["config"]["commands"]
    assert len(commands) == len(meta.invocations) > 1
    for command, invocation in zip(commands, meta.invocations, strict=True):
        assert str(markupsafe.escape(command)) in page_html
        assert command.endswith(f"--seed {invocation.seed}")
        assert command.startswith("asyncbench run ")
    for model in meta.servers:
        assert model in data["config"]["servers"]["models"]
    assert meta.machine["cpu_model"] in page_html
    for name, version in meta.packages.items():
        assert [name, version] in data["config"]["packages"]


def test_excluded_cells_are_greyed_with_their_reason(built, page_html):
    run, _, _ = built
    results = run.results()
    excluded = results[~analyze.included(results)]
    assert len(excluded)
    assert 'class="banner warn"' in page_html
    assert page_html.count('<tr class="excluded">') >= len(excluded)
    for reason in set(excluded["reason"]):
        assert str(markupsafe.escape(reason)) in page_html


def test_unfinished_run_gets_a_banner(tmp_path):
    run = copy_run(tmp_path)
    meta = run.read_meta()
    meta.status = "interrupted"
    run.write_meta(meta)
    page = build_report(run).read_text(encoding="utf-8")
    assert 'class="banner error"' in page
    assert "This run is interrupted, not complete" in page


def test_scenario_without_valid_cells_says_so(tmp_path):
    """As if every sql cell had failed its equivalence check: no samples, no numbers."""
    run = copy_run(tmp_path)
    results = run.results()
    failed = results["scenario"] == "sql"
    reason = "equivalence check failed: /sql answered 500"
    results.loc[failed, ["status", "valid", "reason"]] = ["failed", False, reason]
    results.loc[failed, ["window_start", "window_end", "rps", "p50_ms", "p99_ms"]] = None
    results.to_csv(run.results_csv, index=False)
    for cell_id in results.loc[failed, "cell_id"]:
        (run.samples_dir / f"{cell_id}.parquet").unlink()
    data = report_data(run)
    sql = next(v for v in data["verdicts"] if v["name"] == "sql")
    assert sql["headline"] == "No valid measurements."
    assert reason in sql["text"]
    sleep = next(v for v in data["verdicts"] if v["name"] == "sleep")
    assert sleep["headline"].startswith("tornado-coroutine wins")
    page = render(data)
    assert f"{failed.sum()} failed" in page


def test_run_without_results_still_renders(tmp_path):
    run = RunDir.create(tmp_path)
    run.write_meta(RunMeta(run_id=run.run_id, created=1.0, status="running"))
    page = build_report(run).read_text(encoding="utf-8")
    assert "No results yet." in page
    assert "This run is running, not complete" in page


def test_baseline_adds_change_columns(tmp_path):
    run, other = copy_run(tmp_path, "a"), copy_run(tmp_path, "b")
    data = report_data(run, baseline=other)
    assert data["baseline"] == "b"
    for block in data["scenarios"]:
        table = block["table"]
        assert table["columns"][-2:] == ["Δ req/s (95 % CI)", "Δ p99 (95 % CI)"]
        assert all(1 + len(row["values"]) == len(table["columns"]) for row in table["rows"])
        measured = [r for r in table["rows"] if "↳" not in r["label"] and r["css"] != "excluded"]
        assert measured
        for row in measured:  # the same run: no change, an interval around it, no regression
            for value in row["values"][-2:]:
                assert value.startswith("+0% (-") and " to +" in value and "worse" not in value
    assert any(b["text"].startswith("Against baseline b (as `asyncbench compare`): OK:")
               for b in data["banners"])  # fmt: skip
    assert "Δ req/s" in render(data)


def test_every_verdict_carries_an_interval_and_the_noise_floor_is_stated(data, page_html):
    compared = [v for v in data["verdicts"] if not v["headline"].startswith("Only ")]
    assert compared
    for verdict in compared:
        said = verdict["headline"] + " " + verdict["text"]
        assert "% CI " in said or "No verdict" in said
        assert said.count("% CI ") >= 3  # the winner, throughput and p99
    # the fixture predates A/A pairs: the page says the default floor is used
    assert "no usable A/A pair" in data["noise"]
    assert str(markupsafe.escape(data["noise"])) in page_html


def test_report_writes_one_hlog_per_level(built):
    run, _, _ = built
    cells = analyze.cell_table(run.results(), run.samples())
    levels = cells[cells["included"]].groupby(["scenario", "server", "users"]).ngroups
    logs = sorted((run.path / "hlog").glob("*.hlog"))
    assert len(logs) == levels
    assert (run.path / "hlog" / "sleep.tornado-coroutine.u64.hlog") in logs


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM, reason="chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(built, data, tmp_path):
    _, page, _ = built
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "report.png"
    screenshot.unlink(missing_ok=True)
    argv = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
        "--v=0", f"--screenshot={screenshot}", "--window-size=1400,2400",
        "--virtual-time-budget=5000", "--dump-dom", page.as_uri(),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    for marker in ("Uncaught", "ERROR:CONSOLE"):
        assert marker not in done.stderr, done.stderr[-2000:]
    dom = done.stdout
    figures = sum(len(s["figures"]) for s in data["scenarios"])
    assert dom.count('class="main-svg"') >= figures
    assert dom.count('class="scatterlayer') >= figures
    assert 'class="js-line" d="M' in dom  # traces were drawn with path data
    assert screenshot.stat().st_size > 50_000
    # the first screen: a contents bar, and the matrix: a row per scenario, a column per model
    assert dom.count('<nav class="contents"') == 1 and dom.count('<table class="matrix"') == 1
    summarised = {row["scenario"] for row in data["summary"]["rows"]}
    assert summarised == {v["name"] for v in data["verdicts"]}
    assert dom.index("<table") == dom.index('<table class="matrix"')  # the first table
    assert dom.count("<details") >= len(data["scenarios"])  # the detail is folded
    assert dom.count('aria-label="Models"') == 1  # the colour legend, once, in the sticky bar


MEASURE_WIDTH = """<script>
window.addEventListener("load", () => setTimeout(() => {
  document.querySelectorAll("details").forEach(d => { d.open = true; });
  const page = document.documentElement.scrollWidth;
  const boxes = [...document.querySelectorAll(".scroll")].map(b => b.scrollWidth - b.clientWidth);
  document.body.dataset.pageWidth = page;
  document.body.dataset.tableOverflow = Math.max(0, ...boxes);
}, 500));
</script></body>"""


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM, reason="chromium not installed (apt-get install chromium)")
def test_report_fits_1280_px_with_every_table_unfolded(built, tmp_path):
    _, page, _ = built
    measured = tmp_path / "measured.html"
    measured.write_text(page.read_text().replace("</body>", MEASURE_WIDTH))
    argv = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000",
        "--virtual-time-budget=5000", "--dump-dom", measured.as_uri(),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    width = re.search(r'data-page-width="(\d+)"', done.stdout)
    overflow = re.search(r'data-table-overflow="(\d+)"', done.stdout)
    assert width and overflow, "the measuring script did not run"
    assert int(width.group(1)) <= 1280  # no horizontal scroll of the page
    assert int(overflow.group(1)) == 0  # no table wider than its box


SEVEN_MODELS = ("flask-blocking", "tornado-forked", "tornado-coroutine", "tornado-threadpool-b",
                "flask-threaded-b", "tornado-forked-long-name", "flask-blocking-b")


def seven_model_run(tmp: Path) -> RunDir:
    """The fixture with four more models, each a copy of a measured one under a new name (its
    results, samples and resources): seven columns for the first screen to fit."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    run = copy_run(tmp, "seven")
    results, meta = run.results(), json.loads(run.meta_json.read_text())
    copies = []
    for new in SEVEN_MODELS[3:]:
        old = next(m for m in SEVEN_MODELS[:3] if new.startswith(m.split("-")[0]))
        rows = results[results["server"] == old].copy()
        renamed = rows["cell_id"].str.replace(f".{old}.", f".{new}.", regex=False)
        for before, after in zip(rows["cell_id"], renamed, strict=True):
            for folder in (run.samples_dir, run.resources_dir):
                source = folder / f"{before}.parquet"
                if source.exists():
                    table = pq.read_table(source)
                    at = table.schema.get_field_index("cell_id")
                    column = pa.array([after] * len(table)).cast(table.schema.field(at).type)
                    table = table.set_column(at, table.schema.field(at), column)
                    pq.write_table(table, folder / f"{after}.parquet")
        copies.append(rows.assign(server=new, cell_id=renamed))
        meta["servers"][new] = meta["servers"][old]
    pd.concat([results, *copies]).to_csv(run.results_csv, index=False)
    run.meta_json.write_text(json.dumps(meta))
    return run


MEASURE_MATRIX = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const first = document.querySelector("table");
  document.body.dataset.firstTable = first.className;
  document.body.dataset.rowHeads = first.querySelectorAll("tbody th[scope=row]").length;
  document.body.dataset.columns = first.querySelectorAll("thead th[scope=col]").length;
  document.body.dataset.pageWidth = document.documentElement.scrollWidth;
  document.body.dataset.overflow = Math.max(0, ...[...document.querySelectorAll(".scroll")]
    .map(b => b.scrollWidth - b.clientWidth));
  const heads = [...first.querySelectorAll("thead th[scope=col]")];
  document.body.dataset.wrapped = heads.filter(h => getComputedStyle(h).whiteSpace !== "nowrap"
    || h.scrollWidth > h.clientWidth).length;
}, 500));
</script></body>"""


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM, reason="chromium not installed (apt-get install chromium)")
def test_the_first_table_is_a_scenario_by_model_matrix_that_fits_1280_px_with_seven_models(
    tmp_path,
):
    run = seven_model_run(tmp_path)
    data = report_data(run)
    assert [m["name"] for m in data["models"]] == list(SEVEN_MODELS)
    page = build_report(run)
    measured = tmp_path / "matrix.html"
    measured.write_text(page.read_text().replace("</body>", MEASURE_MATRIX))
    argv = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
        "--window-size=1280,900", "--virtual-time-budget=5000", "--dump-dom", measured.as_uri(),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=90, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    for marker in ("Uncaught", "ERROR:CONSOLE"):
        assert marker not in done.stderr, done.stderr[-2000:]
    found = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', done.stdout.split("<body", 1)[1][:600]))
    assert found.get("first-table") == "matrix", "the first table is the matrix"
    assert int(found["row-heads"]) == len(data["summary"]["rows"]) == len(data["scenarios"])
    assert int(found["columns"]) == len(SEVEN_MODELS)
    assert int(found["page-width"]) <= 1280  # no horizontal scroll of the page
    assert int(found["overflow"]) == 0  # nor of the matrix in its box
    assert int(found["wrapped"]) == 0  # model names stay on one line


def test_the_throughput_note_names_only_the_methods_used():
    """Room cells estimate no request throughput (an empty method): the note does not list one."""
    import pandas as pd

    from asyncbench.reporting.report import _throughput_note

    cells = pd.DataFrame({
        "cell_id": ["sleep.a.u1.r1", "room.a.u10.r1", "sleep.b.u8.r1", "sleep.b.u64.r1"],
        "included": [True, True, True, True],
        "rps_rel_stderr": [0.004, float("nan"), 0.002, 0.003],
        "rps_method": ["closed-loop cycles", "", "closed-loop per process (4: completions)",
                       "closed-loop per process (3: completions, cycles)"],
    })  # fmt: skip
    note = _throughput_note(cells)
    # one entry a method, however many ways its cells split (a default run listed 6 kinds of
    # "closed-loop per process" on the first screen)
    assert note.startswith(
        "Throughput: closed-loop cycles (1 cell), closed-loop per process (2 cells); ")
    assert "0.40% (sleep.a.u1.r1)" in note

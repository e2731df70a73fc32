"""Raw export for other tools: one HdrHistogram interval log per level, in ``<run>/hlog/``.

Each log holds the level's included regular cells (repeats) with exactly the requests its
percentiles come from (``hlog.py`` describes the format); an open-loop level logs the corrected
latency, stamped with the intended send times. Rewritten whenever the report is built.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from asyncbench.judging import analyze
from asyncbench.judging.evaluate import corrected_latency_ms
from asyncbench.storing.hlog import CellLatencies, level_filename, write_level_hlog

HLOG_DIR = "hlog"


def write_hlogs(run_path: Path, cells: pd.DataFrame, samples: pd.DataFrame) -> list[Path]:
    """One ``.hlog`` per level with included regular cells; the folder is replaced as a whole."""
    target = Path(run_path) / HLOG_DIR
    tmp = target.with_name(f".{HLOG_DIR}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    regular, _ = analyze.split_replicas(cells)
    kept = regular[regular["included"]] if len(regular) else regular
    by_cell = dict(tuple(samples.groupby("cell_id", sort=False))) if len(samples) else {}
    names = []
    for (scenario, server, rate, users), level in kept.groupby(analyze.LEVEL, sort=True):
        logged = [_cell(row, by_cell[row.cell_id]) for row in level.itertuples()
                  if row.cell_id in by_cell]  # fmt: skip
        if logged:
            name = level_filename(scenario, server, int(users), float(rate))
            load = f"{rate:g} req/s offered" if rate > 0 else f"{int(users)} users"
            write_level_hlog(tmp / name, logged,
                             comment=f"asyncbench {scenario} / {server} / {load}")  # fmt: skip
            names.append(name)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return [target / name for name in names]


def _cell(row, samples: pd.DataFrame) -> CellLatencies:
    if row.rate > 0:
        start, latency = samples["intended_time"], corrected_latency_ms(samples)
    else:
        start, latency = samples["start_time"], samples["latency_ms"]
    return CellLatencies(start.to_numpy(dtype=float), latency.to_numpy(dtype=float),
                         float(row.window_start), float(row.window_end), row.cell_id)  # fmt: skip

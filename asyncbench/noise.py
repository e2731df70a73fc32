"""The run's noise floor: what its A/A pair shows, or a documented conservative default.

An A/A pair is one level measured twice in the same run (``plan.AAPair``): its regular cells
and its ``replica`` "aa" cells, shuffled among all the others. Nothing differs between the two
halves but time and chance, so the difference they show (``confidence.noise_floor``: the larger
of what this pair measured and the 99 % bound its cells' spread allows) is the least a verdict
must exceed before it calls a win, and its cells' spread is the least spread any repeat is
assumed to have. A run without a usable pair (a partial run, ``--quick``, open loop, an excluded
A/A cell) uses ``DEFAULT_FLOORS`` and says so on the page. A default floor is shaped like a
measured one: as if a 2 + 2 pair had shown it, so it also lends a spread per repeat
(``floor / t(0.995, 3)``) and identical repeats still get an interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from asyncbench.confidence import NOISE_FLOOR_COVERAGE, NoiseFloor, noise_floor
from asyncbench.plan import AA

# Conservative guesses, not measurements: about twice what A/A pairs of default runs showed on a
# 2-core VM (docs/DESIGN-NOTES.md). Used only when a run has no usable A/A pair.
DEFAULT_FLOORS = {"rps": 0.05, "p99_ms": 0.15}
METRICS = {"rps": "throughput", "p99_ms": "p99"}
_DEFAULT_DF = 3  # a 2 + 2 pair


def default_floor(metric: str) -> NoiseFloor:
    """The default floor of ``metric`` as a 2 + 2 A/A pair would have shown it."""
    quantile = float(stats.t.ppf(0.5 + NOISE_FLOOR_COVERAGE / 2, _DEFAULT_DF))
    relative = DEFAULT_FLOORS[metric]
    return NoiseFloor(relative, math.nan, relative / quantile, _DEFAULT_DF)


@dataclass(frozen=True)
class NoiseFloors:
    """The floor per metric (``rps``, ``p99_ms``), measured by an A/A pair or the default."""

    rps: NoiseFloor
    p99_ms: NoiseFloor
    pair: str = ""  # the A/A level, e.g. "sleep / tornado-coroutine / 64 users"; "" when none
    cells: tuple[int, int] = (0, 0)  # included cells in each half
    measured_metrics: tuple[str, ...] = ()

    def of(self, metric: str) -> NoiseFloor:
        return getattr(self, metric)

    def relative(self, metric: str) -> float:
        return self.of(metric).relative

    def measured(self, metric: str) -> bool:
        return metric in self.measured_metrics

    def mapping(self) -> dict[str, NoiseFloor]:
        """For ``gate.regression_gate``."""
        return {metric: self.of(metric) for metric in METRICS}

    def sentence(self) -> str:
        """One line for the report and ``asyncbench compare``."""
        parts = [f"±{self.relative(m) * 100:.1f} % {name}" for m, name in METRICS.items()]
        floors = ", ".join(parts)
        if not any(self.measured(m) for m in METRICS):
            return (f"Noise floor {floors}: this run has no usable A/A pair, so these are the "
                    "default, conservative floors, not measurements.")  # fmt: skip
        unmeasured = [METRICS[m] for m in METRICS if not self.measured(m)]
        default = f" ({', '.join(unmeasured)}: the default)" if unmeasured else ""
        return (f"Noise floor {floors}{default}, measured by the A/A pair {self.pair} "
                f"({self.cells[0]} + {self.cells[1]} cells, shuffled among the others): a "
                "verdict calls a win only beyond it.")  # fmt: skip

    def larger(self, other: NoiseFloors) -> NoiseFloors:
        """Per metric, whichever of two runs' floors is larger (comparing two runs)."""
        pick = {m: max((self, other), key=lambda f: f.relative(m)) for m in METRICS}
        chosen = pick["rps"]
        measured = tuple(m for m in METRICS if pick[m].measured(m))
        return NoiseFloors(pick["rps"].rps, pick["p99_ms"].p99_ms, chosen.pair, chosen.cells,
                           measured)  # fmt: skip


def noise_floors(cells: pd.DataFrame) -> NoiseFloors:
    """The run's floors from its A/A pair(s) in ``analyze.cell_table`` rows (the largest, per
    metric, when several scenarios declare one); the defaults where none is usable."""
    best: dict[str, tuple[NoiseFloor, str, tuple[int, int]]] = {}
    for key, halves in _pairs(cells).items():
        first, second = halves
        for metric in METRICS:
            floor = noise_floor(_values(first, metric), _values(second, metric))
            if np.isfinite(floor.relative) and (
                metric not in best or floor.relative > best[metric][0].relative
            ):
                best[metric] = (floor, key, (len(first), len(second)))
    if not best:
        return NoiseFloors(default_floor("rps"), default_floor("p99_ms"))
    any_pair = next(iter(best.values()))
    floors = {m: best[m][0] if m in best else default_floor(m) for m in METRICS}
    return NoiseFloors(**floors, pair=any_pair[1], cells=any_pair[2],
                       measured_metrics=tuple(best))  # fmt: skip


def _pairs(cells: pd.DataFrame) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Per A/A level (closed loop only): its included regular cells and included copies."""
    if cells.empty or "replica" not in cells:
        return {}
    kept = cells[cells["included"] & (cells["rate"].fillna(0) == 0)]
    copies = kept[kept["replica"] == AA]
    pairs = {}
    for (scenario, server, users), second in copies.groupby(["scenario", "server", "users"]):
        first = kept[(kept["replica"] != AA) & (kept["scenario"] == scenario)
                     & (kept["server"] == server) & (kept["users"] == users)]  # fmt: skip
        if len(first) and len(second):
            pairs[f"{scenario} / {server} / {users} users"] = (first, second)
    return pairs


def _values(cells: pd.DataFrame, metric: str) -> np.ndarray:
    return cells[metric].to_numpy(dtype=float)

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

Two runs compared (``asyncbench compare``, a report's baseline) also drift *between* them, which
no pair inside one run can see: the machine served ``hello`` a third slower in one default run
than in the run 40 minutes before it, the same commit, and its 1-user p99 went 2.4× while each
run's own pair allowed ±107-141 %. ``between_runs`` reads the A/A levels the two runs share as
one pair, all of one run's cells against all of the other's; the gate judges by the larger.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

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
    across_runs: bool = False  # the halves are two runs' cells of the level (``between_runs``)
    # A scenario that measured its own A/A pair is judged by it (``for_scenario``): a
    # CPU-bound one moves with the machine far more than waiting does.
    scenarios: dict[str, NoiseFloors] = field(default_factory=dict, compare=False)

    def of(self, metric: str) -> NoiseFloor:
        return getattr(self, metric)

    def for_scenario(self, scenario: str) -> NoiseFloors:
        """The floors a level of ``scenario`` is judged by: its own pair's, else the run's."""
        return self.scenarios.get(scenario, self)

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
        if self.across_runs:
            return (f"Between the two runs, the A/A level {self.pair} moved within {floors}"
                    f"{default} ({self.cells[0]} + {self.cells[1]} cells): the machine's "
                    "drift, which no pair inside one run sees; a level regresses only beyond "
                    "the larger of this and the runs' own floors.")  # fmt: skip
        return (f"Noise floor {floors}{default}, measured by the A/A pair {self.pair} "
                f"({self.cells[0]} + {self.cells[1]} cells, shuffled among the others): a "
                "verdict calls a win only beyond it.")  # fmt: skip

    def sentences(self) -> list[str]:
        """``sentence``, then one for each scenario judged by a pair of its own."""
        own = [f"{name}: {floors.sentence()}" for name, floors in sorted(self.scenarios.items())
               if floors.pair != self.pair]  # fmt: skip
        return [self.sentence(), *own]

    def larger(self, other: NoiseFloors) -> NoiseFloors:
        """Per metric, whichever of two runs' floors is larger (comparing two runs); per
        scenario too, where either run measured one of its own."""
        pick = {m: max((self, other), key=lambda f: f.relative(m)) for m in METRICS}
        chosen = pick["rps"]
        measured = tuple(m for m in METRICS if pick[m].measured(m))
        own = {name: self.for_scenario(name)._larger_pair(other.for_scenario(name))
               for name in {*self.scenarios, *other.scenarios}}  # fmt: skip
        return NoiseFloors(pick["rps"].rps, pick["p99_ms"].p99_ms, chosen.pair, chosen.cells,
                           measured, chosen.across_runs, own)  # fmt: skip

    def _larger_pair(self, other: NoiseFloors) -> NoiseFloors:
        return replace(self.larger(replace(other, scenarios={})), scenarios={})


def noise_floors(cells: pd.DataFrame) -> NoiseFloors:
    """The run's floors from its A/A pairs in ``analyze.cell_table`` rows; the defaults where
    none is usable. Each scenario with a pair of its own is judged by it (``for_scenario``);
    the others by the largest pair, per metric, of the scenarios that wait (a CPU-bound
    scenario's pair, 20-30 % wide on this 2-core machine, would blunt every other verdict)."""
    found = {key: _pair_floors(key, halves) for key, halves in _pairs(cells).items()}
    return _judged_by(found, cells) or NoiseFloors(default_floor("rps"), default_floor("p99_ms"))


def between_runs(cells: pd.DataFrame, base_cells: pd.DataFrame) -> NoiseFloors | None:
    """The floors two runs' shared A/A levels show between them: each level's included cells
    (both halves) in one run against those in the other, shaped and chosen like
    ``noise_floors``. None when the runs share no A/A level. A change to the A/A level's own
    model moves it as much as drift does, so it widens these floors too (the caller may judge
    such a change by the within-run floors alone)."""
    now, before = _pairs(cells), _pairs(base_cells)
    found = {key: replace(_pair_floors(key, (pd.concat(now[key]), pd.concat(before[key]))),
                          across_runs=True)
             for key in now.keys() & before.keys()}  # fmt: skip
    return _judged_by(found, cells)  # a shared level's scenario is in both runs


def _judged_by(
    found: dict[tuple[str, str], NoiseFloors], cells: pd.DataFrame
) -> NoiseFloors | None:
    """The run-wide floors (the largest of the waiting scenarios' pairs, else of all), each
    scenario with a pair of its own judged by it; None without any pair."""
    waiting = {key: f for key, f in found.items() if _waits(cells, key[0])} or found
    if not waiting:
        return None
    run = _largest(waiting.values())
    return replace(run, scenarios={key[0]: f for key, f in found.items()})


def _pair_floors(key: tuple[str, str], halves: tuple[pd.DataFrame, pd.DataFrame]) -> NoiseFloors:
    first, second = halves
    floors = {m: noise_floor(_values(first, m), _values(second, m)) for m in METRICS}
    measured = tuple(m for m in METRICS if np.isfinite(floors[m].relative))
    floors = {m: floors[m] if m in measured else default_floor(m) for m in METRICS}
    return NoiseFloors(**floors, pair=key[1], cells=(len(first), len(second)),
                       measured_metrics=measured)  # fmt: skip


def _largest(pairs) -> NoiseFloors:
    """Per metric, the largest measured floor of ``pairs`` (a default where none measured)."""
    pairs = list(pairs)
    best = pairs[0]
    for other in pairs[1:]:
        best = best.larger(other)
    return best


def _waits(cells: pd.DataFrame, scenario: str) -> bool:
    delays = cells.loc[cells["scenario"] == scenario, "delay_ms"] if "delay_ms" in cells else []
    return bool(len(delays)) and bool((pd.to_numeric(delays, errors="coerce") > 0).any())


def _pairs(cells: pd.DataFrame) -> dict[tuple[str, str], tuple[pd.DataFrame, pd.DataFrame]]:
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
            pairs[scenario, f"{scenario} / {server} / {users} users"] = (first, second)
    return pairs


def _values(cells: pd.DataFrame, metric: str) -> np.ndarray:
    return cells[metric].to_numpy(dtype=float)

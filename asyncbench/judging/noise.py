"""The run's noise floor: what its A/A pair shows, or a documented conservative default.

An A/A pair is one level measured twice in the same run (``plan.AAPair``): its regular cells
and its ``replica`` "aa" cells, shuffled among all the others. Nothing differs between the two
halves but time and chance, so the difference they show (``comparison.noise_floor``: the larger
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

A room's pair (``room-longpoll``'s) is judged on its delivery p99 alone (``ROOM_METRICS``): a
room cell's rps is the offered message rate, the same for every model. Its floors are kept per
scenario, and the two never mix: a room pair's floor is never a request level's, nor a request
pair's a room level's; a room scenario without a pair of its own has the default room floor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy import stats

from asyncbench.judging.comparison import NOISE_FLOOR_COVERAGE, NoiseFloor, noise_floor
from asyncbench.planning.kinds import section_of_endpoint
from asyncbench.planning.plan import AA

# Conservative guesses, not measurements: about twice what A/A pairs of default runs showed on a
# 2-core VM (docs/DESIGN-NOTES.md); the room's, twice the 25-27 % its delivery p99 moved between
# two default runs of one commit. Used only when a run has no usable A/A pair.
DEFAULT_FLOORS = {"rps": 0.05, "p99_ms": 0.15, "delivery_p99_ms": 0.5}
METRICS = {"rps": "throughput", "p99_ms": "p99"}  # what a request level is judged on
ROOM_METRICS = {"delivery_p99_ms": "delivery p99"}  # what a room level is judged on
_DEFAULT_DF = 3  # a 2 + 2 pair


def default_floor(metric: str) -> NoiseFloor:
    """The default floor of ``metric`` as a 2 + 2 A/A pair would have shown it."""
    quantile = float(stats.t.ppf(0.5 + NOISE_FLOOR_COVERAGE / 2, _DEFAULT_DF))
    relative = DEFAULT_FLOORS[metric]
    return NoiseFloor(relative, math.nan, relative / quantile, _DEFAULT_DF)


@dataclass(frozen=True)
class NoiseFloors:
    """The floor per metric, measured by an A/A pair or the default: a request level's (``rps``,
    ``p99_ms``), or with ``room`` a room level's (``delivery_p99_ms`` alone: ``ROOM_METRICS``)."""

    rps: NoiseFloor
    p99_ms: NoiseFloor
    pair: str = ""  # the A/A level, e.g. "sleep / tornado-coroutine / 64 users"; "" when none
    cells: tuple[int, int] = (0, 0)  # included cells in each half
    measured_metrics: tuple[str, ...] = ()
    across_runs: bool = False  # the halves are two runs' cells of the level (``between_runs``)
    # A scenario that measured its own A/A pair is judged by it (``for_scenario``): a
    # CPU-bound one moves with the machine far more than waiting does. Every room scenario of
    # the run is here too (``room``): by its own pair, else by the default room floor.
    scenarios: dict[str, NoiseFloors] = field(default_factory=dict, compare=False)
    # A room's floors (``of_room``): only its delivery p99 is read; its rps and p99_ms are the
    # request defaults, never a room level's floor, and a request level never reads this one.
    room: bool = False
    delivery_p99_ms: NoiseFloor = field(default_factory=lambda: default_floor("delivery_p99_ms"))

    @classmethod
    def of_room(cls, delivery_p99_ms: NoiseFloor, **fields) -> NoiseFloors:
        """A room's floors: its delivery p99's."""
        return cls(default_floor("rps"), default_floor("p99_ms"), room=True,
                   delivery_p99_ms=delivery_p99_ms, **fields)  # fmt: skip

    @property
    def metrics(self) -> dict[str, str]:
        """The metrics these floors judge, with their names: a room's or a request level's."""
        return ROOM_METRICS if self.room else METRICS

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
        """For ``gate.regression_gate``: only the metrics these floors judge."""
        return {metric: self.of(metric) for metric in self.metrics}

    def sentence(self) -> str:
        """One line for the report and ``asyncbench compare`` ("" for the request floors of two
        runs that share no request A/A level)."""
        if self.room:
            return self._room_sentence()
        if self.across_runs and not self.pair:
            return ""
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

    def _room_sentence(self) -> str:
        width = f"±{self.relative('delivery_p99_ms') * 100:.1f} %"
        floor = f"delivery p99 {width}"
        if not self.measured("delivery_p99_ms"):
            return (f"{floor}, the default, conservative floor, not a measurement (no usable "
                    "A/A pair of its own): a room level regresses only beyond it.")  # fmt: skip
        if self.across_runs:
            return (f"between the two runs, the A/A level {self.pair} moved its delivery p99 "
                    f"within {width} ({self.cells[0]} + {self.cells[1]} cells): a room level "
                    "regresses only beyond the larger of this and the runs' own floors.")
        return (f"{floor}, measured by the A/A pair {self.pair} ({self.cells[0]} + "
                f"{self.cells[1]} cells, shuffled among the others): a room level regresses "
                "only beyond it.")  # fmt: skip

    def sentences(self) -> list[str]:
        """``sentence``, then one for each scenario judged by a pair of its own, and one for
        each room scenario."""
        own = [f"{name}: {floors.sentence()}" for name, floors in sorted(self.scenarios.items())
               if floors.room or floors.pair != self.pair]  # fmt: skip
        return [line for line in (self.sentence(), *own) if line]

    def larger(self, other: NoiseFloors) -> NoiseFloors:
        """Per metric, whichever of two runs' floors is larger (comparing two runs); per
        scenario too, where either run measured one of its own. A room's floors are only ever
        compared with a room's."""
        if self.room != other.room:
            raise ValueError("a room's noise floors are never a request level's")
        metrics = self.metrics
        pick = {m: max((self, other), key=lambda f: f.relative(m)) for m in metrics}
        chosen = pick[next(iter(metrics))]
        measured = tuple(m for m in metrics if pick[m].measured(m))
        own = {name: self._larger_own(other, name) for name in {*self.scenarios, *other.scenarios}}
        return replace(chosen, **{m: pick[m].of(m) for m in metrics}, measured_metrics=measured,
                       scenarios=own)  # fmt: skip

    def _larger_own(self, other: NoiseFloors, name: str) -> NoiseFloors:
        """A scenario's floors of two runs: a room's from the room floors alone (a run without
        them has none of its levels), a request scenario's as ``for_scenario`` finds them."""
        rooms = [f.scenarios[name] for f in (self, other)
                 if name in f.scenarios and f.scenarios[name].room]  # fmt: skip
        if rooms:
            return rooms[0]._larger_pair(rooms[-1]) if len(rooms) == 2 else rooms[0]
        return self.for_scenario(name)._larger_pair(other.for_scenario(name))

    def _larger_pair(self, other: NoiseFloors) -> NoiseFloors:
        return replace(self.larger(replace(other, scenarios={})), scenarios={})


# The request floors between two runs that share no request A/A level (only a room's): nothing
# seen, so the runs' own floors decide (``larger`` keeps the wider).
_NOTHING = NoiseFloor(0.0, math.nan, math.nan, 0)


def noise_floors(cells: pd.DataFrame) -> NoiseFloors:
    """The run's floors from its A/A pairs in ``analyze.cell_table`` rows; the defaults where
    none is usable. Each scenario with a pair of its own is judged by it (``for_scenario``);
    the others by the largest pair, per metric, of the scenarios that wait (a CPU-bound
    scenario's pair, 20-30 % wide on this 2-core machine, would blunt every other verdict). A
    room scenario is judged by its own pair's delivery p99, else by the default room floor;
    a room pair is never one of the request floors."""
    found = {key: _pair_floors(key, halves, cells) for key, halves in _pairs(cells).items()}
    run, own = _judged_by(found, cells)
    rooms = _room_scenarios(cells) - own.keys()
    own |= {name: NoiseFloors.of_room(default_floor("delivery_p99_ms")) for name in rooms}
    run = run or NoiseFloors(default_floor("rps"), default_floor("p99_ms"))
    return replace(run, scenarios=own)


def between_runs(cells: pd.DataFrame, base_cells: pd.DataFrame) -> NoiseFloors | None:
    """The floors two runs' shared A/A levels show between them: each level's included cells
    (both halves) in one run against those in the other, shaped and chosen like
    ``noise_floors``. None when the runs share no A/A level. A change to the A/A level's own
    model moves it as much as drift does, so it widens these floors too (the caller may judge
    such a change by the within-run floors alone)."""
    now, before = _pairs(cells), _pairs(base_cells)
    found = {key: replace(_pair_floors(key, (pd.concat(now[key]), pd.concat(before[key])),
                                       cells), across_runs=True)
             for key in now.keys() & before.keys()}  # fmt: skip
    if not found:
        return None
    run, own = _judged_by(found, cells)  # a shared level's scenario is in both runs
    return replace(run or NoiseFloors(_NOTHING, _NOTHING, across_runs=True), scenarios=own)


def _judged_by(
    found: dict[tuple[str, str], NoiseFloors], cells: pd.DataFrame
) -> tuple[NoiseFloors | None, dict[str, NoiseFloors]]:
    """The run-wide request floors (the largest of the waiting scenarios' pairs, else of all
    request pairs; None without one: a room's pair is never one of them), and each scenario
    with a pair of its own, room or request, judged by it."""
    requests = {key: f for key, f in found.items() if not f.room}
    waiting = {key: f for key, f in requests.items() if _waits(cells, key[0])} or requests
    run = _largest(waiting.values()) if waiting else None
    return run, {key[0]: f for key, f in found.items()}


def _pair_floors(
    key: tuple[str, str], halves: tuple[pd.DataFrame, pd.DataFrame], cells: pd.DataFrame
) -> NoiseFloors:
    """One A/A level's floors: a room's on its delivery p99, a request level's on rps and p99."""
    first, second = halves
    room = key[0] in _room_scenarios(cells)
    metrics = ROOM_METRICS if room else METRICS
    floors = {m: noise_floor(_values(first, m), _values(second, m)) for m in metrics}
    measured = tuple(m for m in metrics if np.isfinite(floors[m].relative))
    floors = {m: floors[m] if m in measured else default_floor(m) for m in metrics}
    shape = {"pair": key[1], "cells": (len(first), len(second)), "measured_metrics": measured}
    return NoiseFloors.of_room(**floors, **shape) if room else NoiseFloors(**floors, **shape)


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
    rooms = _room_scenarios(cells)
    pairs = {}
    for (scenario, server, users), second in copies.groupby(["scenario", "server", "users"]):
        first = kept[(kept["replica"] != AA) & (kept["scenario"] == scenario)
                     & (kept["server"] == server) & (kept["users"] == users)]  # fmt: skip
        unit = "members" if scenario in rooms else "users"
        if len(first) and len(second):
            pairs[scenario, f"{scenario} / {server} / {users} {unit}"] = (first, second)
    return pairs


def _room_scenarios(cells: pd.DataFrame) -> set[str]:
    """The scenarios whose cells are a room's (by their recorded endpoint)."""
    if cells.empty or "endpoint" not in cells:
        return set()
    rooms = cells["endpoint"].map(section_of_endpoint) == "room"
    return set(cells.loc[rooms, "scenario"])


def _values(cells: pd.DataFrame, metric: str) -> np.ndarray:
    return cells[metric].to_numpy(dtype=float)

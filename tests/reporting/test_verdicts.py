"""Verdict sentences computed from repeats (no processes)."""

from __future__ import annotations

import pandas as pd

from asyncbench.judging import analyze
from asyncbench.judging.noise import NoiseFloors, default_floor
from asyncbench.reporting.verdicts import _tie_beside_the_rest, alternatives_sentences
from servers import MODELS

FLOORS = NoiseFloors(default_floor("rps"), default_floor("p99_ms"))
ALTERNATIVE = next(name for name, spec in MODELS.items() if spec.compared_with)
REFERENCE, SLOWER = MODELS[ALTERNATIVE].compared_with[:2]


def cells(rps: dict[str, list[float]], p99: dict[str, list[float]]) -> pd.DataFrame:
    rows = [{"server": server, "load": 64.0, "included": True, "rps": r, "p99_ms": p}
            for server in rps for r, p in zip(rps[server], p99[server], strict=True)]  # fmt: skip
    return pd.DataFrame(rows)


def test_an_alternative_is_set_against_the_models_its_entry_names():
    frame = cells(
        {ALTERNATIVE: [600, 604, 598, 601], REFERENCE: [602, 599, 603, 600],
         SLOWER: [300, 302, 299, 301]},
        {ALTERNATIVE: [110, 111, 109, 110], REFERENCE: [110, 109, 111, 110],
         SLOWER: [230, 229, 231, 230]},
    )  # fmt: skip
    [sentence] = alternatives_sentences(frame, 64.0, [REFERENCE, ALTERNATIVE, SLOWER], FLOORS)
    label = MODELS[ALTERNATIVE].label
    assert sentence.startswith(f"{label} against {REFERENCE}: ")
    near, far = sentence.split(f"; against {SLOWER}: ")
    assert near.endswith(")") and ": throughput 1.00× (no clear difference; 95 % CI" in near
    assert far.startswith("throughput 2.00× (higher; 95 % CI") and ", p99 0.478× (lower" in far


def test_no_sentence_without_the_models_to_compare_with():
    frame = cells({ALTERNATIVE: [600, 601]}, {ALTERNATIVE: [110, 111]})
    assert alternatives_sentences(frame, 64.0, [ALTERNATIVE], FLOORS) == []
    plain = next(name for name, spec in MODELS.items() if not spec.compared_with)
    frame = cells({plain: [600, 601], REFERENCE: [300, 301]}, {plain: [1, 2], REFERENCE: [3, 4]})
    assert alternatives_sentences(frame, 64.0, [plain, REFERENCE], FLOORS) == []


def test_a_tie_at_the_top_says_how_many_tie_and_how_far_above_the_slowest_it_stands():
    """Seven-model runs headlined sleep as "No clear winner at 64 users: tornado-threadpool and
    flask-threaded differ by 1.00× ..." and stopped there, while two models served a sixteenth
    of that behind their four workers."""
    frame = cells({"a": [600, 604, 598], "b": [602, 599, 603], "c": [601, 600, 599],
                   "slow": [38, 38.5, 37.5]},
                  {"a": [1, 1, 1], "b": [1, 1, 1], "c": [1, 1, 1], "slow": [9, 9, 9]})  # fmt: skip
    found = analyze.compare_models(frame, 64.0, "a", ["b", "c", "slow"], FLOORS)
    others = pd.DataFrame({"server": ["b", "c", "slow"], "rps_median": [602.0, 600.0, 38.0]})
    said = _tie_beside_the_rest(found, others)
    assert said.startswith("; 3 models tie at the top, and a serves 15.8× slow's 38.0 req/s (95 %")
    clear = analyze.compare_models(frame, 64.0, "a", ["slow"], FLOORS)  # a wins: no tie to tell
    assert _tie_beside_the_rest(clear, others) == ""
    level = analyze.compare_models(frame, 64.0, "a", ["b", "c"], FLOORS)  # all tie: nobody below
    assert _tie_beside_the_rest(level, others) == ""

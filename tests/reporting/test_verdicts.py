"""Verdict sentences computed from repeats (no processes)."""

from __future__ import annotations

import pandas as pd

from asyncbench.judging.noise import NoiseFloors, default_floor
from asyncbench.reporting.verdicts import alternatives_sentences
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

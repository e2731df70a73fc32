"""The report's view model: a page section (one scenario's closed or open loop) and how numbers
are written on the page. Verdicts (``verdicts.py``) and tables (``tables.py``) build on it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd


@dataclass(frozen=True)
class Section:
    """One block of the page: a scenario's closed-loop (or open-loop) levels."""

    scenario: str
    loop: str  # "closed" (load = users) or "open" (load = offered req/s)
    spec: dict
    cells: pd.DataFrame
    agg: pd.DataFrame

    @property
    def name(self) -> str:
        return self.scenario if self.loop == "closed" else f"{self.scenario} (open loop)"

    @property
    def slug(self) -> str:
        return self.scenario if self.loop == "closed" else f"{self.scenario}-open"

    @property
    def load_title(self) -> str:
        return "concurrent users" if self.loop == "closed" else "offered load, req/s"

    def at(self, load: float) -> str:
        if self.loop == "open":
            return f"{load:g} req/s offered"
        return f"{load:g} user" if load == 1 else f"{load:g} users"


def when(epoch: float | None) -> str:
    if not epoch:
        return "—"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def rps(value) -> str:
    if missing(value):
        return "—"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def ms(value) -> str:
    if missing(value):
        return "—"
    return f"{value:,.0f}" if value >= 1000 else f"{value:.1f}"


def pct(value, plus: bool = True) -> str:
    if missing(value):
        return "—"
    return f"{value:+.0%}" if plus else f"{value:.1%}"


def ratio(value) -> str:
    return "—" if missing(value) else f"{value:.2f}×"


def cpus(*values) -> str:
    """Mean CPU over the window: % of a core (server, Locust), % of the machine (all)."""
    return " · ".join("—" if missing(v) else f"{v:.0f}%" for v in values)


def span(low, high, fmt) -> str:
    return "—" if missing(low) else f"{fmt(low)}–{fmt(high)}"

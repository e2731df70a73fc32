"""A scenario's pass/fail limits, k6-style, as its file's ``[thresholds]`` table states them.

Planning validates them with the scenario; judging applies them (``judging.gate``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields


class ComparisonInputError(ValueError):
    """Tables or thresholds that cannot be compared; the message is one line (CLI exit 2)."""


@dataclass(frozen=True)
class Thresholds:
    """A scenario's pass/fail limits, k6-style, checked against the mean over repeats."""

    max_p99_ms: float | None = None  # every level's p99 at most this
    min_rps: float | None = None  # every level's throughput at least this
    min_rps_ratio: float | None = None  # throughput ÷ the baseline's, at least this
    max_p99_ratio: float | None = None  # p99 ÷ the baseline's, at most this

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], where: str = "thresholds") -> Thresholds:
        """Validated from a scenario file's ``[thresholds]`` table; errors name the field."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ComparisonInputError(
                f"{where}: unknown threshold {unknown[0]!r} (known: {', '.join(sorted(known))})"
            )
        values = {}
        for name, value in data.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ComparisonInputError(f"{where}.{name}: expected a positive number, got "
                                           f"{value!r}")  # fmt: skip
            values[name] = float(value)
        return cls(**values)

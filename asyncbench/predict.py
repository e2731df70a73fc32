"""Predictions a cell's measurement is compared with (DESIGN rule 6).

Queueing theory for a sleep-like request: a closed loop of ``users`` with no think time against
a model that holds ``slots`` requests at once, each for ``delay``, serves
``min(users, slots) / delay``; an open loop offering ``rate`` gets ``min(rate, slots / delay)``.
"""

from __future__ import annotations


def predicted_rps(
    users: int, slots: float | None, delay_ms: int, rate: float = 0.0
) -> float | None:
    """The textbook throughput; None (closed loop) when there is no delay to model."""
    if slots is None or delay_ms <= 0:
        return rate or None
    capacity = slots / (delay_ms / 1000)
    return min(rate, capacity) if rate else min(users, slots) / (delay_ms / 1000)

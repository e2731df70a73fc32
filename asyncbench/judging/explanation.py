"""Each closed-loop request cell's second prediction (``predict.explained_rps``), from the
overhead and CPU demands its model showed at its lowest load: the numbers behind the limit the
report names."""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from asyncbench.judging.bottleneck import name_bottleneck, parse_counts, slot_use
from asyncbench.judging.predict import explained_rps
from servers import MODELS
from servers.registry import PER_WORKER


def with_explained_prediction(cells: pd.DataFrame) -> pd.DataFrame:
    """Each closed-loop request cell's second prediction (``predict.explained_rps``), from the
    overhead and CPU demands its model showed at its lowest load, and whether it explains the
    measurement within ``EXPLAINED_WITHIN``; none where that lowest load queued for slots."""
    cells = cells.assign(explained_rps=np.nan, explained_gap=np.nan)
    if cells.empty or "mean_ms" not in cells:
        return cells
    closed = cells[(cells["loop"] == "closed") & cells["included"] & cells["mean_ms"].notna()]
    for _, group in closed.groupby(["scenario", "server"]):
        base = group[group["users"] == group["users"].min()]
        if _slot_use(base.iloc[0]) == "queued":
            # Its lowest level already queues for slots: its round trip and handler time are the
            # queue's (the default's one longwait level, 512 users on tornado-threadpool's 64
            # threads, "explained" 8 req/s of the 64 it served). Nothing to explain it from.
            continue
        demands = {c: median_of(base, f"cpu_ms_{c}") for c in ("server", "locust", "upstream")}
        cores = _usable_cores(base.iloc[0])
        base_ms = median_of(base, "mean_ms")
        base_handler = median_of(base, _handler_column(base))
        base_outside = float((base["mean_ms"] - base.get("handler_mean_ms", np.nan)).median())
        for i, row in group.iterrows():
            share = _busiest_share(row)
            predicted = explained_rps(
                int(row["users"]), base_ms, row.get("slots"),
                _slot_hold_ms(row, base_ms, base_handler),
                _own_demands(row, demands), cores,
                busiest_share=share,
                processes=_server_processes(base.iloc[0]),
                split_ms=_round_trip_split(row, base_outside),
                process_users=process_counts(row, "process_users"),
            )  # fmt: skip
            if predicted:
                cells.loc[i, "explained_rps"] = predicted
                cells.loc[i, "explained_gap"] = row["rps"] / predicted - 1
                cells.loc[i, "bottleneck"] = name_bottleneck(cells.loc[i].to_dict())
    return cells


def _busiest_share(row: pd.Series) -> float | None:
    """The busiest process's share of the requests (``process_requests``), less the one
    request a count of requests started in the window may hold beyond its fair part ("36 35
    35 34" of 16 users on 4 processes is an even split, not a busiest process at 26 %), and
    never under an even split over the processes that served ("31 31 31 0" is a third each)."""
    counts = [n for n in process_counts(row, "process_requests") if n]
    if len(counts) < 2:
        return 1.0 if counts else None
    return max(1 / len(counts), (max(counts) - 1) / sum(counts))


def process_counts(row: pd.Series, column: str) -> tuple[int, ...]:
    """A per-process count column of a row, ``process_requests`` or ``process_users``."""
    return parse_counts(row.get(column))


def _round_trip_split(row: pd.Series, base_outside: float) -> tuple[float, float] | None:
    """The cell's mean handler time, and the time outside it: the lowest level's, plus the
    cell's own waits for the server's and Locust's CPU (``queue_server_ms``,
    ``queue_client_ms``: users in step arrive in trains), for users that all hold a slot:
    where users queue for slots, a handler that waits for its thread inside
    (tornado-threadpool) reports the queue, and the bound would be the measurement itself."""
    handler = row.get("handler_mean_ms")
    if handler is None or pd.isna(handler) or pd.isna(base_outside):
        return None
    if _slot_use(row) != "own":
        return None
    waits = (row.get(c) for c in ("queue_server_ms", "queue_client_ms"))
    queued = sum(float(w) for w in waits if w is not None and not pd.isna(w))
    return float(handler), base_outside + queued


def _slot_hold_ms(row: pd.Series, base_ms: float | None, base_handler: float | None) -> float:
    """How long a request holds its slot: the mean handler time it reports (``Server-Timing``;
    throughput is slots over the *mean* hold, and a slow tail moves the mean, not the median:
    1-user sql on flask-blocking with cold workers, p50 100.9 ms, mean 102.7 ms), else the
    round trip.

    A slot that is a whole worker process (flask-blocking's sync workers, tornado-forked's
    children) also does, one request at a time, everything around the handler: accept, parse,
    write, close. So it is held for the handler time plus the worker's CPU per request (which
    counts the handler's own computing twice, as on ``fetch``). Queued on the handler time
    alone, those cells ran 1.5-4 % under the bound (1.1-2.5 ms of work outside the handler in
    each 102 ms). Where users queue for slots, a model whose handler time starts before its
    slot is taken (tornado-threadpool waits for a pool thread inside its handler) reports the
    queue too, so the handler time at the lowest load (no queue) caps it."""
    handler = row.get(_handler_column(row))
    if handler is None or pd.isna(handler):
        return base_ms
    spec = MODELS.get(str(row["server"]))
    if spec and spec.concurrency is PER_WORKER:
        worker_cpu = row.get("cpu_ms_server")
        return float(handler) + (0.0 if worker_cpu is None or pd.isna(worker_cpu) else worker_cpu)
    queued = _slot_use(row) == "queued"
    if queued and base_handler is not None and not pd.isna(base_handler):
        return min(float(handler), base_handler)
    return float(handler)


def _slot_use(row: pd.Series) -> str:
    return slot_use(row["server"], row["users"], row.get("slots"), row.get("workers"))


def _handler_column(cells: pd.Series | pd.DataFrame) -> str:
    """The mean handler time where the cells have it; the median in rows from before schema 7
    whose samples are gone."""
    mean = cells.get("handler_mean_ms")
    return "handler_mean_ms" if mean is not None and np.all(pd.notna(mean)) else "handler_p50_ms"


def _own_demands(row: pd.Series, lowest: dict) -> dict[str, float]:
    """The cell's own CPU demands (they include the contention at its load); the lowest
    level's where the cell has none."""
    demands = {}
    for component, fallback in lowest.items():
        own = row.get(f"cpu_ms_{component}")
        value = fallback if own is None or pd.isna(own) else own
        if value is not None and not pd.isna(value):
            demands[component] = float(value)
    return demands


def _server_processes(row: pd.Series) -> int:
    spec = MODELS.get(str(row["server"]))
    return int(row["workers"]) if spec and spec.multi_process else 1


def _usable_cores(row: pd.Series) -> dict[str, float]:
    machine = float(os.cpu_count() or 1)
    return {"server": min(_server_processes(row), machine),
            "locust": float(row.get("locust_processes") or 1), "upstream": 1.0,
            "machine": machine}  # fmt: skip


def median_of(frame: pd.DataFrame, column: str) -> float:
    if column not in frame or frame[column].isna().all():
        return math.nan
    return float(frame[column].median())

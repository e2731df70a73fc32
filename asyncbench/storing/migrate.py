"""Upgrading stored run directories: one explicit migration per schema version (as asv does).

Every file of a run directory carries the schema version that wrote it: ``run.json`` in its
``schema_version`` key, ``results.csv`` in a ``schema_version`` column, each parquet file in its
metadata (``asyncbench_schema``). Files are upgraded in memory when read, one version at a time;
the next write stores them at the current version. A version this code does not know is refused
with a message that says what to do.

Versions:
  1 — first version (no version in results.csv or the parquet files).
  2 — model entries in run.json say ``concurrency``/``slot_unit`` instead of ``blocking`` and
      ``keep_alive`` instead of ``client_keep_alive``; invocations are typed records; results.csv
      has ``cpu_locust_max`` and ``abandoned`` and a ``schema_version`` column; samples have a
      ``user`` column (-1 where unknown); every file carries its version.
  3 — results.csv gains ``threads``, ``slot_limit``, ``spawn``, ``defaults``, idle RSS, RSS per
      request in flight and requests per serving process; resource samples may carry
      ``process_requests`` and an ``idle`` row taken before the load.
  4 — results.csv: ``rps`` is the exact estimator (closed loop: each user's cycles; open loop:
      completions over the exact window), beside it ``rps_count`` (the count-based figure every
      earlier version stored as ``rps``), ``rps_stderr`` (req/s), ``rps_rel_stderr`` (a fraction
      of ``rps``) and ``rps_method``; ``replica`` ("aa" for the copy of an A/A pair, else "").
      Older rows get ``rps_count = rps``, method "count", no standard error.
      And the chat room: results.csv gains the room's columns (members held, deliveries, lost,
      delivery and probe percentiles, memory per member); samples carry the request's
      ``endpoint`` and ``server_ms`` (the handler time from ``Server-Timing``); a room cell's
      deliveries and published messages are stored beside them; results.csv splits latency
      into handler and outside time and names each cell's bottleneck.
  5 — the room over WebSocket: results.csv gains ``members_connected`` and ``reconnects``
      (empty for long-poll cells) and ``cpu_ms_per_delivery``; resource samples may carry
      ``room_sockets`` (the bus's gauge of open sockets). And results.csv stores the second
      prediction (``explained_rps``, ``explained_gap``), so far computed only in the report.
  6 — the warm-up ends once every user has settled (at most ``warmup_s``): results.csv gains
      ``warmup_used_s``, the warm-up a cell actually had (empty before: it was ``warmup_s``).
  7 — results.csv gains ``handler_mean_ms``, the mean handler time (``Server-Timing``): with
      ``mean_ms`` it splits the round trip the second prediction reads (empty before;
      ``asyncbench report`` recomputes it from the samples).
  8 — samples gain ``server_pid``, the process that answered (``UNKNOWN_PID``, -1, before);
      results.csv gains ``process_users``, how many users each serving process answered when
      every user stayed with one (most first; empty before and where they moved).
  9 — results.csv gains ``queue_server_ms`` and ``queue_client_ms``, the mean wait the window's
      requests met for the server's and Locust's CPU in the order they came (empty before;
      ``asyncbench report`` recomputes them from the samples).
  10 — profiles: results.csv gains ``repeat_reason``, why a repeat the default profile added
      ran (empty before: every repeat was asked for); run.json's settings say ``full`` and
      ``second_repeats``.
  11 — adaptive windows: results.csv gains ``window_reason``, why the window ended when it did
      ("fixed", "precise: ...", "cap: ..."; empty before: every window was fixed).
"""

from __future__ import annotations

import math

import pandas as pd

SCHEMA_VERSION = 11
PARQUET_SCHEMA_KEY = b"asyncbench_schema"
UNKNOWN_USER = -1
UNKNOWN_PID = -1


class SchemaError(ValueError):
    """A stored file of a schema version this asyncbench cannot read."""


def upgrade_meta(data: dict, where: str) -> dict:
    """``run.json`` contents at the current version."""
    version = data.get("schema_version")
    _check_known(version, where)
    for step in range(version, SCHEMA_VERSION):
        data = _META_STEPS[step](dict(data))
        data["schema_version"] = step + 1
    return data


def upgrade_results(table: pd.DataFrame, where: str) -> pd.DataFrame:
    """``results.csv`` at the current version (a file without the column is version 1).

    Rows of one file share its columns, so each step upgrades the whole table from the oldest
    row's version on; steps only add what is missing, so newer rows pass through unchanged.
    """
    stored = table["schema_version"].dropna() if "schema_version" in table else pd.Series([1])
    versions = {int(v) for v in stored} or {SCHEMA_VERSION}
    for version in versions:
        _check_known(version, where)
    for step in range(min(versions), SCHEMA_VERSION):
        table = _RESULTS_STEPS[step](table)
    return table.assign(schema_version=SCHEMA_VERSION)


def upgrade_samples(frame: pd.DataFrame, version: int, where: str) -> pd.DataFrame:
    """One cell's raw samples at the current version."""
    _check_known(version, where)
    if version < 2 and "user" not in frame:
        frame = frame.assign(user=UNKNOWN_USER)
    if version < 4 and "endpoint" not in frame:
        frame = frame.assign(endpoint="")
    if version < 4 and "server_ms" not in frame:
        frame = frame.assign(server_ms=math.nan)
    if version < 8 and "server_pid" not in frame:
        frame = frame.assign(server_pid=UNKNOWN_PID)
    return frame


def upgrade_resources(frame: pd.DataFrame, version: int, where: str) -> pd.DataFrame:
    """One cell's resource samples at the current version (unchanged so far)."""
    _check_known(version, where)
    return frame


def _check_known(version, where: str) -> None:
    if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        raise SchemaError(
            f"{where} has schema version {version!r}, this asyncbench reads versions 1 to "
            f"{SCHEMA_VERSION}: use the asyncbench version that wrote it, or rerun it with "
            "`asyncbench run`"
        )


def _meta_1_to_2(data: dict) -> dict:
    servers = {}
    for name, conf in data.get("servers", {}).items():
        conf = dict(conf)
        if "client_keep_alive" in conf:
            conf["keep_alive"] = conf.pop("client_keep_alive")
        if "blocking" in conf:
            blocking = conf.pop("blocking")
            conf["concurrency"] = "workers" if blocking else "event loop"
            conf["slot_unit"] = "workers" if blocking else "slots"
        servers[name] = conf
    data["servers"] = servers
    return data


def _results_1_to_2(table: pd.DataFrame) -> pd.DataFrame:
    missing = {c: math.nan for c in ("cpu_locust_max", "abandoned") if c not in table}
    return table.assign(**missing)


def _results_2_to_3(table: pd.DataFrame) -> pd.DataFrame:
    added = {"rss_server_idle_mb": math.nan, "rss_per_inflight_kb": math.nan,
             "process_requests": "", "busiest_process_share": math.nan, "threads": math.nan,
             "slot_limit": "", "spawn": "all at once", "defaults": "sized"}  # fmt: skip
    return table.assign(**{k: v for k, v in added.items() if k not in table})


ROOM_COLUMNS = ("message_rate", "messages", "delivered", "lost", "duplicates", "out_of_order",
                "delivery_p50_ms", "delivery_p99_ms", "delivery_max_ms", "last_member_p50_ms",
                "members_held", "members_held_max", "predicted_held", "member_errors",
                "probe_p50_ms", "probe_p99_ms", "mem_per_member_kb")  # fmt: skip


WHY_COLUMNS = ("handler_p50_ms", "outside_p50_ms", "accept_queue_max", "loop_lag_max_ms",
               "cpu_ms_server",
               "cpu_ms_locust", "cpu_ms_upstream", "cpu_ms_mariadb")  # fmt: skip


def _results_3_to_4(table: pd.DataFrame) -> pd.DataFrame:
    # Every earlier version stored the count-based figure as ``rps``; ``asyncbench report``
    # re-evaluates cells whose samples are kept, so only sample-less (failed) rows keep these.
    added = {"rps_count": table["rps"] if "rps" in table else math.nan,
             "rps_stderr": math.nan, "rps_rel_stderr": math.nan, "rps_method": "count",
             "replica": "", "transport": "", "bottleneck": "",
             **dict.fromkeys(ROOM_COLUMNS, math.nan),
             **dict.fromkeys(WHY_COLUMNS, math.nan)}  # fmt: skip
    return table.assign(**{k: v for k, v in added.items() if k not in table})


SOCKET_COLUMNS = ("members_connected", "reconnects", "cpu_ms_per_delivery", "explained_rps",
                  "explained_gap")  # fmt: skip


def _results_4_to_5(table: pd.DataFrame) -> pd.DataFrame:
    added = dict.fromkeys(SOCKET_COLUMNS, math.nan)
    return table.assign(**{k: v for k, v in added.items() if k not in table})


def _results_5_to_6(table: pd.DataFrame) -> pd.DataFrame:
    return table if "warmup_used_s" in table else table.assign(warmup_used_s=math.nan)


def _results_6_to_7(table: pd.DataFrame) -> pd.DataFrame:
    return table if "handler_mean_ms" in table else table.assign(handler_mean_ms=math.nan)


def _results_7_to_8(table: pd.DataFrame) -> pd.DataFrame:
    return table if "process_users" in table else table.assign(process_users="")


def _results_8_to_9(table: pd.DataFrame) -> pd.DataFrame:
    added = dict.fromkeys(("queue_server_ms", "queue_client_ms"), math.nan)
    return table.assign(**{k: v for k, v in added.items() if k not in table})


def _meta_9_to_10(data: dict) -> dict:
    # Runs before profiles swept every level twice, as ``--full`` does now: say so, so that a
    # resume plans the same cells.
    invocations = data.get("invocations")
    records = [data.get("settings")]
    if isinstance(invocations, list):
        records += [i.get("settings") for i in invocations if isinstance(i, dict)]
    for record in records:
        if isinstance(record, dict) and not record.get("quick"):
            record.setdefault("full", True)
    return data


def _results_9_to_10(table: pd.DataFrame) -> pd.DataFrame:
    return table if "repeat_reason" in table else table.assign(repeat_reason="")


def _results_10_to_11(table: pd.DataFrame) -> pd.DataFrame:
    return table if "window_reason" in table else table.assign(window_reason="")


_META_STEPS = {1: _meta_1_to_2, 2: lambda data: data, 3: lambda data: data,
               4: lambda data: data, 5: lambda data: data, 6: lambda data: data,
               7: lambda data: data, 8: lambda data: data, 9: _meta_9_to_10,
               10: lambda data: data}  # fmt: skip
_RESULTS_STEPS = {1: _results_1_to_2, 2: _results_2_to_3, 3: _results_3_to_4,
                  4: _results_4_to_5, 5: _results_5_to_6, 6: _results_6_to_7,
                  7: _results_7_to_8, 8: _results_8_to_9, 9: _results_9_to_10,
                  10: _results_10_to_11}  # fmt: skip

"""The records that cross the file boundary: one cell's result (a row of ``results.csv``), one
invocation, and the run's metadata (``run.json``). Versioned by ``migrate.SCHEMA_VERSION``;
the run directory (``store``) reads and writes them."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from asyncbench.storing.migrate import (
    SCHEMA_VERSION,
)


@dataclass(frozen=True)
class Invocation:
    """One ``asyncbench run`` into a run directory: what it asked for and how it ended."""

    started: float
    seed: int
    settings: dict
    cells: list[str]  # the cell ids it planned to run
    command: list[str]
    resumed: bool = False
    scenarios: dict = field(default_factory=dict)  # name -> the Scenario as it ran
    finished: float | None = None
    status: str = "running"
    reason: str = ""  # why it stopped, when it did not complete
    # Where its wall time went: the cells' measured windows, their warm-ups, the rest
    # (server and Locust start-up, verification, stops), and building the report.
    measured_s: float = 0.0
    warmup_s: float = 0.0
    report_s: float | None = None
    wall_s: float | None = None  # from its start to its report written
    outside_share: float | None = None  # of wall_s, the time outside every measured window
    phases: dict = field(default_factory=dict)  # seconds per stage of the cells (PhaseClock)
    second_repeats: dict = field(default_factory=dict)  # cell id -> why the profile added it
    stage_shares: dict = field(default_factory=dict)  # each stage's share of ``wall_s``
    profile: str = ""  # "default", "full" or "quick" (empty before profiles)

    def timed(self, finished: float, report_s: float) -> Invocation:
        """This invocation with its wall time, the share outside the windows and each stage's
        share filled in (``other``: planning, the display, and what no stage timed)."""
        wall = finished - self.started + report_s
        share = 1 - self.measured_s / wall if wall > 0 else None
        shares = {}
        if wall > 0:
            stages = {**self.phases, "report": report_s}
            stages["other"] = max(0.0, wall - sum(stages.values()))
            shares = {stage: round(seconds / wall, 4) for stage, seconds in stages.items()}
        return replace(self, report_s=round(report_s, 2), wall_s=round(wall, 2),
                       outside_share=None if share is None else round(share, 4),
                       stage_shares=shares)  # fmt: skip


@dataclass(frozen=True)
class CellResult:
    """One row of ``results.csv``: what one cell measured, and whether it can be trusted."""

    cell_id: str
    scenario: str
    server: str
    users: int
    repeat: int
    status: str  # "ok", "invalid" (measured but untrustworthy) or "failed" (not measured)
    valid: bool
    reason: str
    endpoint: str
    delay_ms: int
    workers: int
    slots: float | None  # how many requests the model can hold at once (rule 6)
    predicted_rps: float | None
    warmup_s: float  # the longest warm-up the scenario allows
    measure_s: float
    window_start: float | None = None  # epoch seconds; samples that started inside count
    window_end: float | None = None
    warmup_used_s: float | None = None  # spawned to window: until every user settled, at most
    window_reason: str = ""  # why the window ended then: "fixed", "precise: ...", "cap: ..."
    requests: int = 0
    failures: int = 0
    rps: float | None = None  # the exact estimator (``throughput``): cycles, not a count
    rps_count: float | None = None  # requests started (open loop: completed) in the window / T
    rps_stderr: float | None = None  # standard error of ``rps``, req/s
    rps_rel_stderr: float | None = None  # the same as a fraction of ``rps``
    rps_method: str = ""  # how ``rps`` was estimated (and why, when it fell back to the count)
    mean_ms: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    p999_ms: float | None = None
    max_ms: float | None = None
    cpu_server: float | None = None  # mean % of one core over the window
    cpu_locust: float | None = None  # summed over every Locust process
    cpu_locust_max: float | None = None  # the busiest Locust process
    cpu_upstream: float | None = None
    cpu_mariadb: float | None = None
    cpu_machine: float | None = None  # mean % of the whole machine
    rss_server_mb: float | None = None
    rss_server_idle_mb: float | None = None  # before the load started
    rss_per_inflight_kb: float | None = None  # (RSS − idle RSS) / requests in flight
    process_requests: str = ""  # requests each serving process answered in the window
    busiest_process_share: float | None = None  # the busiest process's share of them
    process_users: str = ""  # users each process answered, most first, where none moved
    threads_connected_max: float | None = None
    locust_requests: int | None = None  # Locust's own count, to prove no sample was lost
    recorded_samples: int | None = None
    abandoned: int | None = None  # unanswered when Locust stopped (no sample exists for them)
    rate: float = 0.0  # open loop: offered requests per second (0: closed loop)
    offered_rps: float | None = None
    late_sends: int | None = None  # sent more than analyze.LATE_SEND_MS after intended time
    dropped_sends: int | None = None  # due in the window but never sent
    p50_uncorrected_ms: float | None = None  # open loop: from the actual send, for comparison
    p99_uncorrected_ms: float | None = None
    locust_processes: int = 1
    threads: int | None = None  # threaded models: threads per process
    slot_limit: str = ""  # what binds the slots, e.g. "AsyncHTTPClient max_clients = 10"
    spawn: str = ""  # how Locust opened its users: "all at once" or "N users/s"
    defaults: str = "sized"  # pool sizes: the harness's ("sized") or the libraries' ("library")
    handler_p50_ms: float | None = None  # the model's own Server-Timing
    outside_p50_ms: float | None = None  # latency outside the handler: queue, loop, transport
    handler_mean_ms: float | None = None  # the mean handler time (the second prediction's)
    queue_server_ms: float | None = None  # mean wait for the server's CPU, in arrival order
    queue_client_ms: float | None = None  # mean wait for Locust's CPU, in answer order
    accept_queue_max: float | None = None  # connections waiting in the listen backlog
    loop_lag_max_ms: float | None = None  # the worst event-loop lag (Tornado models)
    bottleneck: str = ""  # what limits the cell (asyncbench.bottleneck)
    cpu_ms_server: float | None = None  # CPU milliseconds per completed request
    cpu_ms_locust: float | None = None
    cpu_ms_upstream: float | None = None
    cpu_ms_mariadb: float | None = None
    # The second prediction (``predict.explained_rps``, from the overhead and CPU demands its
    # model showed at its lowest load; filled in as the run's cells arrive) and the gap to it.
    explained_rps: float | None = None
    explained_gap: float | None = None
    # A room's (``users`` are its members; ``rps`` its deliveries per second):
    transport: str = ""
    message_rate: float | None = None
    messages: int | None = None  # published in the window
    delivered: int | None = None
    lost: int | None = None
    duplicates: int | None = None
    out_of_order: int | None = None
    delivery_p50_ms: float | None = None
    delivery_p99_ms: float | None = None
    delivery_max_ms: float | None = None
    last_member_p50_ms: float | None = None
    members_held: float | None = None  # polls held at once (the bus's gauge, window mean)
    members_held_max: float | None = None
    predicted_held: float | None = None  # min(members, slots)
    member_errors: int | None = None
    probe_p50_ms: float | None = None
    probe_p99_ms: float | None = None
    mem_per_member_kb: float | None = None
    members_connected: int | None = None  # WebSocket: members that got their socket
    reconnects: int | None = None  # WebSocket: sockets opened again after a drop
    cpu_ms_per_delivery: float | None = None  # server CPU ms per (member, message) delivered
    target: str | None = None  # set when the server was started elsewhere
    replica: str = ""  # "aa": the second half of the A/A pair (same level measured again)
    repeat_reason: str = ""  # why a repeat the default profile adds ran (``plan``, ``repeats``)
    order: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def columns(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass
class RunMeta:
    """``run.json``: everything needed to understand and reproduce the run."""

    run_id: str
    created: float
    status: str = "running"  # running, complete, interrupted, failed
    reason: str = ""  # why the last invocation stopped (e.g. the disk filled), if it did
    schema_version: int = SCHEMA_VERSION
    updated: float = 0.0
    seed: int = 0
    settings: dict = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    servers: dict = field(default_factory=dict)  # model -> configuration shown in the report
    services: dict = field(default_factory=dict)  # database, upstream, locust
    machine: dict = field(default_factory=dict)
    packages: dict = field(default_factory=dict)
    scenarios: dict = field(default_factory=dict)
    planned_cells: list[str] = field(default_factory=list)
    invocations: list[Invocation] = field(default_factory=list)

    @classmethod
    def from_stored(cls, data: dict) -> RunMeta:
        """From ``run.json`` contents already upgraded to the current version."""
        known = {f.name for f in fields(cls)}
        meta = cls(**{k: v for k, v in data.items() if k in known})
        meta.invocations = [
            i if isinstance(i, Invocation) else _invocation(i) for i in meta.invocations
        ]
        return meta


def _invocation(data: dict) -> Invocation:
    known = {f.name for f in fields(Invocation)}
    return Invocation(**{k: v for k, v in data.items() if k in known})

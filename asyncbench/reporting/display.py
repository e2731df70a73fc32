"""The live progress display of ``asyncbench run`` (rich), hung off the runner's hooks."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from asyncbench.planning.plan import Cell
from asyncbench.storing.records import CellResult
from asyncbench.storing.store import RunDir
from loadtests.protocol import Progress as LocustProgress


class RichDisplay:
    """Which cell runs, its elapsed time and live rps, how many cells are left, and an ETA.

    It answers every one of the runner's hooks (``measuring.run.RunHooks``) without importing
    the runner: the display reads what measuring announces, and measuring never calls
    reporting."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"),
            console=self.console,
            transient=False,
            disable=not self.console.is_terminal,  # piped output gets the per-cell lines only
        )
        self._matrix = None
        self._remaining_s = 0.0
        self._cell_started = 0.0
        self._cell_expected = 0.0
        self._last: LocustProgress | None = None
        self._rate = 0.0

    def __enter__(self) -> RichDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/] {message}")

    def run_started(self, run: RunDir, cells: list[Cell], estimate_s: float) -> None:
        self.console.print(f"run [bold]{run.run_id}[/]: {len(cells)} cells, about "
                           f"{estimate_s / 60:.0f} min → {run.path}")  # fmt: skip
        self._remaining_s = estimate_s
        self._matrix = self.progress.add_task("matrix", total=len(cells), eta=self._eta())

    def repeats_added(self, cells: list[Cell], estimate_s: float) -> None:
        self.console.print(f"{len(cells)} second repeats where one did not settle the answer, "
                           f"about {estimate_s / 60:.1f} min more")  # fmt: skip
        self._remaining_s += estimate_s
        total = self.progress.tasks[0].total if self.progress.tasks else 0
        self.progress.update(self._matrix, total=(total or 0) + len(cells), eta=self._eta())

    def cell_started(self, cell: Cell, index: int, expected_s: float) -> None:
        self._cell_started, self._cell_expected = time.monotonic(), expected_s
        self._last, self._rate = None, 0.0
        self._describe(cell)

    def cell_progress(self, cell: Cell, progress: LocustProgress) -> None:
        if self._last and progress.t > self._last.t:
            self._rate = (progress.requests - self._last.requests) / (progress.t - self._last.t)
        self._last = progress
        self._describe(cell)

    def cell_finished(self, cell: Cell, result: CellResult) -> None:
        self._remaining_s = max(0.0, self._remaining_s - self._cell_expected)
        self.progress.update(self._matrix, advance=1, eta=self._eta())
        self.console.print(_summary(result))

    def run_finished(self, run: RunDir, invocation) -> None:
        if invocation.wall_s is None or invocation.outside_share is None:
            return
        self.console.print(
            f"{len(invocation.cells)} cells in {invocation.wall_s / 60:.1f} min (report "
            f"{invocation.report_s or 0:.0f} s); {invocation.outside_share:.0%} of the time "
            f"outside the measured windows ({invocation.warmup_s:.0f} s of warm-up)"
        )
        shares = invocation.stage_shares
        outside = {k: v for k, v in invocation.phases.items() if k != "window" and v >= 0.5}
        if outside:
            self.console.print("  outside the windows: " + ", ".join(
                f"{stage.replace('_', ' ')} {seconds:.0f} s ({shares.get(stage, 0):.0%})"
                for stage, seconds in outside.items()
            ) + f", other {shares.get('other', 0):.0%}")  # fmt: skip

    def _describe(self, cell: Cell) -> None:
        elapsed = time.monotonic() - self._cell_started
        text = (
            f"{cell.scenario} · {cell.server} · {cell.users} users · r{cell.repeat}  "
            f"{elapsed:4.0f}s  {self._rate:7.1f} req/s"
        )
        remaining = self._remaining_s - min(elapsed, self._cell_expected)
        self.progress.update(self._matrix, description=text, eta=self._eta(remaining))

    def _eta(self, remaining_s: float | None = None) -> str:
        remaining_s = self._remaining_s if remaining_s is None else remaining_s
        minutes, seconds = divmod(int(max(0, remaining_s)), 60)
        return f"ETA {minutes}:{seconds:02d}"


def _summary(r: CellResult) -> str:
    head = f"{r.scenario:5} {r.server:17} u={r.users:<3} r{r.repeat}"
    if r.status == "failed":
        return f"{head} [red]failed[/]: {r.reason}"
    predicted = f" (pred {r.predicted_rps:.0f})" if r.predicted_rps else ""
    latency = f"p50 {r.p50_ms or 0:.1f} p99 {r.p99_ms or 0:.1f} ms"
    if r.message_rate:  # a room: deliveries, not requests
        latency = (f"held {r.members_held_max or 0:.0f}/{r.predicted_held or 0:.0f} "
                   f"lost {r.lost or 0} delivery p99 {r.delivery_p99_ms or 0:.1f} ms")  # fmt: skip
    line = f"{head} {r.rps:7.1f} rps{predicted} {latency}"
    return line if r.valid else f"{line}  [yellow]invalid[/]: {r.reason}"

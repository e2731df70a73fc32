"""The live display answers every hook the runner calls (no processes)."""

from __future__ import annotations

import inspect
import io

from rich.console import Console

from asyncbench.measuring.run import RunHooks
from asyncbench.reporting.display import RichDisplay


def test_the_display_answers_every_runner_hook_with_the_same_parameters():
    members = inspect.getmembers(RunHooks, inspect.isfunction)
    hooks = [name for name, _ in members if not name.startswith("_")]
    assert hooks  # the runner announces something
    for name in hooks:
        mine = getattr(RichDisplay, name, None)
        assert mine is not None, f"RichDisplay has no {name}"
        expected = list(inspect.signature(getattr(RunHooks, name)).parameters)
        assert list(inspect.signature(mine).parameters) == expected, name


def test_a_warning_reaches_the_console():
    out = io.StringIO()
    display = RichDisplay(Console(file=out, width=120))
    display.warn("the disk is nearly full")
    assert "the disk is nearly full" in out.getvalue()

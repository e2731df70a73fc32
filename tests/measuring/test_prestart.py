"""A Locust process started ahead of its cell (``loadtests/prestart.py``), as a real process:
it runs only what it is handed, and an unused one goes away by itself."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PRESTART = [sys.executable, "-m", "loadtests.prestart"]


def hand(line: str) -> subprocess.CompletedProcess:
    return subprocess.run(PRESTART, input=line, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("line", ["", "\n"])
def test_an_unused_prestarted_locust_exits_cleanly_at_the_end_of_its_input(line):
    done = hand(line)
    assert done.returncode == 0 and done.stderr == ""


@pytest.mark.parametrize("line", ['{"-f": "x"}\n', '["--headless", 3]\n'])
def test_a_command_line_that_is_not_a_list_of_strings_is_refused_in_one_line(line):
    done = hand(line)
    assert done.returncode == 2
    assert done.stderr.startswith("prestart: expected a JSON list of arguments")
    assert len(done.stderr.strip().splitlines()) == 1


def test_the_command_line_it_is_handed_is_locusts():
    done = hand(json.dumps(["--version"]) + "\n")
    assert done.returncode == 0
    assert "locust" in (done.stdout + done.stderr).lower()

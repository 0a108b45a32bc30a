"""The command line's progress bar on a terminal, including steps before the metric is measured."""

from __future__ import annotations

import io

from kvlock.progress import StepProgress
from kvlock_cli.progress import Reporter


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def step(h: float | None) -> StepProgress:
    return StepProgress(0, 1, 0, 4, 0.9, h, 0.0, 5.0, 1.0, "off", 0.1, 3.0)


def test_the_bar_shows_a_dash_until_h_is_measured_then_its_value():
    err = Terminal()
    reporter = Reporter(json_lines=False, stream=io.StringIO(), err=err)
    reporter.step(step(None))  # h is None before the metric window is full
    reporter.step(step(0.01234))
    first, second = err.getvalue().split("\r")[1:]
    assert "h=— " in first and "h=0.0123 " in second

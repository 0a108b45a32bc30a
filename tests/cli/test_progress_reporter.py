"""The command line's progress bars on a terminal (tqdm's, with the engine's own figures), and nothing of them
in JSON mode."""

from __future__ import annotations

import io
import json
import signal
import threading
import time

from kvlock.progress import StepProgress
from kvlock_cli.edit import _Interrupt
from kvlock_cli.progress import Reporter


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def step(index: int, h: float | None, total: int = 4, eta: float = 3.0) -> StepProgress:
    return StepProgress(0, 1, index, total, 0.9, h, 0.0, 5.0, 1.0, "off", 0.1, eta)


def test_the_bar_shows_a_dash_until_h_is_measured_then_its_value():
    err = Terminal()
    reporter = Reporter(json_lines=False, stream=io.StringIO(), err=err)
    reporter.step(step(0, None))  # h is None before the metric window is full
    reporter.step(step(1, 0.01234, eta=17.0))
    shown = err.getvalue()
    first, second = shown.index("step 1/4, h=— "), shown.index("step 2/4, h=0.0123 ")
    assert first < second and "ETA 17s" in shown[second:] and "window 1/1" in shown


def test_a_batch_shows_its_shots_above_the_steps_and_lines_above_both():
    err = Terminal()
    reporter = Reporter(json_lines=False, stream=io.StringIO(), err=err)
    reporter.begin_shots(3)
    reporter.step(step(0, None, total=2), shot=0)
    reporter.shot("shot 1/3 A001: done", finished=True, shot=0)
    reporter.shot("shot 2/3 A002: skipped", finished=True, shot=1)
    reporter.result("wrote cut.kvlock.otio")
    shown = err.getvalue()
    assert "0/3 shots" in shown and "2/3 shots" in shown and "step 1/2" in shown
    assert "shot 1/3 A001: done" in shown and shown.index("1/3 shots") > shown.index("A001: done")


def test_json_lines_carry_the_figures_and_no_bar():
    out, err = io.StringIO(), Terminal()
    reporter = Reporter(json_lines=True, stream=out, err=err)
    reporter.begin_shots(2)
    reporter.step(step(1, 0.5), shot=1)
    reporter.shot("x", finished=True, shot=1, state="done")
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["batch", "progress", "shot"]
    assert events[1]["shot"] == 1 and events[1]["step"] == 1 and events[1]["total"] == 4
    assert err.getvalue() == ""


class WriterLog(io.StringIO):
    """A stream that remembers which thread wrote each line."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[int] = []

    def write(self, text: str) -> int:
        self.threads.append(threading.get_ident())
        return super().write(text)


def test_ctrl_c_writes_nothing_from_the_signal_handler_and_the_notice_still_comes():
    """A signal handler runs on the main thread between two bytecodes; writing from it into a buffered stream the
    main thread is writing to raises ``RuntimeError: reentrant call`` — so the notice comes from another thread."""
    out = WriterLog()
    reporter = Reporter(json_lines=True, stream=out, err=io.StringIO())
    with _Interrupt(reporter) as cancel:
        signal.raise_signal(signal.SIGINT)  # the handler runs here, on this thread
        assert cancel.is_set()
        assert threading.get_ident() not in out.threads
        deadline = time.monotonic() + 10
        while not out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["message"] and "interrupted" in events[0]["text"]
    assert threading.get_ident() not in out.threads


def test_an_edit_that_was_not_interrupted_says_nothing_of_it():
    out = WriterLog()
    with _Interrupt(Reporter(json_lines=True, stream=out, err=io.StringIO())) as cancel:
        pass
    assert not cancel.is_set() and out.getvalue() == ""

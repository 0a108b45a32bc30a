"""How the command line reports progress: bars on a terminal, JSON lines with ``--json``, else nothing.

The bars are tqdm's (no dependencies of its own, and it draws to the stream it is given, so a JSON consumer
on stdout never sees them). The figures on the bar are the engine's own: its step counts and its ETA, which
knows about the windows still to come, rather than tqdm's estimate from the rate so far. ``kvlock batch``
adds a bar over the shots, with the current shot's steps below it; lines a person should read are written
above the bars (``tqdm.write``) so they are never torn.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from tqdm import tqdm

from kvlock.progress import StepProgress

STEPS_FORMAT = "{desc} {bar:24} step {n_fmt}/{total_fmt}{postfix}"  # tqdm's fields; 24 characters of bar
SHOTS_FORMAT = "{desc} {bar:24} {n_fmt}/{total_fmt} shots{postfix}"


def _size(stream: TextIO) -> tuple[int, int]:
    """The terminal's columns and rows; 100 × 24 where it reports none (a pseudo-terminal with no size set, as
    CI runners and test harnesses give): tqdm takes 0 rows to mean there is no room and draws nothing."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        return 100, 24
    return size.columns or 100, size.lines or 24


class Reporter:
    """One object for every kind of output, so a command never branches on the mode."""

    def __init__(self, json_lines: bool, stream: TextIO | None = None, err: TextIO | None = None) -> None:
        self.json_lines = json_lines
        self.out = stream or sys.stdout
        self.err = err or sys.stderr
        self.tty = self.err.isatty() and not json_lines
        self._size = _size(self.err)
        self._steps: tqdm | None = None
        self._shots: tqdm | None = None

    def event(self, kind: str, **fields: Any) -> None:
        if self.json_lines:
            self.out.write(json.dumps({"event": kind, **fields}) + "\n")
            self.out.flush()

    def _bar(self, total: int, desc: str, position: int, fmt: str) -> tqdm:
        return tqdm(total=total, desc=desc, file=self.err, bar_format=fmt, position=position, mininterval=0,
                    leave=position == 0, ncols=self._size[0], nrows=self._size[1])  # fmt: skip

    def step(self, p: StepProgress, **fields: Any) -> None:
        """One denoising step (``fields``: which shot of a batch it belongs to)."""
        self.event("progress", **fields, **p.figures())
        if not self.tty:
            return
        take = f"take {p.take + 1}/{p.takes} " if p.takes > 1 else ""
        desc = f"{take}window {p.window + 1}/{p.windows}"
        if self._steps is None or self._steps.total != p.total:
            self._close_steps()
            self._steps = self._bar(p.total, desc, 1 if self._shots is not None else 0, STEPS_FORMAT)
        h = "—" if p.h is None else f"{p.h:.4f}"  # None until the metric window has samples
        self._steps.set_description_str(desc, refresh=False)
        self._steps.set_postfix_str(f"h={h} α={p.alpha:.2f} ω={p.omega:.2f} ETA {p.eta_seconds:.0f}s", refresh=False)
        self._steps.n = p.step + 1
        self._steps.refresh()

    def begin_shots(self, total: int, **fields: Any) -> None:
        """A batch of ``total`` shots starts: the bar over the shots."""
        self.event("batch", shots=total, **fields)
        if self.tty:
            self._close_all()
            self._shots = self._bar(total, "KV-Lock", 0, SHOTS_FORMAT)

    def shot(self, text: str, finished: bool, **fields: Any) -> None:
        """A shot's news (submitted, skipped, done, failed); ``finished`` moves the bar over the shots."""
        self.event("shot", **fields)
        if not self.tty:
            return
        self._close_steps()
        tqdm.write(text, file=self.err)
        if finished and self._shots is not None:
            self._shots.update(1)

    def message(self, text: str) -> None:
        """A line a person should read (warnings, the result); shown on a terminal and in JSON mode."""
        if self.json_lines:
            self.event("message", text=text)
        elif self.tty and self._shots is not None:
            tqdm.write(text, file=self.err)
        elif self.tty:
            self._close_steps()
            self.err.write(text + "\n")

    def result(self, text: str, **fields: Any) -> None:
        self._close_all()
        if self.json_lines:
            self.event("done", **fields)
        else:
            self.out.write(text + "\n")

    def error(self, text: str, code: int) -> None:
        self._close_all()
        self.event("error", message=text, exit_code=code)
        self.err.write(f"kvlock: error: {text}\n")

    def _close_steps(self) -> None:
        if self._steps is not None:
            self._steps.close()
            self._steps = None

    def _close_all(self) -> None:
        self._close_steps()
        if self._shots is not None:
            self._shots.close()
            self._shots = None


@contextlib.contextmanager
def stdout_for_json_only() -> Iterator[TextIO]:
    """The process's standard output kept for the JSON lines alone, for as long as the command runs.

    Native libraries print to file descriptor 1 behind Python's back (OpenEXR's "Warning: Exception raised
    reading pixel data …", FFmpeg's default logger), which would break a reader of ``--json``. So descriptor 1
    points at stderr meanwhile, and the JSON lines go to a private copy of the real stdout."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    stream = os.fdopen(saved, "w", buffering=1, encoding="utf-8", closefd=False)
    try:
        yield stream
    finally:
        stream.flush()
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)

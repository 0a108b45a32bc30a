"""How the command line reports progress: a bar on a terminal, JSON lines with ``--json``, else nothing."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from kvlock.progress import StepProgress

BAR = 24


class Reporter:
    """One object for every kind of output, so the edit command never branches on the mode."""

    def __init__(self, json_lines: bool, stream: TextIO | None = None, err: TextIO | None = None) -> None:
        self.json_lines = json_lines
        self.out = stream or sys.stdout
        self.err = err or sys.stderr
        self.tty = self.err.isatty() and not json_lines
        self._bar_open = False

    def event(self, kind: str, **fields: Any) -> None:
        if self.json_lines:
            self.out.write(json.dumps({"event": kind, **fields}) + "\n")
            self.out.flush()

    def step(self, p: StepProgress) -> None:
        self.event("progress", **p.figures())
        if self.tty:
            total, done = p.total, p.step + 1
            filled = round(BAR * done / total)
            h = "—" if p.h is None else f"{p.h:.4f}"  # None until the metric window has samples
            take = f"take {p.take + 1}/{p.takes} " if p.takes > 1 else ""
            line = (
                f"\r[{'#' * filled}{'-' * (BAR - filled)}] {take}window {p.window + 1}/{p.windows} "
                f"step {done}/{total} h={h} α={p.alpha:.2f} ω={p.omega:.2f} "
                f"ETA {p.eta_seconds:.0f}s "
            )
            self.err.write(line)
            self.err.flush()
            self._bar_open = True

    def message(self, text: str) -> None:
        """A line a person should read (warnings, the result); shown on a terminal and in JSON mode."""
        self._close_bar()
        if self.json_lines:
            self.event("message", text=text)
        elif self.tty:
            self.err.write(text + "\n")

    def result(self, text: str, **fields: Any) -> None:
        self._close_bar()
        if self.json_lines:
            self.event("done", **fields)
        else:
            self.out.write(text + "\n")

    def error(self, text: str, code: int) -> None:
        self._close_bar()
        self.event("error", message=text, exit_code=code)
        self.err.write(f"kvlock: error: {text}\n")

    def _close_bar(self) -> None:
        if self._bar_open:
            self.err.write("\n")
            self._bar_open = False


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

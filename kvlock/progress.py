"""The one progress event of an edit, from the engine to every consumer (server, wire, bridge, hosts, CLI).

It is plain data (no tensors, no torch), so it crosses threads, processes (GPU groups, Ray workers) and the
client wheel unchanged. The engine makes one per denoising step; a preview, when the caller asked for one
at that step, rides along as PNG bytes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class StepProgress:
    """Where an edit is: window ``window`` of ``windows``, step ``step`` (0-based) of ``total`` in it, the
    lock's figures at that step (h is None until the metric is measured), and the estimated time left.

    An edit of several takes reports each take's steps: ``take`` (0-based) of ``takes``; ``in_turn`` says
    the takes run one after another (each through every window) rather than together, step by step."""

    window: int
    windows: int
    step: int
    total: int
    sigma: float
    h: float | None
    alpha: float
    omega: float
    s_star: float
    mode: str
    seconds: float
    eta_seconds: float
    preview_png: bytes = b""
    take: int = 0
    takes: int = 1
    in_turn: bool = False

    @property
    def fraction(self) -> float:
        """How much of the whole edit is done, in [0, 1]."""
        per_window = 1.0 / max(1, self.windows)
        done = per_window * (self.window + (self.step + 1) / max(1, self.total))
        if self.in_turn:
            done = (self.take + done) / max(1, self.takes)
        return min(1.0, done)

    def without_preview(self) -> StepProgress:
        return replace(self, preview_png=b"") if self.preview_png else self

    def figures(self) -> dict[str, Any]:
        """Every field but the preview, for JSON lines and logs."""
        data = asdict(self)
        data.pop("preview_png")
        return data

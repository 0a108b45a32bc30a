"""The per-step trace of an edit (σ, h, α, ω, s*, mode, seconds), as JSON and as a plot.

Editors and TDs read it to see why an edit looks the way it does: where the metric rose, where the lock
firmed up, where guidance was raised.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StepRecord:
    """One row of the trace. ``h`` is the metric after this step (None before the control window, or while
    it holds a single sample); α and ω were chosen from the one before."""

    step: int
    sigma: float
    h: float | None
    alpha: float
    omega: float
    s_star: float
    mode: str
    seconds: float
    source: str = ""  # "full", "background" or "reused": where this step's background K/V came from
    expert: int = 0  # which of a two-expert model's transformers ran the step (Wan2.2 A14B: 1 = low noise)


@dataclass
class WindowTrace:
    start: int
    end: int
    box: tuple[int, int, int, int]
    model_size: tuple[int, int, int]
    foreground_fraction: float
    steps: list[StepRecord] = field(default_factory=list)
    skipped: str | None = None
    # leading frames locked to the previous window's result; the output ramps from it to this window's there
    context: int = 0


@dataclass
class Trace:
    model: str
    settings: dict[str, Any]
    windows: list[WindowTrace] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    execution: dict[str, Any] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    tau_source: str = ""  # where this edit's τ came from: the request, the model's calibration, or the default
    # where each field of the lock's schedule came from: the request, the model's schedule, or the engine
    schedule_source: dict[str, str] = field(default_factory=dict)
    # the clean plate's figures (kvlock.plate.PlateStats): hole pixels, the fraction seen in other frames, seconds
    plate: dict[str, Any] = field(default_factory=dict)
    # the control regime in one line: how α is set and over which steps, and the guidance (CFG-free or not)
    control: str = ""
    # every LoRA applied: name, weight, where its files are, rank, experts, its kvlock.json (if it has one)
    loras: list[dict[str, Any]] = field(default_factory=list)
    # which take of an edit's takes (1-based) this trace is; stage_seconds are the edit's up to its delivery
    take: int = 1
    takes: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def plot(self, path: str | Path) -> Path:
        """Write a PNG with h (the paper's σ²), α and ω per step, one line per window."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(3, 1, figsize=(7, 6.5), sharex=True)
        rows = [("h", "h (metric, σ² in the paper)"), ("alpha", "α (K/V fusion)"), ("omega", "ω (guidance)")]
        for w in self.windows:
            if not w.steps:
                continue
            for ax, (key, _) in zip(axes, rows, strict=True):
                points = [(r.step, getattr(r, key)) for r in w.steps if getattr(r, key) is not None]
                if points:
                    x, y = zip(*points, strict=True)
                    ax.plot(x, y, marker=".", label=f"frames {w.start}–{w.end - 1}")
        for ax, (_, label) in zip(axes, rows, strict=True):
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        tau = self.settings.get("tau")
        if tau:
            axes[0].axhline(tau, color="grey", linestyle="--", linewidth=1, label="τ")
        axes[0].legend(fontsize=7)
        axes[-1].set_xlabel("denoising step")
        applied = ", ".join(f"{lora['name']} ×{lora['weight']:g}" for lora in self.loras)
        which = f" — take {self.take} of {self.takes}" if self.takes > 1 else ""
        title = f"KV-Lock trace — {self.model}{which}" + (f" + LoRA {applied}" if applied else "")
        fig.suptitle(title + (f"\nτ: {self.tau_source}" if self.tau_source else ""))
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return path

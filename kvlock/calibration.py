"""Fitting τ to a model: the threshold the hallucination metric is compared with.

h is relative to the source latents' variance (``kvlock.lock.metric``), yet how much a model's clean estimate
wanders in the last κ steps still depends on the model, so τ is fitted once per model:

1. Run calibration edits with the lock held firm (α = 1) and guidance steady (b = 1), so the trajectory —
   and with it h — does not depend on τ itself.
2. Collect h at every controlled step whose metric window is full (the values α will be computed from).
3. τ = the ``TAU_QUANTILE`` quantile of those values: at the quantile the lock is firm (α = 1); calmer
   steps ease it in proportion to their h.

The quantile was chosen on the embedded model's calibration split, where the benchmark's ground truth
says which τ gives the truest edits (docs/benchmarks.md); the same rule then serves any model from the
user's own clips, which need no ground truth. The result is written beside the model (``kvlock.json``)
with where it came from, and every edit's trace names its τ's source.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .editing.editor import Editor, EditRequest
from .errors import InvalidRequest
from .settings import EditSettings, with_schedule
from .trace import Trace

TAU_QUANTILE = 0.75


@dataclass(frozen=True)
class CalibrationClip:
    """One calibration edit: the source, its matte, the edit prompt and (optionally) the source's caption."""

    frames: np.ndarray
    matte: np.ndarray
    prompt: str
    source_prompt: str = ""
    seed: int = 0


def calibration_settings(base: EditSettings) -> EditSettings:
    """The settings calibration edits run with: the user's W, κ, steps and guidance, with α fixed at 1 and
    b = 1 so that τ cannot steer the trajectory it is measured on."""
    return replace(with_schedule(base), method="kvlock", alpha_fixed=1.0, b=1.0, tau=1.0)


def measured_h(trace: Trace, window: int) -> list[float]:
    """h at the controlled steps whose metric window was full, over every temporal window of an edit."""
    values: list[float] = []
    for w in trace.windows:
        seen = [s.h for s in w.steps if s.h is not None]  # one value per controlled step after the first
        values += seen[window - 2 :]  # the first W − 2 of them were measured over fewer than W samples
    return values


def tau_from_samples(samples: Sequence[float], quantile: float = TAU_QUANTILE) -> float:
    """The ``quantile`` of the measured h values (τ must be positive)."""
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    data = np.asarray([s for s in samples if np.isfinite(s)], dtype=np.float64)
    if len(data) == 0:
        raise InvalidRequest(
            "calibration measured no h values: give edits whose matte is not empty, with steps > κ ≥ W"
        )
    return max(float(np.quantile(data, quantile)), 1e-12)


def collect_h(
    editor: Editor,
    clips: Iterable[CalibrationClip],
    base: EditSettings,
    cancel: threading.Event | None = None,
    progress: Any = None,
) -> list[float]:
    """Run the calibration edits and return every full-window h they measured."""
    settings = calibration_settings(base)
    samples: list[float] = []
    for index, clip in enumerate(clips):
        s = replace(settings, seed=clip.seed, source_prompt=clip.source_prompt or settings.source_prompt)
        result = editor.edit(EditRequest(clip.frames, clip.matte, clip.prompt, s), cancel=cancel)
        samples += measured_h(result.trace, s.metric_window)
        if progress is not None:
            progress(index, len(samples))
    return samples


def calibration_record(tau: float, samples: Sequence[float], quantile: float, base: EditSettings, **about) -> dict:
    """What ``kvlock.json`` keeps: τ, a one-line source for traces, and the details behind it."""
    date = time.strftime("%Y-%m-%d")
    source = (
        f"kvlock calibrate {date}: quantile {quantile:g} of {len(samples)} h values "
        f"(W={base.metric_window}, κ={base.kappa}, steps={base.steps or 'model default'})"
    )
    details = {
        "date": date,
        "quantile": quantile,
        "samples": len(samples),
        "h_quartiles": [float(v) for v in np.quantile(np.asarray(samples), [0.25, 0.5, 0.75])],
        "metric_window": base.metric_window,
        "kappa": base.kappa,
        "steps": base.steps,
        **about,
    }
    return {"tau": tau, "tau_source": source, "calibration": details}


def write_calibration(folder: Path, record: dict) -> Path:
    """Merge ``record`` into ``folder/kvlock.json`` (other keys kept), atomically."""
    path = Path(folder) / "kvlock.json"
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.update(record)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=".kvlock.json.")
    try:
        with os.fdopen(handle, "w") as out:
            json.dump(data, out, indent=2, ensure_ascii=False)
            out.write("\n")
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path

"""Fitting τ to a model: the threshold the hallucination metric is compared with.

h is relative to the source latents' variance and per unit of noise removed (``kvlock.lock.metric``), yet how
much a model's clean estimate wanders in the last κ steps still depends on the model, so τ is fitted once per
model — in the regime the control runs in, because h depends on it: a trajectory held under a firm lock
wanders far less than one the control has let loose (on the embedded model the control's own h read 2.5 to
36 times a τ fitted under a firm lock, so α = clamp(h/τ) sat at 1 the moment the metric window filled).

1. Start: edits with the lock held firm (α = 1) and guidance steady (b = 1), so the trajectory does not
   depend on τ; τ₀ = the ``TAU_QUANTILE`` quantile of the h they measure.
2. Then, round after round, the same edits with the control live at the current τ (``--method kvlock``, the
   model's schedule otherwise); τ = the quantile of the h the control computed α from. Stop when τ moves by
   less than ``TOLERANCE`` (in log) or after ``ROUNDS`` rounds. At the fixed point a ``TAU_QUANTILE`` share of
   the controlled steps read h below τ, so α lies inside (0, 1) there and reaches 1 on the riskiest steps.

The quantile was chosen on the embedded model's calibration split, where the benchmark's ground truth says
which τ gives the truest edits (docs/benchmarks.md); the same rule then serves any model from the user's own
clips, which need no ground truth. The result is written beside the model (``kvlock.json``) with where it
came from, the τ of every round, and every edit's trace names its τ's source.
"""

from __future__ import annotations

import json
import math
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
ROUNDS = 3  # in-regime rounds after the firm-lock start
TOLERANCE = 0.1  # |ln(τ_new / τ)| under which the fit has settled


@dataclass(frozen=True)
class CalibrationClip:
    """One calibration edit: the source, its matte, the edit prompt and (optionally) the source's caption."""

    frames: np.ndarray
    matte: np.ndarray
    prompt: str
    source_prompt: str = ""
    seed: int = 0


@dataclass(frozen=True)
class TauFit:
    """A fitted τ, the h values of its last round, and τ after every round (the firm-lock start first)."""

    tau: float
    samples: list[float]
    rounds: list[float]


def calibration_settings(base: EditSettings) -> EditSettings:
    """The start's settings: the user's W, κ, steps and guidance, with α fixed at 1 and b = 1 so that τ
    cannot steer the trajectory it is measured on."""
    return replace(with_schedule(base, steps=base.steps), method="kvlock", alpha_fixed=1.0, b=1.0, tau=1.0)


def regime_settings(base: EditSettings, tau: float) -> EditSettings:
    """The regime the control runs in: ``--method kvlock`` at ``tau``, the user's W, κ and steps, everything
    else the model's schedule (its strength, α_early, b) as an edit would get it."""
    return replace(base, method="kvlock", tau=tau, alpha_fixed=None)


def measured_h(trace: Trace, window: int | None = None) -> list[float]:
    """h at the controlled steps whose metric window was full, over every temporal window of an edit."""
    window = window if window is not None else trace.settings["metric_window"]
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
    settings: EditSettings,
    cancel: threading.Event | None = None,
    progress: Any = None,
) -> list[float]:
    """Run the calibration edits with ``settings`` and return every full-window h they measured."""
    samples: list[float] = []
    for index, clip in enumerate(clips):
        s = replace(settings, seed=clip.seed, source_prompt=clip.source_prompt or settings.source_prompt)
        result = editor.edit(EditRequest(clip.frames, clip.matte, clip.prompt, s), cancel=cancel)
        samples += measured_h(result.trace)
        if progress is not None:
            progress(index, len(samples))
    return samples


def fit_tau(
    editor: Editor,
    clips: Sequence[CalibrationClip],
    base: EditSettings,
    quantile: float = TAU_QUANTILE,
    rounds: int = ROUNDS,
    cancel: threading.Event | None = None,
    progress: Any = None,
) -> TauFit:
    """τ by the module's rule: the firm-lock start, then in-regime rounds until τ settles."""
    samples = collect_h(editor, clips, calibration_settings(base), cancel, progress)
    history = [tau_from_samples(samples, quantile)]
    for _ in range(rounds):
        samples = collect_h(editor, clips, regime_settings(base, history[-1]), cancel, progress)
        history.append(tau_from_samples(samples, quantile))
        if abs(math.log(history[-1] / history[-2])) < TOLERANCE:
            break
    return TauFit(history[-1], samples, history)


def calibration_record(fit: TauFit, quantile: float, base: EditSettings, steps: int, **about) -> dict:
    """What ``kvlock.json`` keeps: τ, a one-line source for traces, and the details behind it."""
    date = time.strftime("%Y-%m-%d")
    settled = f"{len(fit.rounds) - 1} in-regime round(s)"
    source = (
        f"kvlock calibrate {date}: quantile {quantile:g} of {len(fit.samples)} h values in the control's regime "
        f"after {settled} (W={base.metric_window}, κ={base.kappa}, steps={steps})"
    )
    details = {
        "date": date,
        "quantile": quantile,
        "samples": len(fit.samples),
        "h_quartiles": [float(v) for v in np.quantile(np.asarray(fit.samples), [0.25, 0.5, 0.75])],
        "tau_rounds": fit.rounds,
        "metric_window": base.metric_window,
        "kappa": base.kappa,
        "steps": steps,
        **about,
    }
    return {"tau": fit.tau, "tau_source": source, "calibration": details}


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

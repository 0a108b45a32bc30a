"""Running and scoring held-out edits: the engine of ``bench/quality.py`` and of the CI quality check."""

from __future__ import annotations

import numpy as np

from ..compositing import feather_matte
from ..editor import Editor, EditRequest
from ..settings import EditSettings
from .cases import EditCase
from .judges import flicker, judge, psnr, ssim

METHODS = {
    "kvlock (dynamic)": {},
    "no lock": {"method": "no_lock"},
    "fixed α = 0.5": {"method": "fixed_alpha=0.5"},
    "fixed α = 1": {"method": "fixed_alpha=1"},
    "static CFG": {"method": "static_cfg"},
    "paper ω form": {"method": "paper_omega"},
    "kvlock, α_early = 0": {"alpha_early": 0.0},
    "kvlock, α_early = 0.5": {"alpha_early": 0.5},
}


def run_case(editor: Editor, case: EditCase, overrides: dict, steps: int) -> dict:
    """Edit one case and score it (accuracy, background before/after compositing, flicker, h, time)."""
    settings = EditSettings(steps=steps, seed=case.seed, source_prompt=case.source_prompt, **overrides)
    result = editor.edit(EditRequest(case.frames, case.matte, case.prompt, settings, return_raw=True))
    out = result.frames.astype(np.float32) / 255.0
    src = case.frames.astype(np.float32) / 255.0
    region = case.matte > 0
    colour, shape = judge(out, case.background, region)
    target = case.target.objects[0]
    steps_run = result.trace.windows[0].steps
    control = [s.h for s in steps_run if s.step >= len(steps_run) - settings.kappa]
    outside = ~region
    beyond_feather = np.stack([feather_matte(m, settings.feather) for m in case.matte]) == 0
    composited_same = np.array_equal(out[beyond_feather], src[beyond_feather])
    return {
        "colour": colour == target.colour,
        "shape": shape == target.shape,
        "bg_psnr_raw": psnr(result.raw, src, outside),
        "bg_ssim_raw": ssim(result.raw, src, outside),
        "bg_psnr": float("inf") if composited_same else psnr(out, src, beyond_feather),
        "flicker_bg": flicker(result.raw, src, outside),
        "flicker_fg": flicker(out, src, region),
        "h": float(np.mean(control)) if control else 0.0,
        "seconds": result.trace.seconds,
    }


def summarise(rows: list[dict]) -> dict:
    """Means over cases; h split by whether the edit succeeded (both colour and shape right)."""
    ok = [r for r in rows if r["colour"] and r["shape"]]
    bad = [r for r in rows if not (r["colour"] and r["shape"])]
    mean = lambda key, rs=rows: float(np.mean([r[key] for r in rs])) if rs else float("nan")  # noqa: E731
    return {
        "colour": mean("colour"),
        "shape": mean("shape"),
        "both": len(ok) / len(rows),
        "bg_psnr_raw": mean("bg_psnr_raw"),
        "bg_ssim_raw": mean("bg_ssim_raw"),
        "bg_psnr_composited": "inf" if all(r["bg_psnr"] == float("inf") for r in rows) else mean("bg_psnr"),
        "flicker_bg": mean("flicker_bg"),
        "flicker_fg": mean("flicker_fg"),
        "h_success": mean("h", ok),
        "h_failure": mean("h", bad),
        "seconds": mean("seconds"),
    }

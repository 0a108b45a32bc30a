"""Running and scoring edits of the synthetic world: the engine of ``bench/quality.py``, of the τ
calibration of the embedded model, and of the CI quality slice.

Every case knows its right answer (``cases``), so an edit is scored against the target itself: edit
accuracy per attribute, PSNR inside the matte against the target, PSNR on the leftover (the matte pixels
the target shows as background — where a method that cannot let go of the old subject, or paints the new
one too large, loses), the decoded edit's background before compositing, flicker, the metric h and the
time. Summaries carry 95 % bootstrap intervals over cases.

Erase cases (``cases.make_erase_case``) are scored against the scene without the object: PSNR inside the
matte, and split by the clean plate's own map into the pixels it saw in another frame and those it invented
(``score_erase``); ``plate only`` is the clean plate itself, no model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

import numpy as np

from ..calibration import measured_h
from ..editing.compositing import feather_matte
from ..editing.editor import Editor, EditRequest
from ..media.colour import DisplayReferred
from ..plate import INVENTED, SEEN, PlateMaker, PlateOptions
from ..settings import EditSettings
from .cases import EditCase, EraseCase
from .judges import flicker, judge_all, object_pixels, psnr, ssim

ATTRIBUTES = ("colour", "shape", "size", "motion")

# "defaults" is what an edit that sets nothing gets (the model's schedule, kvlock.json); every other row changes
# one thing against it, and the lock's variants name the adaptive lock (method kvlock) themselves, so they stay
# KV-Lock variants whatever method the defaults chose.
METHODS: dict[str, dict] = {
    "defaults": {},
    "kvlock": {"method": "kvlock"},
    "no lock": {"method": "no_lock"},
    "fixed α = 0": {"method": "fixed_alpha=0"},
    "fixed α = 0.5": {"method": "fixed_alpha=0.5"},
    "fixed α = 1": {"method": "fixed_alpha=1"},
    "static CFG": {"method": "static_cfg"},
    # the lock without KV-Lock's guidance: against "no lock" these differ in α alone
    "fixed α = 0.5, static CFG": {"method": "fixed_alpha=0.5", "guidance_form": "static"},
    "α_early = 0.5, static CFG": {"method": "static_cfg", "alpha_early": 0.5},
    "paper ω form": {"method": "paper_omega"},
    "α_early = 0": {"method": "kvlock", "alpha_early": 0.0},
    "α_early = 0.5": {"method": "kvlock", "alpha_early": 0.5},
    "α_early = 1": {"method": "kvlock", "alpha_early": 1.0},
    "uncond source: own": {"method": "kvlock", "uncond_source": "own"},
    # starting from the noised source instead of pure noise (the embedded model ships 0.8; 1 is pure noise)
    "strength 1": {"strength": 1.0},
    "strength 0.9": {"strength": 0.9},
    "strength 0.8": {"strength": 0.8},
    "strength 0.7": {"strength": 0.7},
    # the control's windows at few steps (4-step models: the derived W = 2, κ = 3 against its neighbours)
    "W = 2, κ = 3": {"method": "kvlock", "metric_window": 2, "kappa": 3},
    "W = 2, κ = 4": {"method": "kvlock", "metric_window": 2, "kappa": 4},
    "W = 3, κ = 4": {"method": "kvlock", "metric_window": 3, "kappa": 4},
    # the source-pass approximations (speed options): what they cost in quality
    "background source pass": {"method": "kvlock", "source_pass": "background"},
    "source refresh 2": {"method": "kvlock", "source_refresh": 2},
    "fixed α = 1, background source pass": {"method": "fixed_alpha=1", "source_pass": "background"},
    "fixed α = 0.5, background source pass": {"method": "fixed_alpha=0.5", "source_pass": "background"},
    "α_early = 0.5, background source pass": {"method": "kvlock", "alpha_early": 0.5, "source_pass": "background"},
    "α_early = 1, background source, refresh 2": {
        "method": "kvlock",
        "alpha_early": 1.0,
        "source_pass": "background",
        "source_refresh": 2,
    },
    # what the edit starts from inside the matte, and the source pass sees: the source, or its clean plate
    "original plate": {"source_plate": "original"},
    "clean plate": {"source_plate": "clean"},
    "kvlock, original plate": {"method": "kvlock", "source_plate": "original"},
    "kvlock, clean plate": {"method": "kvlock", "source_plate": "clean"},
    "no lock, original plate": {"method": "no_lock", "source_plate": "original"},
    "no lock, clean plate": {"method": "no_lock", "source_plate": "clean"},
    # a clean plate has no layout of the old subject for strength < 1 to keep: from pure noise, or nearly
    "kvlock, clean plate, strength 1": {"method": "kvlock", "source_plate": "clean", "strength": 1.0},
    "no lock, clean plate, strength 1": {"method": "no_lock", "source_plate": "clean", "strength": 1.0},
    "no lock, clean plate, strength 0.9": {"method": "no_lock", "source_plate": "clean", "strength": 0.9},
}

# Erase, on erase cases: settings and which prompt ("" none, "background" the scene without the object). "plate
# only" runs no model: the clean plate as the stage made it.
ERASE_METHODS: dict[str, tuple[dict, str]] = {
    "plate only": ({}, ""),
    "erase": ({"erase": True}, ""),
    "erase, background prompt": ({"erase": True}, "background"),
    "erase, model everywhere": ({"erase": True, "erase_keep_seen": False}, ""),
    "erase, kvlock": ({"erase": True, "method": "kvlock"}, ""),
}


def run_case(editor: Editor, case: EditCase, overrides: dict, steps: int | None = None) -> dict:
    """Edit one case with the default settings changed by ``overrides`` and score it."""
    settings = EditSettings(steps=steps, seed=case.seed, source_prompt=case.source_prompt, **overrides)
    result = editor.edit(EditRequest(case.frames, case.matte, case.prompt, settings, return_raw=True))
    return score(case, result.frames, result.raw, result.trace)


def score(case: EditCase, frames: np.ndarray, raw: np.ndarray | None, trace) -> dict:
    out = frames.astype(np.float32) / 255.0
    src = case.frames.astype(np.float32) / 255.0
    region = case.matte > 0
    judged = judge_all(out, [object_pixels(out[t], case.reference[t], region[t]) for t in range(len(out))])
    wanted = case.wanted
    row: dict = {"case": case.name, "kind": case.kind, **{f"judged_{a}": judged[a] for a in ATTRIBUTES}}
    row.update({a: judged[a] == getattr(wanted, a) for a in ATTRIBUTES})
    row["all"] = all(row[a] for a in ATTRIBUTES)
    row["in_matte_psnr"] = psnr(out, case.target_frames, region)
    row["leftover_psnr"] = psnr(out, case.target_frames, case.leftover)
    outside = ~region
    if raw is not None:
        row["bg_psnr_raw"] = psnr(raw, src, outside)
        row["bg_ssim_raw"] = ssim(raw, src, outside)
        row["flicker_bg"] = flicker(raw, src, outside)
    beyond = np.stack([feather_matte(m, trace.settings["feather"]) for m in case.matte]) == 0
    row["outside_exact"] = bool(np.array_equal(frames[beyond], case.frames[beyond]))
    row["flicker_fg"] = flicker(out, case.target_frames, region)
    steps = [s for w in trace.windows for s in w.steps]
    measured = [s for s in steps if s.h is not None]
    row["h_full"] = measured_h(trace)  # the values α is computed from
    row["h"] = float(np.mean(row["h_full"])) if row["h_full"] else math.nan
    control = [s.alpha for s in measured]
    row["alpha_mean"] = float(np.mean(control)) if control else math.nan
    row["alpha_range"] = float(max(control) - min(control)) if control else 0.0
    # the steps α was computed from h on (full metric windows): the share where it is strictly inside (0, 1),
    # i.e. the control acted continuously rather than as a switch
    window = trace.settings["metric_window"]
    computed = [s.alpha for w in trace.windows for s in [s for s in w.steps if s.h is not None][window - 2 :]]
    row["alpha_computed"] = computed
    row["alpha_inside"] = float(np.mean([0.0 < a < 1.0 for a in computed])) if computed else math.nan
    row["steps"] = len(steps)
    row["seconds"] = trace.seconds
    row["tau"] = trace.settings["tau"]
    return row


def run_erase_case(editor: Editor | None, case: EraseCase, method: str, steps: int | None = None) -> dict:
    """Erase one case with ``ERASE_METHODS[method]`` and score it (``plate only``: no editor needed)."""
    overrides, prompt_kind = ERASE_METHODS[method]
    if not overrides:
        began = time.perf_counter()
        plate = PlateMaker(case.frames, case.matte, DisplayReferred(255.0), PlateOptions()).plate(0, len(case.frames))
        return score_erase(case, plate.frames, plate.origin, time.perf_counter() - began)
    assert editor is not None
    prompt = case.background_prompt if prompt_kind == "background" else ""
    settings = EditSettings(steps=steps, seed=case.seed, **overrides)
    result = editor.edit(EditRequest(case.frames, case.matte, prompt, settings, return_plate=True))
    assert result.plate is not None
    row = score_erase(case, result.frames, result.plate.origin, result.trace.seconds)
    beyond = np.stack([feather_matte(m, settings.feather) for m in case.matte]) == 0
    row["outside_exact"] = bool(np.array_equal(result.frames[beyond], case.frames[beyond]))
    return row


def score_erase(case: EraseCase, frames: np.ndarray, origin: np.ndarray, seconds: float) -> dict:
    """PSNR against the scene without the object: over the matte, and over its pixels the clean plate saw in
    another frame or invented (NaN where there are none)."""
    out = frames.astype(np.float32) / 255.0
    hole = case.matte > 0
    seen, invented = hole & (origin == SEEN), hole & (origin == INVENTED)
    return {
        "case": case.name,
        "in_matte_psnr": psnr(out, case.truth, hole),
        "seen_psnr": psnr(out, case.truth, seen) if seen.any() else math.nan,
        "invented_psnr": psnr(out, case.truth, invented) if invented.any() else math.nan,
        "seen_fraction": float(seen.sum() / hole.sum()),
        "outside_exact": bool(np.array_equal(frames[~hole], case.frames[~hole])),
        "seconds": seconds,
    }


ERASE_KEYS = ("in_matte_psnr", "seen_psnr", "invented_psnr", "seen_fraction", "seconds")


def summarise_erase(rows: list[dict]) -> dict:
    """Each erase figure as (estimate, low, high) over cases; ``outside exact`` for all of them."""
    summary: dict = {key: bootstrap(float(r[key]) for r in rows) for key in ERASE_KEYS}
    summary["outside_exact"] = all(r["outside_exact"] for r in rows)
    summary["cases"] = len(rows)
    return summary


def bootstrap(values: Iterable[float], statistic: Callable = np.mean, draws: int = 2000, seed: int = 0):
    """(estimate, low, high): the statistic and its 95 % percentile bootstrap interval over the values."""
    data = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if len(data) == 0:
        return (math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    samples = [statistic(data[rng.integers(len(data), size=len(data))]) for _ in range(draws)]
    low, high = np.percentile(samples, [2.5, 97.5])
    return (float(statistic(data)), float(low), float(high))


def auc(failed: list[float], succeeded: list[float]) -> float:
    """P(h of a failed edit > h of a successful one), ties counting half: 0.5 is a metric that says nothing."""
    if not failed or not succeeded:
        return math.nan
    f, s = np.asarray(failed)[:, None], np.asarray(succeeded)[None, :]
    return float((f > s).mean() + 0.5 * (f == s).mean())


def auc_interval(rows: list[dict], draws: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    usable = [r for r in rows if not math.isnan(r["h"])]
    point = auc([r["h"] for r in usable if not r["all"]], [r["h"] for r in usable if r["all"]])
    if math.isnan(point):
        return (point, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(draws):
        pick = [usable[i] for i in rng.integers(len(usable), size=len(usable))]
        value = auc([r["h"] for r in pick if not r["all"]], [r["h"] for r in pick if r["all"]])
        if not math.isnan(value):
            samples.append(value)
    low, high = np.percentile(samples, [2.5, 97.5]) if samples else (math.nan, math.nan)
    return (point, float(low), float(high))


SUMMARY_KEYS = (
    "colour",
    "shape",
    "size",
    "motion",
    "all",
    "in_matte_psnr",
    "leftover_psnr",
    "bg_psnr_raw",
    "bg_ssim_raw",
    "flicker_bg",
    "flicker_fg",
    "alpha_range",
    "alpha_inside",
    "seconds",
)


PAIRED_KEYS = ("leftover_psnr", "all", "colour", "in_matte_psnr", "bg_psnr_raw")


def paired_differences(rows: list[dict], reference: list[dict], keys: Iterable[str] = PAIRED_KEYS) -> dict:
    """Per figure, the mean over shared cases of (method − reference) with its bootstrap interval.

    Every method edits the same cases with the same seeds, so the case-to-case spread (easy and hard cases)
    cancels in the difference: intervals far narrower than the methods' own ones, which overlap whenever
    the cases vary more than the methods do.
    """
    theirs = {r["case"]: r for r in reference}
    shared = [(r, theirs[r["case"]]) for r in rows if r["case"] in theirs]
    out: dict = {"cases": len(shared)}
    for key in keys:
        out[key] = bootstrap(float(a[key]) - float(b[key]) for a, b in shared if key in a and key in b)
    return out


def summarise(rows: list[dict]) -> dict:
    """Each figure as (estimate, low, high); h split by whether the edit got every attribute right."""
    summary = {key: bootstrap(float(r[key]) for r in rows if key in r) for key in SUMMARY_KEYS}
    summary["h_success"] = bootstrap(r["h"] for r in rows if r["all"])
    summary["h_failure"] = bootstrap(r["h"] for r in rows if not r["all"])
    summary["h_auc"] = auc_interval(rows)
    summary["outside_exact"] = all(r["outside_exact"] for r in rows)
    summary["cases"] = len(rows)
    return summary

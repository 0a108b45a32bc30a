"""Every knob of an edit, with the paper's defaults, and the baselines expressed as changes to them.

Paper defaults (arXiv 2603.09657 §4.1): metric window W = 10, control in the last κ = 20 steps, threshold
τ = 0.01, guidance ceiling b = 2. Here h is relative to the source latents' variance (``kvlock.metric``), so
the paper's τ does not carry over: ``tau = None`` takes the model's calibrated τ (``kvlock calibrate``
writes it beside the model) or, for a model never calibrated, ``DEFAULT_TAU`` with a notice.
``alpha_early`` (α before the control window) is not given by the paper; see docs/benchmarks.md for how
the defaults were chosen on the quality benchmark's calibration split.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import SettingsError

GUIDANCE_FORMS = ("kvlock", "paper", "static")
GEOMETRIES = ("fit", "crop_to_matte")
UNCOND_SOURCES = ("shared", "own")
# τ for a model that was never calibrated: the embedded model's calibrated value (h is relative, so it is a
# reasonable start; docs/benchmarks.md), with a notice to calibrate
DEFAULT_TAU = 0.0033


@dataclass(frozen=True)
class EditSettings:
    """One edit's settings. ``None`` means "the model's default" (steps, guidance, size, window)."""

    negative_prompt: str = ""
    source_prompt: str = ""
    seed: int = 0
    steps: int | None = None
    guidance: float | None = None
    strength: float = 1.0
    # KV-Lock control
    method: str = "kvlock"
    metric_window: int = 10
    kappa: int = 20
    tau: float | None = None  # None: the model's calibrated τ, else DEFAULT_TAU
    b: float = 2.0
    alpha_min: float = 0.0
    alpha_early: float = 0.0  # chosen on the calibration split (docs/benchmarks.md); the paper is silent
    alpha_fixed: float | None = None
    guidance_form: str = "kvlock"
    cfg_zero_delta: float = 1e-8
    uncond_source: str = "shared"
    foreground_only: bool = True
    dilate_tokens: int = 0
    # geometry and output
    geometry: str = "fit"
    crop_margin: float = 0.25
    height: int | None = None
    width: int | None = None
    window_frames: int | None = None
    window_overlap: int | None = None  # None: 8, or fewer where windows are too short (geometry.DEFAULT_OVERLAP)
    feather: int = 4

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def apply_method(settings: EditSettings) -> EditSettings:
    """Resolve ``method`` into the knobs it changes; each baseline changes exactly one thing.

    ``kvlock``: dynamic α and ω (the method). ``no_lock``: plain regeneration with the latent lock's
    blending only — α = 0 and classic CFG at ω0, what a plain pipeline with latent blending does.
    ``fixed_alpha=<a>``: α = a throughout, KV-Lock's guidance otherwise (``fixed_alpha=0`` differs from
    ``no_lock`` only in the guidance). ``static_cfg``: dynamic α, classic CFG at ω0. ``paper_omega``: the
    paper's ω form.
    """
    method = settings.method.strip()
    if method == "kvlock":
        return settings
    if method == "no_lock":
        return replace(settings, alpha_fixed=0.0, guidance_form="static")
    if method.startswith("fixed_alpha"):
        _, _, value = method.partition("=")
        try:
            alpha = float(value)
        except ValueError:
            raise SettingsError(f"method {method!r}: write fixed_alpha=<a> with a number a in [0, 1]") from None
        return replace(settings, alpha_fixed=alpha)
    if method == "static_cfg":
        return replace(settings, guidance_form="static")
    if method == "paper_omega":
        return replace(settings, guidance_form="paper")
    raise SettingsError(
        f"unknown method {method!r}; expected kvlock, no_lock, fixed_alpha=<a>, static_cfg or paper_omega"
    )


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise SettingsError(message)


def validate_settings(s: EditSettings) -> EditSettings:
    """Check every range before any model work; return the settings with the method applied."""
    for f in fields(s):
        value = getattr(s, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise SettingsError(f"{f.name} must be a finite number, got {value}")
    s = apply_method(s)
    _require(s.steps is None or s.steps >= 1, f"steps must be at least 1, got {s.steps}")
    _require(s.guidance is None or s.guidance >= 0, f"guidance must be >= 0, got {s.guidance}")
    _require(0.0 < s.strength <= 1.0, f"strength must be in (0, 1], got {s.strength}")
    _require(s.metric_window >= 2, f"metric_window must be at least 2 steps, got {s.metric_window}")
    _require(s.kappa >= 0, f"kappa must be >= 0, got {s.kappa}")
    _require(s.tau is None or s.tau > 0, f"tau must be > 0, got {s.tau}")
    _require(s.b >= 1, f"b must be >= 1 (guidance never drops below ω0), got {s.b}")
    for name in ("alpha_min", "alpha_early"):
        _require(0.0 <= getattr(s, name) <= 1.0, f"{name} must be in [0, 1], got {getattr(s, name)}")
    _require(
        s.alpha_fixed is None or 0.0 <= s.alpha_fixed <= 1.0, f"fixed alpha must be in [0, 1], got {s.alpha_fixed}"
    )
    _require(s.guidance_form in GUIDANCE_FORMS, f"guidance_form must be one of {GUIDANCE_FORMS}")
    _require(s.uncond_source in UNCOND_SOURCES, f"uncond_source must be one of {UNCOND_SOURCES}")
    _require(s.geometry in GEOMETRIES, f"geometry must be one of {GEOMETRIES}, got {s.geometry!r}")
    _require(s.crop_margin >= 0, f"crop_margin must be >= 0, got {s.crop_margin}")
    _require(s.dilate_tokens >= 0, f"dilate_tokens must be >= 0, got {s.dilate_tokens}")
    _require(s.feather >= 0, f"feather must be >= 0 pixels, got {s.feather}")
    _require(
        s.window_overlap is None or s.window_overlap >= 0, f"window_overlap must be >= 0 frames, got {s.window_overlap}"
    )
    for name in ("height", "width"):
        value = getattr(s, name)
        _require(value is None or value >= 16, f"{name} must be at least 16 pixels, got {value}")
    _require(s.window_frames is None or s.window_frames >= 1, "window_frames must be at least 1")
    _require(s.cfg_zero_delta > 0, "cfg_zero_delta must be > 0")
    return s

"""The α (K/V fusion) and ω (guidance) schedules of KV-Lock, as pure functions of the metric.

Notation follows the paper (arXiv 2603.09657, §3.3): the hallucination metric h_k is compared with a
threshold τ. Control is active only in the last κ steps; earlier every sample still has high variance,
so the metric says nothing about risk there and fixed values apply (α_early, ω0). Inside the control
window the metric's own window starts afresh, and until it holds W samples h is not yet the figure τ was
calibrated on, so the early values still apply: a half-filled window reads as calm and would drop the
lock exactly at the noisiest controlled steps.
"""

from __future__ import annotations

from dataclasses import dataclass


def _clamp(x: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, x))


def fusion_ratio(h: float, tau: float, alpha_min: float = 0.0) -> float:
    """α_k = clamp(h_k / τ, α_min, 1): more risk of hallucination, firmer background lock (paper Eq. 7)."""
    return _clamp(h / tau, alpha_min, 1.0)


def guidance_scale(h: float, tau: float, omega0: float, b: float) -> float:
    """ω_k = ω0 · (1 + (b − 1) · clamp(h_k / τ, 0, 1)).

    The project's default form: guidance rises with risk up to b·ω0 and never drops below ω0, so a
    calm sampler keeps the user's guidance instead of losing conditioning altogether.
    """
    return omega0 * (1.0 + (b - 1.0) * _clamp(h / tau, 0.0, 1.0))


def guidance_scale_paper(h: float, tau: float, omega0: float, b: float) -> float:
    """ω_k = ω0 · clamp(h_k / τ, 0, b), the paper's form (Eq. 8), kept as an option.

    Note that it drives guidance to zero when the variance is small.
    """
    return omega0 * _clamp(h / tau, 0.0, b)


@dataclass(frozen=True)
class StepControl:
    """What the loop should do at one step: the fusion ratio and the guidance scale."""

    alpha: float
    omega: float
    active: bool


def control_at(
    step: int,
    total_steps: int,
    h: float | None,
    *,
    kappa: int,
    tau: float,
    omega0: float,
    b: float,
    alpha_min: float,
    alpha_early: float,
    alpha_fixed: float | None = None,
    guidance_form: str = "kvlock",
    ready: bool = True,
) -> StepControl:
    """Choose α_k and ω_k for step ``step`` (0-based) of ``total_steps`` given the current metric.

    ``ready`` says whether ``h`` was measured over a full window; ``alpha_fixed`` overrides the α schedule
    (the fixed-α and no-lock baselines); ``guidance_form`` is ``"kvlock"`` (default form), ``"paper"``
    (Eq. 8) or ``"static"`` (ω0 throughout, classic CFG). At ω0 ≤ 1 the model runs without guidance
    (a CFG-free distilled model): ω stays ω0 whatever the metric says, since raising it would need an
    unconditional pass the model was not made for; α is controlled as ever.
    """
    active = step >= total_steps - kappa
    measured = active and ready and h is not None
    if alpha_fixed is not None:
        alpha = alpha_fixed
    elif measured:
        alpha = fusion_ratio(h, tau, alpha_min)
    else:
        alpha = alpha_early
    if guidance_form == "static" or not measured or omega0 <= 1.0:
        omega = omega0
    elif guidance_form == "paper":
        omega = guidance_scale_paper(h, tau, omega0, b)
    else:
        omega = guidance_scale(h, tau, omega0, b)
    return StepControl(alpha=alpha, omega=omega, active=active)

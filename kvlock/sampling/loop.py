"""The KV-Lock denoising loop for one temporal window, as a plain function (k-diffusion style).

Per step k (docs/design.md §2.3): choose α_k, ω_k from the metric (``lock.schedules``); decide which passes
the step runs (``plan.plan_step``); run them (``passes.Passes``): the source pass on the noised source
captures the background K/V, the conditional and unconditional edit passes read them fused (foreground
tokens only when α_k = 1); combine the predictions with CFG-Zero* (or classic CFG); take the scheduler step;
reset the background latents to the noised source at the next σ (the latent lock); update the metric on
the conditional prediction's x̂0, from the first controlled step on. One callback per step carries what a
progress bar, a preview, a trace or a cancel check needs.

Which tokens the passes and the K/V bank work on comes from a :class:`~.layout.Layout`: on one device the
mask's own indices; under sequence parallelism (``kvlock.execution.sequence_parallel``) this rank's share.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from ..errors import EditCancelled
from ..families.base import ModelFamily
from ..families.steppers import FlowEulerStepper, Stepper
from ..lock.guidance import cfg_zero_star, classic_cfg, optimal_scale
from ..lock.kv_bank import KVBank
from ..lock.metric import HallucinationMeter, latent_scale
from ..lock.schedules import control_at
from ..lock.token_mask import TokenMask
from ..settings import SCHEDULE_DEFAULTS, EditSettings
from ..trace import StepRecord
from .layout import Layout, OneDevice
from .passes import Passes, Prompts
from .plan import plan_step


@dataclass(frozen=True)
class StepDone:
    """What the loop tells its callback after each step: the trace's row, how many steps the window runs,
    the latents it continues from, and this step's guided clean estimate (for previews)."""

    record: StepRecord
    total: int
    latents: torch.Tensor
    x0: torch.Tensor


StepCallback = Callable[[StepDone], None]
ExpertCallback = Callable[[int], None]


def start_index(steps: int, strength: float) -> int:
    """First step to run for ``strength`` in (0, 1]: 1 starts from pure noise, smaller from the noised source."""
    return min(steps - 1, round(steps * (1.0 - strength)))


def guide(
    v_cond: torch.Tensor, v_uncond: torch.Tensor | None, omega: float, form: str, region: torch.Tensor, delta: float
) -> tuple[torch.Tensor, float]:
    """The guided velocity and s*: CFG-Zero* (s* over the edited region), classic CFG for the static form,
    the conditional prediction alone without an unconditional pass."""
    if v_uncond is None:
        return v_cond, 1.0
    if form == "static":
        return classic_cfg(v_cond, v_uncond, omega), 1.0
    s_star = optimal_scale(v_cond, v_uncond, region, delta)
    return cfg_zero_star(v_cond, v_uncond, omega, s_star), s_star


class ExpertTurns:
    """Which expert denoises each step, and its ω0: a model's transformers take turns (Wan2.2 A14B: high
    noise, then low noise); whoever holds the weights is told before an expert's first step."""

    def __init__(
        self, family: ModelFamily, pipe: object, omega0: float | tuple[float, ...], told: ExpertCallback | None
    ) -> None:
        self.family, self.pipe, self.told = family, pipe, told
        self.omegas = (float(omega0),) if isinstance(omega0, int | float) else tuple(omega0)
        self.current: int | None = None

    def at(self, t: torch.Tensor) -> tuple[int, float]:
        expert = self.family.expert(self.pipe, t)
        if expert != self.current and self.told is not None:
            self.told(expert)
        self.current = expert
        return expert, self.omegas[min(expert, len(self.omegas) - 1)]


def _stepper(
    family: ModelFamily,
    pipe: object,
    steps: int,
    like: torch.Tensor,
    generator: torch.Generator | None,
    sigmas: tuple[float, ...] | None,
) -> Stepper:
    """The family's own noise process, or Euler steps over a step-distilled model's listed levels."""
    if sigmas is None:
        return family.stepper(pipe, steps, like, generator)
    if len(sigmas) != steps:
        raise ValueError(f"{len(sigmas)} noise levels for {steps} steps")
    return FlowEulerStepper(tuple(sigmas), pipe.scheduler.config.num_train_timesteps, like.device)


def _require_resolved(settings: EditSettings) -> None:
    unset = [name for name in SCHEDULE_DEFAULTS if getattr(settings, name) is None]
    if unset:
        raise ValueError(f"sample_kvlock needs resolved settings (resolve_schedule): {', '.join(unset)} unset")


def sample_kvlock(
    family: ModelFamily,
    pipe: object,
    bank: KVBank,
    x0_source: torch.Tensor,
    noise: torch.Tensor,
    masks: TokenMask,
    prompts: Prompts,
    settings: EditSettings,
    *,
    steps: int,
    omega0: float | tuple[float, ...],
    callback: StepCallback | None = None,
    on_expert: ExpertCallback | None = None,
    cancel: threading.Event | None = None,
    pair_guidance: bool = True,
    generator: torch.Generator | None = None,
    layout: Layout | None = None,
    interleave: bool = True,
    sigmas: tuple[float, ...] | None = None,
) -> tuple[torch.Tensor, list[StepRecord]]:
    """Denoise one window; return the final latents and the per-step records.

    ``settings`` must be resolved (``kvlock.settings.resolve_schedule``; τ set where the control measures h).
    ``pair_guidance`` lets foreground-only guidance passes run as one batch; results agree with separate
    passes to float rounding.
    ``generator`` feeds a stochastic scheduler's noise, if the family's scheduler has any. ``layout`` spreads
    the tokens over devices (default: all on this one). ``interleave`` lets a step's source and edit passes
    run block by block where the family allows it (``plan.plan_step`` says when).
    ``sigmas`` (a step-distilled model's noise levels, one per step) replaces the family's scheduler
    with Euler steps over exactly those levels.
    """
    _require_resolved(settings)
    layout = layout if layout is not None else OneDevice()
    x0_source = layout.agree(x0_source)
    device = x0_source.device
    stepper = _stepper(family, pipe, steps, x0_source, generator, sigmas)
    first = start_index(steps, settings.strength)
    stepper.begin(first)
    run_steps = steps - first

    soft = masks.soft[None, None].to(device)
    region = masks.latent[None, None].to(device)
    has_background = not bool(masks.flat.all())
    tokens = layout.pass_tokens(masks)
    bank.background_index, bank.joined = tokens.background.to(device), tokens.joined
    passes = Passes(family, pipe, bank, masks, device, tokens, single_device=isinstance(layout, OneDevice))
    meter = HallucinationMeter(settings.metric_window, region, latent_scale(x0_source))
    control_start = max(0, run_steps - settings.kappa)
    turns = ExpertTurns(family, pipe, omega0, on_expert)
    last_source: int | None = None  # the step whose source pass the bank holds

    def lock(z: torch.Tensor, i: int) -> torch.Tensor:
        return soft * z + (1.0 - soft) * stepper.noised(x0_source, noise, i)

    z = noise.clone() if first == 0 else stepper.noised(x0_source, noise, first)
    z = lock(z, first)
    records: list[StepRecord] = []
    try:
        for i in range(first, steps):
            if cancel is not None and cancel.is_set():
                raise EditCancelled(i - first, run_steps)
            began = time.perf_counter()
            t, sigma = stepper.timesteps[i], stepper.levels[i]
            expert, w0 = turns.at(t)
            controlled = i - first >= control_start
            ctl = control_at(
                i - first,
                run_steps,
                meter.value,
                ready=meter.full,
                kappa=settings.kappa,
                tau=settings.tau,
                omega0=w0,
                b=settings.b,
                alpha_min=settings.alpha_min,
                alpha_early=settings.alpha_early,
                alpha_fixed=settings.alpha_fixed,
                guidance_form=settings.guidance_form,
            )
            plan = plan_step(
                ctl.alpha,
                has_background=has_background,
                can=passes.capabilities,
                foreground_only=settings.foreground_only,
                uncond=w0 > 1.0,  # ω0 ≤ 1: CFG-free, ω stays ω0 (control_at), no unconditional pass
                pair_guidance=pair_guidance,
                own_uncond_source=prompts.negative_source is not None,
                source_pass=settings.source_pass,
                source_refresh=settings.source_refresh,
                since_source=None if last_source is None else i - last_source,
                interleave=interleave,
            )
            noised = partial(stepper.noised, x0_source, noise, i)
            v_cond, v_uncond = passes.run(plan, ctl.alpha, z, t, noised, prompts)
            if plan.source in ("full", "background"):
                last_source = None if plan.lockstep else i
            v, s_star = guide(v_cond, v_uncond, ctl.omega, settings.guidance_form, region, settings.cfg_zero_delta)
            x0_estimate = stepper.clean_estimate(z, v, i)
            h = meter.update(stepper.clean_estimate(z, v_cond, i), sigma) if controlled else None
            z = stepper.step(v, i, z)
            z = lock(z, i + 1)
            z = layout.agree(z)  # every rank continues from rank 0's latents
            mode, seconds = plan.mode, time.perf_counter() - began
            record = StepRecord(
                i - first, float(sigma), h, ctl.alpha, ctl.omega, s_star, mode, seconds, plan.source, expert
            )
            records.append(record)
            if callback is not None:
                callback(StepDone(record, run_steps, z, x0_estimate))
    finally:
        bank.clear()
    return z, records

"""The KV-Lock denoising loop for one temporal window, as a plain function (k-diffusion style).

Per step k (docs/design.md §2.3): choose α_k, ω_k from the metric (``lock.schedules``); decide which passes
the step runs (``plan.plan_step``); run them (``passes.Passes``): the source pass on the noised source
captures the background K/V, the conditional and unconditional edit passes read them fused (foreground
tokens only when α_k = 1); combine the predictions with CFG-Zero* (or classic CFG); take the scheduler step;
reset the background latents to the noised source at the next σ (the latent lock); update the metric on
the conditional prediction's x̂0, from the first controlled step on. One callback per step carries what a
progress bar, a preview, a trace or a cancel check needs.

Takes. One window may be denoised for several takes at once (``EditSettings.takes``): each take has its own
noise inside the matte, its own scheduler state, metric and schedule of α and ω; outside the matte their
noise is the first take's (``lock.noise.take_noise``), so their background latents are the same noised source
at every step. A step's source pass sees only the source and that shared noise, so one source pass serves
every take's edit passes; a take whose α is 0 at this step runs plain passes and needs none.

Which tokens the passes and the K/V bank work on comes from a :class:`~.layout.Layout`: on one device the
mask's own indices; under sequence parallelism (``kvlock.execution.sequence_parallel``) this rank's share.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial

import torch

from ..errors import EditCancelled
from ..families.base import ModelFamily
from ..families.steppers import FlowEulerStepper, Stepper
from ..lock.guidance import cfg_zero_star, classic_cfg, optimal_scale
from ..lock.kv_bank import KVBank
from ..lock.metric import HallucinationMeter, latent_scale
from ..lock.schedules import StepControl, control_at
from ..lock.token_mask import TokenMask
from ..settings import SCHEDULE_DEFAULTS, EditSettings
from ..trace import StepRecord
from .layout import Layout, OneDevice
from .passes import Passes, Prompts
from .plan import StepPlan, plan_step


@dataclass(frozen=True)
class StepDone:
    """What the loop tells its callback after each step of each take: the trace's row, how many steps the
    window runs, the latents it continues from, this step's guided clean estimate (for previews), and which
    take (0-based) of how many ran it."""

    record: StepRecord
    total: int
    latents: torch.Tensor
    x0: torch.Tensor
    take: int = 0
    takes: int = 1


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


@dataclass
class Walk:
    """One take's way through the window: its noise, its scheduler's state, its metric, where it is."""

    noise: torch.Tensor
    stepper: Stepper
    meter: HallucinationMeter
    z: torch.Tensor = field(init=False)
    records: list[StepRecord] = field(default_factory=list)


def take_control(walk: Walk, position: int, run_steps: int, omega0: float, settings: EditSettings) -> StepControl:
    """α and ω of one take at step ``position`` of ``run_steps``, from its own metric."""
    return control_at(
        position,
        run_steps,
        walk.meter.value,
        ready=walk.meter.full,
        kappa=settings.kappa,
        tau=settings.tau,
        omega0=omega0,
        b=settings.b,
        alpha_min=settings.alpha_min,
        alpha_early=settings.alpha_early,
        alpha_fixed=settings.alpha_fixed,
        guidance_form=settings.guidance_form,
    )


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
    return sample_takes(
        family,
        pipe,
        bank,
        x0_source,
        [noise],
        masks,
        prompts,
        settings,
        steps=steps,
        omega0=omega0,
        callback=callback,
        on_expert=on_expert,
        cancel=cancel,
        pair_guidance=pair_guidance,
        generators=[generator],
        layout=layout,
        interleave=interleave,
        sigmas=sigmas,
    )[0]


def sample_takes(
    family: ModelFamily,
    pipe: object,
    bank: KVBank,
    x0_source: torch.Tensor,
    noises: Sequence[torch.Tensor],
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
    generators: Sequence[torch.Generator | None] | None = None,
    layout: Layout | None = None,
    interleave: bool = True,
    source_noise: torch.Tensor | None = None,
    sigmas: tuple[float, ...] | None = None,
) -> list[tuple[torch.Tensor, list[StepRecord]]]:
    """Denoise one window for every take in ``noises`` at once; the final latents and records of each.

    The takes' noises must agree outside the foreground tokens (``lock.noise.take_noise``). The source pass
    runs on ``source_noise`` — the first take's noise, whatever takes run here (default: ``noises[0]``) —
    once per step for all of them, so a take comes out the same run with the others or alone. One take is
    exactly :func:`sample_kvlock`. ``generators`` (one per take, or None) feed a stochastic scheduler.
    """
    _require_resolved(settings)
    layout = layout if layout is not None else OneDevice()
    x0_source = layout.agree(x0_source)
    device = x0_source.device
    generators = list(generators) if generators is not None else [None] * len(noises)
    first = start_index(steps, settings.strength)
    walks = []
    meter_scale = latent_scale(x0_source)
    region = masks.latent[None, None].to(device)
    for noise, generator in zip(noises, generators, strict=True):
        stepper = _stepper(family, pipe, steps, x0_source, generator, sigmas)
        stepper.begin(first)
        walks.append(Walk(noise, stepper, HallucinationMeter(settings.metric_window, region, meter_scale)))
    run_steps = steps - first
    shared = source_noise if source_noise is not None else walks[0].noise

    soft = masks.soft[None, None].to(device)
    has_background = not bool(masks.flat.all())
    tokens = layout.pass_tokens(masks)
    bank.background_index, bank.joined = tokens.background.to(device), tokens.joined
    passes = Passes(family, pipe, bank, masks, device, tokens, single_device=isinstance(layout, OneDevice))
    control_start = max(0, run_steps - settings.kappa)
    turns = ExpertTurns(family, pipe, omega0, on_expert)
    last_source: int | None = None  # the step whose source pass the bank holds

    def lock(walk: Walk, z: torch.Tensor, i: int) -> torch.Tensor:
        return soft * z + (1.0 - soft) * walk.stepper.noised(x0_source, walk.noise, i)

    for walk in walks:
        start = walk.noise.clone() if first == 0 else walk.stepper.noised(x0_source, walk.noise, first)
        walk.z = lock(walk, start, first)
    try:
        for i in range(first, steps):
            if cancel is not None and cancel.is_set():
                raise EditCancelled(i - first, run_steps)
            began = time.perf_counter()
            t = walks[0].stepper.timesteps[i]
            expert, w0 = turns.at(t)

            controls = [take_control(walk, i - first, run_steps, w0, settings) for walk in walks]
            since = None if last_source is None else i - last_source
            plans = [
                plan_step(
                    ctl.alpha,
                    has_background=has_background,
                    can=passes.capabilities,
                    foreground_only=settings.foreground_only,
                    uncond=w0 > 1.0,  # ω0 ≤ 1: CFG-free, ω stays ω0 (control_at), no unconditional pass
                    pair_guidance=pair_guidance,
                    own_uncond_source=prompts.negative_source is not None,
                    source_pass=settings.source_pass,
                    source_refresh=settings.source_refresh,
                    since_source=since,
                    interleave=interleave,
                )
                for ctl in controls
            ]
            # the source pass sees the source under the first take's noise, which every take shares outside the matte
            noised = partial(walks[0].stepper.noised, x0_source, shared, i)
            predictions = passes.run_takes(plans, [c.alpha for c in controls], [w.z for w in walks], t, noised, prompts)
            if any(plan.source in ("full", "background") for plan in plans):
                last_source = None if any(plan.lockstep for plan in plans) else i
            estimates = []
            for walk, ctl, plan, (v_cond, v_uncond) in zip(walks, controls, plans, predictions, strict=True):
                step = Step(i, i - first, ctl, plan, expert, i - first >= control_start)
                estimates.append(advance(walk, step, v_cond, v_uncond, region, settings, lock))
                walk.z = layout.agree(walk.z)  # every rank continues from rank 0's latents
            seconds = time.perf_counter() - began  # the step's, for every take it ran
            for k, (walk, x0_estimate) in enumerate(zip(walks, estimates, strict=True)):
                walk.records[-1] = replace(walk.records[-1], seconds=seconds)
                if callback is not None:
                    callback(StepDone(walk.records[-1], run_steps, walk.z, x0_estimate, k, len(walks)))
    finally:
        bank.clear()
    return [(walk.z, walk.records) for walk in walks]


@dataclass(frozen=True)
class Step:
    """One step as every take runs it: its index (``i``) and position in the run, the take's control and
    plan, the expert, and whether the metric is measured."""

    i: int
    position: int
    control: StepControl
    plan: StepPlan
    expert: int
    measured: bool


def advance(
    walk: Walk,
    step: Step,
    v_cond: torch.Tensor,
    v_uncond: torch.Tensor | None,
    region: torch.Tensor,
    settings: EditSettings,
    lock: Callable[[Walk, torch.Tensor, int], torch.Tensor],
) -> torch.Tensor:
    """Guide, measure, step and lock one take; record the step; return its guided clean estimate."""
    i, ctl, z, stepper = step.i, step.control, walk.z, walk.stepper
    v, s_star = guide(v_cond, v_uncond, ctl.omega, settings.guidance_form, region, settings.cfg_zero_delta)
    x0_estimate = stepper.clean_estimate(z, v, i)
    sigma = float(stepper.levels[i])
    h = walk.meter.update(stepper.clean_estimate(z, v_cond, i), sigma) if step.measured else None
    z = stepper.step(v, i, z)
    walk.z = lock(walk, z, i + 1)
    record = StepRecord(
        step.position,
        sigma,
        h,
        ctl.alpha,
        ctl.omega,
        s_star,
        step.plan.mode,
        0.0,  # the step's time, once every take has run it
        step.plan.source,
        step.expert,
    )
    walk.records.append(record)
    return x0_estimate

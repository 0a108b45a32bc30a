"""The KV-Lock denoising loop for one temporal window, as a plain function (k-diffusion style).

Per step k (DESIGN §2.3): choose α_k, ω_k from the metric; if α_k > 0 run the source pass on the noised
source and capture background K/V (two approximations, off by default, trade exactness for speed: a source
pass over the background tokens alone, and reusing one source pass's K/V for the next locked steps); run
the conditional and unconditional edit passes with the K/V fused (foreground tokens only when α_k = 1);
combine them with CFG-Zero* (or classic CFG); take the scheduler step; reset the background latents to the
noised source at the next σ; update the metric (on the conditional prediction's x̂0, from the first
controlled step on). One callback per step carries everything
a progress bar, a preview, a trace or a cancel check needs.

Which tokens the passes and the K/V bank work on comes from a :class:`Layout`: on one device the mask's own
indices; under sequence parallelism (``kvlock.sequence_parallel``) this rank's share of them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from .errors import EditCancelled
from .families.base import ModelFamily
from .guidance import cfg_zero_star, classic_cfg, optimal_scale
from .kv_bank import KVBank
from .metric import HallucinationMeter, latent_scale
from .schedules import control_at
from .settings import EditSettings, with_schedule
from .token_mask import TokenMask

StepCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Prompts:
    """Encoded prompts for one job; ``negative_source`` only when the uncond pass has its own source."""

    cond: torch.Tensor
    uncond: torch.Tensor
    source: torch.Tensor
    negative_source: torch.Tensor | None = None


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


@dataclass(frozen=True)
class PassTokens:
    """The tokens one device's passes work with.

    ``background``: indices, among the tokens of a full pass on this device, of the background tokens the
    bank captures and fuses. ``foreground``: the token indices a foreground-only pass runs (None: no
    foreground-only pass can be laid out; full fused passes are used instead). ``joined``: how many of this
    device's foreground-pass tokens join the K/V (None: all of them). ``background_pass``: whether a source
    pass over the background tokens alone can run here (one device: the background is ``background``).
    """

    background: torch.Tensor
    foreground: torch.Tensor | None
    joined: int | None = None
    background_pass: bool = False


class Layout(Protocol):
    """How the tokens of a window are spread over the devices that run it."""

    def pass_tokens(self, masks: TokenMask) -> PassTokens: ...

    def agree(self, tensor: torch.Tensor) -> torch.Tensor:
        """The same values on every device (the decisions of the loop depend on them)."""
        ...


class OneDevice:
    """Every token on this device."""

    def pass_tokens(self, masks: TokenMask) -> PassTokens:
        return PassTokens(masks.background_index, masks.foreground_index, background_pass=True)

    def agree(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor


def start_index(steps: int, strength: float) -> int:
    """First step to run for ``strength`` in (0, 1]: 1 starts from pure noise, smaller from the noised source."""
    return min(steps - 1, round(steps * (1.0 - strength)))


def edit_mode(alpha: float, has_background: bool, foreground_only: bool) -> str:
    """Which kind of edit pass a step needs (DESIGN §2, "why it is fast")."""
    if alpha <= 0.0 or not has_background:
        return "off"
    if alpha >= 1.0 and foreground_only:
        return "foreground"
    return "fuse"


class _Passes:
    """The transformer passes of one step, routed through the bank's modes."""

    def __init__(
        self,
        family: ModelFamily,
        pipe: Any,
        bank: KVBank,
        masks: TokenMask,
        device: torch.device | None = None,
        tokens: PassTokens | None = None,
        single_device: bool = True,
    ) -> None:
        self.family, self.pipe, self.bank, self.masks = family, pipe, bank, masks
        device = device if device is not None else pipe.transformer.device
        tokens = tokens if tokens is not None else OneDevice().pass_tokens(masks)
        self.fg_index = tokens.foreground.to(device) if tokens.foreground is not None else None
        self.bg_index = tokens.background.to(device) if tokens.background_pass else None
        self.region = masks.latent[None, None].to(device)
        self.single_device = single_device

    @property
    def foreground_possible(self) -> bool:
        return self.fg_index is not None

    def can_pair(self, mode: str) -> bool:
        """Whether the two guidance passes may run as one batch of two.

        Only foreground-only passes are paired, and only when both together hold no more tokens than one
        full pass: the batch then costs no more activation memory than a plain step, and the small
        per-pass matrices fill the GPU better.
        """
        if mode != "foreground" or self.fg_index is None:
            return False
        return 2 * self.fg_index.numel() <= self.masks.flat.numel()

    def edit_pair(
        self,
        mode: str,
        alpha: float,
        z: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        uncond: torch.Tensor,
        fill: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The conditional and unconditional passes in one forward (both see the same source K/V)."""
        v = self.edit(mode, alpha, torch.cat([z, z]), t, torch.cat([cond, uncond]), fill)
        return v[:1], v[1:]

    def source(
        self, z_src: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, background: bool = False
    ) -> torch.Tensor:
        """The source pass; ``background``: over the background tokens alone (their K/V then carry no trace of
        the old subject, and the pass costs the background's share of a full one). The output at foreground
        positions is then zero: it only ever fills background positions, which the latent lock replaces."""
        if background and self.bg_index is not None and self.bg_index.numel():
            with self.bank.pass_mode("capture_own"):
                return self.family.predict_tokens(self.pipe, z_src, t, embeds, self.bg_index).float()
        with self.bank.pass_mode("capture"):
            return self.family.predict(self.pipe, z_src, t, embeds).float()

    def can_interleave(self, mode: str) -> bool:
        """Whether this step's source pass and edit passes may run block by block in lockstep: the family
        opens its forward at the blocks (``stages``), every token is on this device, and the pass reads
        the source's K/V (``fuse`` or ``foreground``)."""
        return self.single_device and mode in ("fuse", "foreground") and hasattr(self.family, "stages")

    def interleaved(
        self,
        mode: str,
        alpha: float,
        z_src: torch.Tensor,
        t: torch.Tensor,
        source_embeds: torch.Tensor,
        batches: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The source pass and the edit passes ``batches`` (latents, prompt embeddings) of one step, layer
        by layer: block l of the source pass stores its background K/V, block l of every edit pass reads
        them, and the bank forgets them. Each pass computes exactly what it computes on its own, but the
        bank never holds more than one layer (the 14B model's full bank is 17.5 GiB at 81×480×832).
        Returns the source pass's prediction (the background fill) and each edit pass's."""
        source = self.family.stages(self.pipe, z_src, t, source_embeds, None)
        index = self.fg_index if mode == "foreground" else None
        edits = [self.family.stages(self.pipe, z, t, embeds, index) for z, embeds in batches]
        x_src, xs = source.state, [e.state for e in edits]
        try:
            for layer, block in enumerate(source.blocks):
                with self.bank.pass_mode("capture", layer=layer):
                    x_src = source.run(block, x_src)
                for k, stage in enumerate(edits):
                    with self.bank.pass_mode(mode, alpha, layer=layer):
                        xs[k] = stage.run(block, xs[k])
                self.bank.forget(layer)
        finally:
            self.bank.clear()
        fill = source.finish(x_src).float()
        out = [stage.finish(x).float() for stage, x in zip(edits, xs, strict=True)]
        if mode == "foreground":
            out = [torch.where(self.region, v, fill) for v in out]
        return fill, out

    def edit(
        self,
        mode: str,
        alpha: float,
        z: torch.Tensor,
        t: torch.Tensor,
        embeds: torch.Tensor,
        fill: torch.Tensor | None,
    ) -> torch.Tensor:
        with self.bank.pass_mode(mode, alpha):
            if mode == "foreground":
                assert fill is not None
                v = self.family.predict_tokens(self.pipe, z, t, embeds, self.fg_index).float()
                return torch.where(self.region, v, fill)
            return self.family.predict(self.pipe, z, t, embeds).float()


def sample_kvlock(
    family: ModelFamily,
    pipe: Any,
    bank: KVBank,
    x0_source: torch.Tensor,
    noise: torch.Tensor,
    masks: TokenMask,
    prompts: Prompts,
    settings: EditSettings,
    *,
    steps: int,
    omega0: float,
    callback: StepCallback | None = None,
    cancel: threading.Event | None = None,
    pair_guidance: bool = True,
    generator: torch.Generator | None = None,
    layout: Layout | None = None,
    interleave: bool = True,
) -> tuple[torch.Tensor, list[StepRecord]]:
    """Denoise one window; return the final latents and the per-step records.

    ``settings`` must already be validated (baselines resolved into knobs). ``pair_guidance`` lets
    foreground-only guidance passes run as one batch (see ``_Passes.can_pair``); results agree with
    separate passes to float rounding. ``generator`` feeds a stochastic scheduler's noise, if the family's
    scheduler has any. ``layout`` spreads the tokens over devices (default: all on this one).

    ``settings.source_refresh`` = N reuses a source pass's K/V (and its background fill) for up to N − 1
    following steps that need them; ``settings.source_pass`` = "background" runs it over the background
    tokens only (one device; elsewhere the full pass runs). Both are approximations, off by default.

    ``interleave`` runs a step's source pass and its edit passes block by block in lockstep where the
    family allows it (``_Passes.interleaved``): the same numbers, one layer of K/V held instead of all.
    It needs the bank for this step only, so it stands aside for ``source_refresh`` > 1, the
    background-only source pass and a separate negative source prompt.
    """
    layout = layout if layout is not None else OneDevice()
    x0_source = layout.agree(x0_source)
    device = x0_source.device
    stepper = family.stepper(pipe, steps, x0_source, generator)
    settings = with_schedule(settings)  # fields left unset take the engine's defaults (the editor fills them first)
    first = start_index(steps, settings.strength)
    stepper.begin(first)
    run_steps = steps - first

    soft = masks.soft[None, None].to(device)
    region = masks.latent[None, None].to(device)
    has_background = not bool(masks.flat.all())
    tokens = layout.pass_tokens(masks)
    bank.background_index, bank.joined = tokens.background.to(device), tokens.joined
    passes = _Passes(family, pipe, bank, masks, device, tokens, single_device=isinstance(layout, OneDevice))
    foreground_only = settings.foreground_only and passes.foreground_possible
    meter = HallucinationMeter(settings.metric_window, region, latent_scale(x0_source))
    control_start = max(0, run_steps - settings.kappa)
    use_uncond = not (settings.guidance_form == "static" and omega0 <= 1.0)
    background_source = settings.source_pass == "background"
    source_kind = "background" if background_source and tokens.background_pass else "full"
    last_source: int | None = None  # the step whose source pass the bank holds, and that pass's output
    last_fill: torch.Tensor | None = None

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
            controlled = i - first >= control_start
            ctl = control_at(
                i - first,
                run_steps,
                meter.value,
                ready=meter.full,
                kappa=settings.kappa,
                tau=settings.tau,
                omega0=omega0,
                b=settings.b,
                alpha_min=settings.alpha_min,
                alpha_early=settings.alpha_early,
                alpha_fixed=settings.alpha_fixed,
                guidance_form=settings.guidance_form,
            )
            mode = edit_mode(ctl.alpha, has_background, foreground_only)
            source, fill = "", None
            paired = use_uncond and pair_guidance and prompts.negative_source is None and passes.can_pair(mode)
            lockstep = (
                interleave
                and settings.source_refresh == 1
                and source_kind == "full"
                and prompts.negative_source is None
                and passes.can_interleave(mode)
            )
            if lockstep:
                if paired:
                    batches = [(torch.cat([z, z]), torch.cat([prompts.cond, prompts.uncond]))]
                else:
                    batches = [(z, prompts.cond)] + ([(z, prompts.uncond)] if use_uncond else [])
                noised = stepper.noised(x0_source, noise, i)
                fill, vs = passes.interleaved(mode, ctl.alpha, noised, t, prompts.source, batches)
                source, last_source = "full", None  # the bank kept nothing to reuse
                v_cond, v_uncond = (vs[0][:1], vs[0][1:]) if paired else (vs[0], vs[1] if use_uncond else None)
            else:
                if mode != "off":
                    if last_source is not None and i - last_source < settings.source_refresh:
                        source, fill = "reused", last_fill
                    else:
                        noised = stepper.noised(x0_source, noise, i)
                        fill = passes.source(noised, t, prompts.source, background_source)
                        last_source, last_fill, source = i, fill, source_kind
                if paired:
                    v_cond, v_uncond = passes.edit_pair(mode, ctl.alpha, z, t, prompts.cond, prompts.uncond, fill)
                else:
                    v_cond = passes.edit(mode, ctl.alpha, z, t, prompts.cond, fill)
            s_star = 1.0
            if use_uncond:
                if not paired and not lockstep:
                    fill_u = fill
                    if mode != "off" and prompts.negative_source is not None:
                        noised = stepper.noised(x0_source, noise, i)
                        fill_u = passes.source(noised, t, prompts.negative_source, background_source)
                    v_uncond = passes.edit(mode, ctl.alpha, z, t, prompts.uncond, fill_u)
                if settings.guidance_form == "static":
                    v = classic_cfg(v_cond, v_uncond, ctl.omega)
                else:
                    s_star = optimal_scale(v_cond, v_uncond, region, settings.cfg_zero_delta)
                    v = cfg_zero_star(v_cond, v_uncond, ctl.omega, s_star)
            else:
                v = v_cond
            x0_estimate = stepper.clean_estimate(z, v, i)
            h = meter.update(stepper.clean_estimate(z, v_cond, i)) if controlled else None
            z = stepper.step(v, i, z)
            z = lock(z, i + 1)
            z = layout.agree(z)  # every rank continues from rank 0's latents
            record = StepRecord(
                step=i - first,
                sigma=float(sigma),
                h=h,
                alpha=ctl.alpha,
                omega=ctl.omega,
                s_star=s_star,
                mode=mode,
                seconds=time.perf_counter() - began,
                source=source,
            )
            records.append(record)
            if callback is not None:
                callback({"record": record, "total": run_steps, "latents": z, "x0": x0_estimate})
    finally:
        bank.clear()
    return z, records

"""The transformer passes of one step, routed through the K/V bank's modes, run as a :class:`StepPlan` says."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..families.base import ModelFamily
from ..lock.kv_bank import KVBank
from ..lock.token_mask import TokenMask
from .layout import OneDevice, PassTokens
from .plan import PassCapabilities, StepPlan


@dataclass(frozen=True)
class Prompts:
    """Encoded prompts for one job; ``negative_source`` only when the uncond pass has its own source."""

    cond: torch.Tensor
    uncond: torch.Tensor
    source: torch.Tensor
    negative_source: torch.Tensor | None = None


class Passes:
    """The passes of a window's steps: which tokens they run on, and one call per kind of pass."""

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
        self.capabilities = PassCapabilities(
            foreground=self.fg_index is not None,
            # both guidance passes together hold no more tokens than one full pass: no more activation
            # memory than a plain step, and the small per-pass matrices fill the GPU better
            pairable=self.fg_index is not None and 2 * self.fg_index.numel() <= masks.flat.numel(),
            lockstep=single_device and hasattr(family, "stages"),
            background_pass=tokens.background_pass,
        )
        self._fill: torch.Tensor | None = None  # the last source pass's output, for a step that reuses it

    def run(
        self,
        plan: StepPlan,
        alpha: float,
        z: torch.Tensor,
        t: torch.Tensor,
        noised: Callable[[], torch.Tensor],
        prompts: Prompts,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The conditional and (if the plan has one) unconditional predictions of one step.

        ``noised()`` gives the source noised to this step's level, for the source passes that need it.
        """
        if plan.lockstep:
            return self._lockstep(plan, alpha, z, t, noised(), prompts)
        fill = None
        if plan.source == "reused":
            fill = self._fill
        elif plan.source:
            fill = self._fill = self.source(noised(), t, prompts.source, plan.source == "background")
        if plan.paired:
            return self.edit_pair(plan.mode, alpha, z, t, prompts.cond, prompts.uncond, fill)
        v_cond = self.edit(plan.mode, alpha, z, t, prompts.cond, fill)
        if not plan.uncond:
            return v_cond, None
        if plan.own_uncond_source:
            assert prompts.negative_source is not None, "an own uncond source pass needs the negative prompt"
            fill = self.source(noised(), t, prompts.negative_source, plan.source == "background")
        return v_cond, self.edit(plan.mode, alpha, z, t, prompts.uncond, fill)

    def _lockstep(
        self, plan: StepPlan, alpha: float, z: torch.Tensor, t: torch.Tensor, z_src: torch.Tensor, prompts: Prompts
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if plan.paired:
            batches = [(torch.cat([z, z]), torch.cat([prompts.cond, prompts.uncond]))]
        else:
            batches = [(z, prompts.cond)] + ([(z, prompts.uncond)] if plan.uncond else [])
        self._fill = None  # the bank keeps nothing a later step could reuse
        _, vs = self.interleaved(plan.mode, alpha, z_src, t, prompts.source, batches)
        if plan.paired:
            return vs[0][:1], vs[0][1:]
        return vs[0], vs[1] if plan.uncond else None

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

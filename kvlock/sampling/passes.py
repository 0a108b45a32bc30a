"""The transformer passes of one step, routed through the K/V bank's modes, run as a :class:`StepPlan` says."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..families.base import ModelFamily
from ..lock.kv_bank import KVBank
from ..lock.token_mask import TokenMask
from .layout import OneDevice, PassTokens
from .plan import PassCapabilities, StepPlan


@dataclass(frozen=True)
class EditBatch:
    """One edit pass of a lockstep step: its latents (a batch of one, or two for paired guidance), prompt
    embeddings, K/V mode and α."""

    z: torch.Tensor
    embeds: torch.Tensor
    mode: str
    alpha: float


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
        return self.run_takes([plan], [alpha], [z], t, noised, prompts)[0]

    def run_takes(
        self,
        plans: Sequence[StepPlan],
        alphas: Sequence[float],
        zs: Sequence[torch.Tensor],
        t: torch.Tensor,
        noised: Callable[[], torch.Tensor],
        prompts: Prompts,
    ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Each take's predictions at one step, its own plan and α over one shared source pass.

        Takes at α = 0 run plain passes. The others agree on everything a plan decides from shared facts
        (where the source's K/V come from, lockstep, the unconditional pass's own source), so one source
        pass — or, in lockstep, one source block per layer — serves all of them.
        """
        out: list[tuple[torch.Tensor, torch.Tensor | None] | None] = [None] * len(plans)
        for k, plan in enumerate(plans):
            if plan.mode == "off":
                out[k] = self._plain(plan, zs[k], t, prompts)
        active = [k for k, plan in enumerate(plans) if plan.mode != "off"]
        if active:
            lead = plans[active[0]]
            runs = [(plans[k], alphas[k], zs[k]) for k in active]
            fused = (
                self._lockstep(runs, t, noised(), prompts)
                if lead.lockstep
                else self._with_bank(lead, runs, t, noised, prompts)
            )
            for k, predictions in zip(active, fused, strict=True):
                out[k] = predictions
        return [o for o in out if o is not None]

    def _plain(
        self, plan: StepPlan, z: torch.Tensor, t: torch.Tensor, prompts: Prompts
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        v_cond = self.edit("off", 0.0, z, t, prompts.cond, None)
        return v_cond, self.edit("off", 0.0, z, t, prompts.uncond, None) if plan.uncond else None

    def _with_bank(
        self,
        lead: StepPlan,
        runs: list[tuple[StepPlan, float, torch.Tensor]],
        t: torch.Tensor,
        noised: Callable[[], torch.Tensor],
        prompts: Prompts,
    ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """The source pass (or the bank's last one) once, then every take's edit passes reading it; with an
        own unconditional source pass, that one runs after every conditional pass has read the first."""
        background = lead.source == "background"
        fill = self._fill if lead.source == "reused" else None
        if lead.source in ("full", "background"):
            fill = self._fill = self.source(noised(), t, prompts.source, background)
        conds: list[torch.Tensor] = []
        unconds: list[torch.Tensor | None] = []
        for plan, alpha, z in runs:
            if plan.paired:
                v_cond, v_uncond = self.edit_pair(plan.mode, alpha, z, t, prompts.cond, prompts.uncond, fill)
                conds.append(v_cond)
                unconds.append(v_uncond)
                continue
            conds.append(self.edit(plan.mode, alpha, z, t, prompts.cond, fill))
            unconds.append(None)
        if lead.own_uncond_source:
            assert prompts.negative_source is not None, "an own uncond source pass needs the negative prompt"
            fill = self.source(noised(), t, prompts.negative_source, background)
        for k, (plan, alpha, z) in enumerate(runs):
            if plan.uncond and not plan.paired:
                unconds[k] = self.edit(plan.mode, alpha, z, t, prompts.uncond, fill)
        return list(zip(conds, unconds, strict=True))

    def _lockstep(
        self, runs: list[tuple[StepPlan, float, torch.Tensor]], t: torch.Tensor, z_src: torch.Tensor, prompts: Prompts
    ) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        batches: list[EditBatch] = []
        for plan, alpha, z in runs:
            if plan.paired:
                batches.append(
                    EditBatch(torch.cat([z, z]), torch.cat([prompts.cond, prompts.uncond]), plan.mode, alpha)
                )
                continue
            batches.append(EditBatch(z, prompts.cond, plan.mode, alpha))
            if plan.uncond:
                batches.append(EditBatch(z, prompts.uncond, plan.mode, alpha))
        self._fill = None  # the bank keeps nothing a later step could reuse
        _, vs = self.interleaved(z_src, t, prompts.source, batches)
        out = []
        for plan, _, _ in runs:
            if plan.paired:
                v = vs.pop(0)
                out.append((v[:1], v[1:]))
                continue
            v_cond = vs.pop(0)
            out.append((v_cond, vs.pop(0) if plan.uncond else None))
        return out

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
        z_src: torch.Tensor,
        t: torch.Tensor,
        source_embeds: torch.Tensor,
        batches: list[EditBatch],
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The source pass and the edit passes ``batches`` of one step, layer by layer: block l of the
        source pass stores its background K/V, block l of every edit pass reads them (each batch in its own
        mode and α: several takes share the source pass), and the bank forgets them. Each pass computes
        exactly what it computes on its own, but the bank never holds more than one layer (the 14B model's
        full bank is 17.5 GiB at 81×480×832). Returns the source pass's prediction (the background fill)
        and each edit pass's."""
        source = self.family.stages(self.pipe, z_src, t, source_embeds, None)
        edits = [
            self.family.stages(self.pipe, b.z, t, b.embeds, self.fg_index if b.mode == "foreground" else None)
            for b in batches
        ]
        x_src, xs = source.state, [e.state for e in edits]
        try:
            for layer, block in enumerate(source.blocks):
                with self.bank.pass_mode("capture", layer=layer):
                    x_src = source.run(block, x_src)
                for k, (stage, batch) in enumerate(zip(edits, batches, strict=True)):
                    with self.bank.pass_mode(batch.mode, batch.alpha, layer=layer):
                        xs[k] = stage.run(block, xs[k])
                self.bank.forget(layer)
        finally:
            self.bank.clear()
        fill = source.finish(x_src).float()
        out = [stage.finish(x).float() for stage, x in zip(edits, xs, strict=True)]
        out = [
            torch.where(self.region, v, fill) if b.mode == "foreground" else v
            for v, b in zip(out, batches, strict=True)
        ]
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

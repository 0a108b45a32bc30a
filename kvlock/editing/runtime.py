"""A loaded model made ready to edit on its device: K/V bank and processors installed, attention backend,
memory mode (and why), weights placed, an optional process group, compiled blocks; plus the few model calls
every window makes (prompts, decode, a preview) and the timer of each stage.

The choices are reported in ``execution`` (attention backend, compiled or not, memory mode and why), so a
user on a small card can see that the engine chose to offload rather than guess.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np
import torch

from ..execution.acceleration import (
    TYPICAL_BACKGROUND,
    Acceleration,
    attention_backend_for,
    choose_memory_mode,
    estimate_need,
    memory_budget,
    use_compile_cache,
)
from ..execution.loras import LoraState, resolve_mode
from ..execution.residency import Residency
from ..execution.sequence_parallel import SequenceGroup, join_sequence_parallel
from ..loading.load import LoadedModel
from ..lock.kv_bank import KVBank
from ..lock.token_mask import Compression
from ..sampling.passes import Prompts
from ..settings import EditSettings
from .decode_box import DecodeBox, DecoderReach, cropped_after, probe_decoder
from .geometry import Window, resize_video


def token_count(compression: Compression, frames: int, height: int, width: int) -> int:
    pt, ph, pw = compression.patch
    latent_frames = compression.latent_frames(frames)
    return (latent_frames // pt) * (height // compression.vae_s // ph) * (width // compression.vae_s // pw)


def memory_mode(model: LoadedModel, acc: Acceleration) -> tuple[str, str]:
    """The memory mode for ``model`` on its device, and the reason the trace gives for it."""
    if model.device.type != "cuda":
        return "resident", f"{model.device.type}: weights stay in memory"
    if acc.memory != "auto":
        return acc.memory, f"{acc.memory}: chosen by the user"
    d = model.defaults
    tokens = token_count(model.compression, d.frames, d.height, d.width)
    lockstep = hasattr(model.family, "stages") and not acc.parallel  # one layer of K/V held at a time
    experts = [module for _, module in model.family.transformers(model.pipe)]
    need = estimate_need(
        model.pipe, d.height, d.width, tokens, TYPICAL_BACKGROUND, model.dtype, 1 if lockstep else None, experts
    )
    budget = memory_budget(model.device, acc.memory_limit_gb)
    assert budget is not None
    return choose_memory_mode(need, budget)


class Runtime:
    """``model`` with KV-Lock's processors, on its device as ``acceleration`` asks."""

    def __init__(
        self, model: LoadedModel, acceleration: Acceleration | None = None, loras_offered: bool = False
    ) -> None:
        """``loras_offered``: whether any LoRA could be asked for (``auto`` then makes hotswap slots when compiled)."""
        self.model = model
        self.acceleration = acc = (acceleration or Acceleration()).validated()
        self.bank = KVBank()
        self.stage_seconds: dict[str, float] = {}
        self._reach: DecoderReach | None = None
        self._reach_known = False
        family, pipe, device = model.family, model.pipe, model.device
        family.install(pipe, self.bank)
        backend = attention_backend_for(acc.attention, device)
        family.set_attention_backend(pipe, backend)
        mode, reason = memory_mode(model, acc)
        experts = tuple(name for name, _ in family.transformers(pipe))
        self.residency = Residency(pipe, device, mode, experts)
        self.residency.apply()
        # every rank of the process group builds its editor the same way, then they share each edit
        self.group: SequenceGroup | None = (
            join_sequence_parallel(pipe, family, acc.parallel, device) if acc.parallel else None
        )
        compiled = acc.compile if acc.compile and mode != "sequential_offload" else None
        # LoRAs switch between edits without touching the base weights; hotswap slots exist before compilation
        self.loras = LoraState(
            pipe,
            [module for _, module in family.transformers(pipe)],
            resolve_mode(acc.lora_mode, compiled is not None, loras_offered),
            acc.lora_rank,
            acc.lora_slots,
        )
        if self.loras.mode == "hotswap":
            self.loras.prepare_hotswap()
        cache = "off"
        if compiled:
            import torch._dynamo

            if acc.compile_cache:
                cache = use_compile_cache(acc.compile_cache)
            # one graph per pass kind (off / capture / fuse / foreground) and token count, shared by all blocks
            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
            family.compile(pipe, compiled)
        self.execution: dict[str, Any] = {
            "device": str(device),
            "dtype": str(model.dtype).removeprefix("torch."),
            "attention": backend or "default",
            "compile": compiled or "off",
            "compile_cache": cache,
            "pair_guidance": acc.pair_guidance,
            "memory": mode,
            "memory_reason": reason,
            "experts": len(experts),
            "parallel": self.group.describe() if self.group is not None else "off",
            "loras": self.loras.mode,
            "composite": str(self.composite_device),
        }

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Add the block's wall time to ``stage_seconds`` (the device is synchronised first)."""
        device = self.model.device
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        began = time.perf_counter()
        try:
            yield
        finally:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + time.perf_counter() - began

    def vae_tiling(self, height: int, width: int) -> bool:
        choice = self.acceleration.vae_tiling
        if choice != "auto":
            return choice == "on"
        return self.residency.mode == "sequential_offload" or height * width >= 1280 * 720

    def encode_prompts(self, prompt: str, s: EditSettings) -> Prompts:
        fam, pipe, n, device = self.model.family, self.model.pipe, self.model.defaults.text_length, self.model.device
        with torch.no_grad():
            return Prompts(
                cond=fam.encode_prompt(pipe, prompt, n, device),
                uncond=fam.encode_prompt(pipe, s.negative_prompt, n, device),
                source=fam.encode_prompt(pipe, s.source_prompt, n, device),
                negative_source=fam.encode_prompt(pipe, s.negative_prompt, n, device)
                if s.uncond_source == "own"
                else None,
            )

    def set_output(self, decode: str, composite: str) -> None:
        """Switch how windows are decoded and composited (``Acceleration.decode`` and ``composite``), so one
        loaded model can measure one way against the other (bench/gpu.py)."""
        self.acceleration = replace(self.acceleration, decode=decode, composite=composite).validated()
        self._reach_known = False
        self.execution["composite"] = str(self.composite_device)

    @property
    def composite_device(self) -> torch.device:
        """Where decodes land and composites run: the model's device, unless the CPU was asked for."""
        return torch.device("cpu") if self.acceleration.composite == "cpu" else self.model.device

    def decoder_reach(self) -> DecoderReach | None:
        """How the VAE's decoder runs on a box (``decode_box.probe_decoder``, measured once); None decodes
        whole frames (asked for, or a decoder that cannot be probed or cropped). The execution says which."""
        if self._reach_known:
            return self._reach
        acc, m = self.acceleration, self.model
        reach: DecoderReach | None = None
        if acc.decode == "frame":
            how = "whole frame: asked for"
        else:
            channels = m.pipe.transformer.config.out_channels
            probe = torch.zeros(1, channels, 1, 8, 8, device=m.device)
            try:
                with self.residency.hold("vae"):
                    reach = probe_decoder(m.pipe.vae, partial(m.family.decode_latents, m.pipe), probe)
                how = "whole frame: the decoder's last whole-frame layer is in no block it can be cropped after"
            except Exception as error:  # a decoder this probe cannot run: whole frames are always right
                how = f"whole frame: the decoder could not be probed ({type(error).__name__}: {error})"
            if reach is not None:
                after = f"after its {reach.point_name}" if reach.point is not None else "the latents"
                how = (
                    f"box: decoded {after}, {reach.after} latent cells of convolutions around the matte "
                    f"({reach.whole} where the VAE tiles)"
                )
        self._reach, self._reach_known = reach, True
        self.execution["decode"] = how
        return reach

    def crops_latents(self, height: int, width: int) -> bool:
        """Whether a box of a window at this model size is decoded from cropped latents (a decoder with no
        whole-frame layer, or one that tiles at this size) rather than cropped inside the decoder."""
        reach = self.decoder_reach()
        return reach is not None and (reach.point is None or self.vae_tiling(height, width))

    def decode_margin(self, height: int, width: int) -> int | None:
        """How many latent cells around the composite's box a window of this model size decodes: the reach of
        the convolutions the box runs through (the execution options' margin, where set); None: whole frames."""
        reach = self.decoder_reach()
        if reach is None:
            return None
        if self.acceleration.decode_margin is not None:
            return self.acceleration.decode_margin
        return reach.whole if self.crops_latents(height, width) else reach.after

    def decode(self, latents: torch.Tensor, plan: Window, box: DecodeBox) -> torch.Tensor:
        """(T, 3, h, w) in [0, 1] on the compositing device: the window's frames over the model pixels of
        ``box``, its lead-in included (the padding dropped)."""
        family, pipe, reach = self.model.family, self.model.pipe, self.decoder_reach()
        rows, cols = box.latent_rows, box.latent_cols
        whole = (rows.stop - rows.start, cols.stop - cols.start) == tuple(latents.shape[-2:])
        if whole or reach is None:
            pixels = family.decode_latents(pipe, latents)
        elif self.crops_latents(plan.model_height, plan.model_width):
            pixels = family.decode_latents(pipe, latents[..., rows, cols])
        else:
            k = reach.point_scale
            with cropped_after(reach.point, slice(rows.start * k, rows.stop * k), slice(cols.start * k, cols.stop * k)):
                pixels = family.decode_latents(pipe, latents)
        pixels = pixels[0].permute(1, 0, 2, 3)
        return ((pixels[: plan.length].clamp(-1, 1) + 1.0) / 2.0).to(self.composite_device)

    def preview(self, latents: torch.Tensor, max_side: int = 160) -> np.ndarray:
        """A small uint8 RGB picture of the first latent frame (e.g. the clean estimate x̂0 mid-edit).

        Only one latent frame is decoded, so a preview costs a fraction of the final decode.
        """
        m = self.model
        with torch.no_grad(), self.residency.hold("transformer", "vae"):
            pixels = m.family.decode_latents(m.pipe, latents[:, :, :1])[0, :, 0]
        h, w = pixels.shape[-2:]
        scale = min(1.0, max_side / max(h, w))
        small = resize_video(pixels[None], max(1, round(h * scale)), max(1, round(w * scale)))[0]
        return ((small.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()

    def preview_png(self, latents: torch.Tensor) -> bytes:
        """:meth:`preview` as PNG bytes, the form every consumer of progress receives it in."""
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(self.preview(latents)).save(buffer, format="PNG")
        return buffer.getvalue()

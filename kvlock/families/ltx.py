"""LTX-Video text-to-video (diffusers ``LTXPipeline``): flow matching, VAE 8× in time and 32× in space.

What differs from Wan, all of it kept here: patch size 1, so one latent pixel is one token and the matte
maps to tokens at 32-pixel granularity; the transformer takes packed tokens (B, F·H·W, C) with rotary
positions scaled by the frame rate; the prompt comes with an attention mask (packed into the prompt
tensor's last channel, which the engine only batches and hands back); the flow-matching timesteps are
shifted by the clip's token count; the VAE normalises latents per channel and may take a decode
timestep. Frames 8k+1, sides multiples of 32 (native 704×480 and 768×512, up to 257 frames).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import ModelLoadError
from ..lock.kv_bank import KVBank
from ..lock.token_mask import Compression
from .base import ModelDefaults, OneTransformer
from .folder import load_pipeline
from .ltx_attention import KVLockLTXAttnProcessor
from .processors import compile_blocks, install, set_backend
from .steppers import FlowMatchStepper

FRAME_RATE = 25  # the rate LTXPipeline assumes for its rotary positions


def pack_prompt(embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Carry the prompt's attention mask as one extra channel, so the engine can batch the pair as one."""
    return torch.cat([embeds, mask.to(embeds.dtype)[..., None]], dim=-1)


def unpack_prompt(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return packed[..., :-1], packed[..., -1]


class LTXFamily(OneTransformer):
    """Adapter for ``LTXPipeline`` checkpoints (LTX-Video 0.9.x text-to-video)."""

    name: ClassVar[str] = "ltx"
    pipeline_class_names: ClassVar[tuple[str, ...]] = ("LTXPipeline",)
    flow_matching: ClassVar[bool] = True
    defaults: ClassVar[ModelDefaults] = ModelDefaults(
        height=480, width=704, frames=161, steps=50, guidance=3.0, text_length=128
    )

    def geometry(self, pipe: Any) -> tuple[Compression, int]:
        vae_t, vae_s = pipe.vae_temporal_compression_ratio, pipe.vae_spatial_compression_ratio
        p, pt = pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
        return Compression(vae_t=vae_t, vae_s=vae_s, patch=(pt, p, p)), vae_s * p

    def valid_frames(self, n: int) -> int:
        return 8 * max(0, -(-(n - 1) // 8)) + 1

    def load(self, path: Path, dtype: torch.dtype) -> Any:
        from diffusers import LTXPipeline

        pipe = load_pipeline(LTXPipeline, path, dtype)  # the VAE too in ``dtype``, as its pipeline runs it
        if pipe.vae_temporal_compression_ratio != 8:
            raise ModelLoadError(
                f"{path}: the VAE compresses time {pipe.vae_temporal_compression_ratio}×; LTX-Video is 8×"
            )
        return pipe

    def install(self, pipe: Any, bank: KVBank) -> None:
        install(pipe.transformer, bank, KVLockLTXAttnProcessor)

    def set_attention_backend(self, pipe: Any, backend: str | None) -> None:
        set_backend(pipe.transformer, backend)

    def compile(self, pipe: Any, backend: str = "inductor") -> None:
        compile_blocks(pipe.transformer.transformer_blocks, backend)

    def encode_prompt(self, pipe: Any, text: str, max_length: int, device: torch.device | None = None) -> torch.Tensor:
        embeds, mask, _, _ = pipe.encode_prompt(
            prompt=text,
            do_classifier_free_guidance=False,
            max_sequence_length=max_length,
            device=device if device is not None else pipe.transformer.device,
        )
        return pack_prompt(embeds.to(pipe.transformer.dtype), mask)

    def encode_video(self, pipe: Any, video: torch.Tensor) -> torch.Tensor:
        vae = pipe.vae
        latents = vae.encode(video.to(device=vae.device, dtype=vae.dtype)).latent_dist.mode()
        return pipe._normalize_latents(latents, vae.latents_mean, vae.latents_std, vae.config.scaling_factor).float()

    def decode_latents(self, pipe: Any, latents: torch.Tensor) -> torch.Tensor:
        """As LTXPipeline decodes (its defaults: decode timestep 0, no decode noise)."""
        vae = pipe.vae
        latents = latents.to(device=vae.device, dtype=vae.dtype)
        latents = pipe._denormalize_latents(latents, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
        temb = None
        if vae.config.timestep_conditioning:
            temb = torch.zeros(latents.shape[0], device=latents.device, dtype=latents.dtype)
        return vae.decode(latents, temb, return_dict=False)[0].float()

    def _rope_scale(self, pipe: Any) -> tuple[float, float, float]:
        s = pipe.vae_spatial_compression_ratio
        return (pipe.vae_temporal_compression_ratio / FRAME_RATE, s, s)

    def predict(self, pipe: Any, z: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        model = pipe.transformer
        b, _, f, h, w = z.shape
        p, pt = pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
        prompt, mask = unpack_prompt(embeds)
        out = model(
            hidden_states=pipe._pack_latents(z, p, pt).to(model.dtype),
            encoder_hidden_states=prompt,
            timestep=t.expand(b),
            encoder_attention_mask=mask,
            num_frames=f // pt,
            height=h // p,
            width=w // p,
            rope_interpolation_scale=self._rope_scale(pipe),
            return_dict=False,
        )[0]
        return pipe._unpack_latents(out, f // pt, h // p, w // p, p, pt)

    def predict_tokens(
        self, pipe: Any, z: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, token_index: torch.Tensor
    ) -> torch.Tensor:
        """LTX's forward restricted to ``token_index``: every stage but self-attention is per token."""
        model = pipe.transformer
        b, _, f, h, w = z.shape
        p, pt = pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
        grid = (f // pt, h // p, w // p)
        tokens = pipe._pack_latents(z, p, pt).to(model.dtype)
        cos, sin = model.rope(tokens, *grid, self._rope_scale(pipe), None)
        rotary = (cos[:, token_index], sin[:, token_index])
        prompt, mask = unpack_prompt(embeds)
        bias = ((1 - mask.to(tokens.dtype)) * -10000.0).unsqueeze(1)  # as the model turns its mask into a bias
        x = model.proj_in(tokens[:, token_index])
        temb, embedded = model.time_embed(t.expand(b).flatten(), batch_size=b, hidden_dtype=x.dtype)
        temb, embedded = temb.view(b, -1, temb.size(-1)), embedded.view(b, -1, embedded.size(-1))
        text = model.caption_projection(prompt).view(b, -1, x.size(-1))
        for block in model.transformer_blocks:
            x = block(
                hidden_states=x,
                encoder_hidden_states=text,
                temb=temb,
                image_rotary_emb=rotary,
                encoder_attention_mask=bias,
            )
        shift_scale = model.scale_shift_table[None, None] + embedded[:, :, None]
        x = model.norm_out(x) * (1 + shift_scale[:, :, 1]) + shift_scale[:, :, 0]
        x = model.proj_out(x)
        full = x.new_zeros(b, grid[0] * grid[1] * grid[2], x.shape[-1])
        full[:, token_index] = x
        return pipe._unpack_latents(full, *grid, p, pt)

    def stepper(
        self, pipe: Any, steps: int, like: torch.Tensor, generator: torch.Generator | None = None
    ) -> FlowMatchStepper:
        """LTXPipeline's timesteps: σ from 1 to 1/N, shifted by the clip's latent token count."""
        from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift

        _, _, f, h, w = like.shape
        config = pipe.scheduler.config
        mu = calculate_shift(
            f * h * w,
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )
        return FlowMatchStepper(
            pipe.scheduler, steps, like.device, sigmas=np.linspace(1.0, 1 / steps, steps).tolist(), mu=mu
        )

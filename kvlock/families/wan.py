"""Wan2.1 text-to-video (diffusers ``WanPipeline``): flow matching, causal VAE (4, 8, 8), patches (1, 2, 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from ..errors import ModelLoadError
from ..lock.kv_bank import KVBank
from ..lock.token_mask import Compression
from .base import ModelDefaults, PassStages, run_stages
from .context_parallel import rotary_rows
from .folder import load_pipeline
from .processors import compile_blocks, install, set_backend
from .steppers import FlowMatchStepper
from .wan_attention import KVLockWanAttnProcessor


def _latent_stats(vae: Any, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean, device=like.device, dtype=like.dtype).view(shape)
    std = torch.tensor(vae.config.latents_std, device=like.device, dtype=like.dtype).view(shape)
    return mean, std


def unpatchify(tokens: torch.Tensor, grid: tuple[int, int, int], patch: tuple[int, int, int]) -> torch.Tensor:
    """(B, F·R·C, pt·ph·pw·ch) tokens in (frame, row, column) order → (B, ch, F·pt, R·ph, C·pw)."""
    b = tokens.shape[0]
    f, r, c = grid
    pt, ph, pw = patch
    x = tokens.reshape(b, f, r, c, pt, ph, pw, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.flatten(6, 7).flatten(4, 5).flatten(2, 3)


class WanFamily:
    """Adapter for ``WanPipeline`` checkpoints (Wan2.1 T2V 1.3B / 14B and same-shaped models)."""

    name: ClassVar[str] = "wan"
    pipeline_class_names: ClassVar[tuple[str, ...]] = ("WanPipeline",)
    defaults: ClassVar[ModelDefaults] = ModelDefaults(height=480, width=832, frames=81, steps=50, guidance=5.0)
    sequence_parallel: ClassVar[bool] = True  # predict_tokens follows the model's context-parallel plan

    def geometry(self, pipe: Any) -> tuple[Compression, int]:
        """Read from the checkpoint: Wan2.1 is (4, 8, 8) with (1, 2, 2) patches; smaller VAEs differ."""
        vae, patch = pipe.vae.config, tuple(pipe.transformer.config.patch_size)
        compression = Compression(vae_t=vae.scale_factor_temporal, vae_s=vae.scale_factor_spatial, patch=patch)
        return compression, compression.vae_s * patch[1]

    def valid_frames(self, n: int) -> int:
        return 4 * max(0, -(-(n - 1) // 4)) + 1

    def load(self, path: Path, dtype: torch.dtype) -> Any:
        """Load on the CPU; the editor places components on the device by its memory mode."""
        from diffusers import WanPipeline

        pipe = load_pipeline(WanPipeline, path, {"vae": torch.float32, "default": dtype})
        if getattr(pipe, "transformer_2", None) is not None or pipe.config.get("expand_timesteps"):
            raise ModelLoadError(f"{path} is a two-stage or TI2V Wan2.2 model; only Wan2.1-style T2V is supported")
        if pipe.transformer.config.get("image_dim") is not None:
            raise ModelLoadError(f"{path} is an image-to-video Wan model; KV-Lock needs a text-to-video model")
        return pipe

    def install(self, pipe: Any, bank: KVBank) -> None:
        install(pipe.transformer, bank, KVLockWanAttnProcessor)

    def set_attention_backend(self, pipe: Any, backend: str | None) -> None:
        """Self-attention only: cross-attention over the 512 prompt tokens keeps the default, since a
        backend tuned for long sequences is not the fastest for it."""
        set_backend(pipe.transformer, backend)

    def compile(self, pipe: Any, backend: str = "inductor") -> None:
        compile_blocks(pipe.transformer.blocks, backend)

    def encode_prompt(self, pipe: Any, text: str, max_length: int, device: torch.device | None = None) -> torch.Tensor:
        embeds, _ = pipe.encode_prompt(
            prompt=text,
            do_classifier_free_guidance=False,
            max_sequence_length=max_length,
            device=device if device is not None else pipe.transformer.device,
        )
        return embeds.to(pipe.transformer.dtype)

    def encode_video(self, pipe: Any, video: torch.Tensor) -> torch.Tensor:
        vae = pipe.vae
        video = video.to(device=vae.device, dtype=vae.dtype)
        latents = vae.encode(video).latent_dist.mode()
        mean, std = _latent_stats(vae, latents)
        return ((latents - mean) / std).float()

    def decode_latents(self, pipe: Any, latents: torch.Tensor) -> torch.Tensor:
        vae = pipe.vae
        latents = latents.to(device=vae.device, dtype=vae.dtype)
        mean, std = _latent_stats(vae, latents)
        return vae.decode(latents * std + mean, return_dict=False)[0].float()

    def _timestep(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        return t.expand(batch)

    def predict(self, pipe: Any, z: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        model = pipe.transformer
        return model(
            hidden_states=z.to(model.dtype),
            timestep=self._timestep(t, z.shape[0]),
            encoder_hidden_states=embeds,
            return_dict=False,
        )[0]

    def predict_tokens(
        self, pipe: Any, z: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, token_index: torch.Tensor
    ) -> torch.Tensor:
        """Wan's forward restricted to ``token_index``: every stage but self-attention is per token."""
        return run_stages(self.stages(pipe, z, t, embeds, token_index))

    def stages(
        self, pipe: Any, z: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, token_index: torch.Tensor | None
    ) -> PassStages:
        """Wan's forward opened at its blocks, over ``token_index`` (None: every token, as ``predict``).

        Built from the model's own submodules (rope, patch embedding, condition embedder, blocks,
        output head) in the order of diffusers' own forward, so the full pass is that forward op for op;
        the self-attention processors add the cached background K/V. Under context parallelism the
        model's plan hooks still act on those submodules (its shard of the rotary table, its block of the
        tokens at the first block, all tokens gathered after the output head), so only the rotary rows
        need this rank's numbering (``rotary_rows``).
        """
        model = pipe.transformer
        patch = tuple(model.config.patch_size)
        hidden = z.to(model.dtype)
        b, _, f, h, w = hidden.shape
        grid = (f // patch[0], h // patch[1], w // patch[2])
        count = grid[0] * grid[1] * grid[2]
        rotary = model.rope(hidden)
        x = model.patch_embedding(hidden).flatten(2).transpose(1, 2)
        if token_index is not None:
            rows = rotary_rows(model, token_index, count)
            rotary = (rotary[0][:, rows], rotary[1][:, rows])
            x = x[:, token_index]
        x = x.contiguous()
        temb, proj, text, _ = model.condition_embedder(self._timestep(t, b), embeds, None)
        proj = proj.unflatten(1, (6, -1))

        def run(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
            return block(x, text, proj, rotary)

        def finish(x: torch.Tensor) -> torch.Tensor:
            shift, scale = (model.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
            x = (model.norm_out(x.float()) * (1 + scale) + shift).type_as(x)
            x = model.proj_out(x)
            if token_index is None:
                return unpatchify(x, grid, patch)
            full = x.new_zeros(b, count, x.shape[-1])
            full[:, token_index] = x
            return unpatchify(full, grid, patch)

        return PassStages(x, model.blocks, run, finish)

    def stepper(
        self, pipe: Any, steps: int, like: torch.Tensor, generator: torch.Generator | None = None
    ) -> FlowMatchStepper:
        return FlowMatchStepper(pipe.scheduler, steps, like.device)

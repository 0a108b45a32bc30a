"""Wan text-to-video (diffusers ``WanPipeline``): Wan2.1, Wan2.2 A14B and Wan2.2 TI2V-5B as text-to-video.

Flow matching, a causal VAE, patches (1, 2, 2). What the Wan2.2 checkpoints add, all of it kept here:

- A14B: two experts, ``transformer`` for the high-noise steps and ``transformer_2`` for the low-noise ones,
  switching where the timestep falls below ``boundary_ratio`` × the scheduler's training timesteps, exactly
  as ``WanPipeline`` does. A step's source pass and its edit passes share its timestep, so they run on the
  same expert, and the K/V bank serves both (it is filled and read within one step). The low-noise stage
  has a guidance of its own (``guidance_2``).
- TI2V-5B: a VAE of 48 channels compressing 16× in space (one token per 32 px) and per-token timesteps
  (``expand_timesteps``); as text-to-video every token has the step's timestep, as its pipeline gives it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from ..errors import ModelLoadError
from ..lock.kv_bank import KVBank
from ..lock.token_mask import Compression
from .base import ModelDefaults, PassStages, run_stages
from .context_parallel import local_tokens, rotary_rows
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


# the variants' own defaults, from their model cards: Wan2.2 A14B generates 81 frames at 16 fps in 40 steps with
# guidance 4 (high noise) and 3 (low noise); TI2V-5B 121 frames of 704×1280 at 24 fps in 50 steps, guidance 5
WAN21 = ModelDefaults(height=480, width=832, frames=81, steps=50, guidance=5.0, fps=16.0)
WAN22_A14B = ModelDefaults(height=480, width=832, frames=81, steps=40, guidance=4.0, guidance_2=3.0, fps=16.0)
WAN22_TI2V = ModelDefaults(height=704, width=1280, frames=121, steps=50, guidance=5.0, fps=24.0)


def boundary_timestep(pipe: Any) -> float | None:
    """Where a two-expert pipeline hands over to its low-noise expert (None: one transformer)."""
    ratio = pipe.config.get("boundary_ratio")
    if ratio is None or getattr(pipe, "transformer_2", None) is None:
        return None
    return ratio * pipe.scheduler.config.num_train_timesteps


class WanFamily:
    """Adapter for ``WanPipeline`` checkpoints: Wan2.1 T2V 1.3B / 14B, Wan2.2 T2V A14B, Wan2.2 TI2V-5B."""

    name: ClassVar[str] = "wan"
    pipeline_class_names: ClassVar[tuple[str, ...]] = ("WanPipeline",)
    flow_matching: ClassVar[bool] = True
    defaults: ClassVar[ModelDefaults] = WAN21
    sequence_parallel: ClassVar[bool] = True  # predict_tokens follows the model's context-parallel plan

    def defaults_for(self, pipe: Any) -> ModelDefaults:
        if boundary_timestep(pipe) is not None:
            return WAN22_A14B
        return WAN22_TI2V if pipe.config.get("expand_timesteps") else WAN21

    def transformers(self, pipe: Any) -> tuple[tuple[str, Any], ...]:
        second = getattr(pipe, "transformer_2", None)
        return (("transformer", pipe.transformer),) + ((("transformer_2", second),) if second is not None else ())

    def expert(self, pipe: Any, t: torch.Tensor) -> int:
        """0 (``transformer``) for the high-noise steps, 1 (``transformer_2``) below the boundary."""
        boundary = boundary_timestep(pipe)
        return 0 if boundary is None or float(t) >= boundary else 1

    def _model(self, pipe: Any, t: torch.Tensor) -> Any:
        return self.transformers(pipe)[self.expert(pipe, t)][1]

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
        if pipe.transformer is None:
            raise ModelLoadError(f"{path} has no transformer/ (its high-noise expert); download the folder again")
        if pipe.config.get("boundary_ratio") is not None and getattr(pipe, "transformer_2", None) is None:
            raise ModelLoadError(
                f"{path} names a boundary between two experts but has no transformer_2/ (the low-noise expert); "
                "download it: hf download Wan-AI/Wan2.2-T2V-A14B-Diffusers --local-dir FOLDER"
            )
        for _, model in self.transformers(pipe):
            config = model.config
            if config.get("image_dim") is not None or config.in_channels != config.out_channels:
                raise ModelLoadError(f"{path} is an image-to-video Wan model; KV-Lock needs a text-to-video model")
        return pipe

    def install(self, pipe: Any, bank: KVBank) -> None:
        for _, model in self.transformers(pipe):
            install(model, bank, KVLockWanAttnProcessor)

    def set_attention_backend(self, pipe: Any, backend: str | None) -> None:
        """Self-attention only: cross-attention over the 512 prompt tokens keeps the default, since a
        backend tuned for long sequences is not the fastest for it."""
        for _, model in self.transformers(pipe):
            set_backend(model, backend)

    def compile(self, pipe: Any, backend: str = "inductor") -> None:
        for _, model in self.transformers(pipe):
            compile_blocks(model.blocks, backend)

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

    @staticmethod
    def _timestep(pipe: Any, t: torch.Tensor, batch: int, tokens: int) -> torch.Tensor:
        """(B,) — or (B, tokens) for per-token timesteps (TI2V), every token at ``t`` as text-to-video."""
        if pipe.config.get("expand_timesteps"):
            return t.expand(batch, tokens)
        return t.expand(batch)

    def predict(self, pipe: Any, z: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        model = self._model(pipe, t)
        _, _, f, h, w = z.shape
        pt, ph, pw = model.config.patch_size
        return model(
            hidden_states=z.to(model.dtype),
            timestep=self._timestep(pipe, t, z.shape[0], (f // pt) * (h // ph) * (w // pw)),
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
        """Wan's forward opened at its blocks, over ``token_index`` (None: every token, as ``predict``), on
        the expert of timestep ``t``.

        Built from the model's own submodules (rope, patch embedding, condition embedder, blocks,
        output head) in the order of diffusers' own forward, so the full pass is that forward op for op;
        the self-attention processors add the cached background K/V. Under context parallelism the
        model's plan hooks still act on those submodules (its shard of the rotary table, its block of the
        tokens at the first block, all tokens gathered after the output head), so only the rotary rows
        need this rank's numbering (``rotary_rows``), and per-token timestep embeddings (TI2V) this rank's
        tokens (``local_tokens``).
        """
        model = self._model(pipe, t)
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
        timestep = self._timestep(pipe, t, b, count)
        per_token = timestep.ndim == 2
        temb, proj, text, _ = model.condition_embedder(
            timestep.flatten(), embeds, None, timestep_seq_len=count if per_token else None
        )
        if per_token:  # (B, tokens, 6, D) for every token, cut to the tokens this pass runs on this device
            mine = local_tokens(model, token_index, count)
            proj, temb = proj.unflatten(2, (6, -1))[:, mine], temb[:, mine]
        else:
            proj = proj.unflatten(1, (6, -1))

        def run(block: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
            return block(x, text, proj, rotary)

        def finish(x: torch.Tensor) -> torch.Tensor:
            if per_token:
                table = model.scale_shift_table.unsqueeze(0).to(temb.device) + temb.unsqueeze(2)
                shift, scale = (half.squeeze(2) for half in table.chunk(2, dim=2))
            else:
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

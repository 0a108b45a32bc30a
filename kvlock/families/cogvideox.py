"""CogVideoX 1.0 text-to-video (diffusers ``CogVideoXPipeline``, 2B and 5B).

What differs from Wan, all of it kept here: the transformer takes latents as (B, F, C, H, W); prompt and
video tokens share one attention (rotary embedding on the video part only, 5B) or carry learned-free
sin-cos positions over both (2B), so the prompt is always encoded to the model's full text length; the
VAE is (4, 8, 8) with one scaling factor; the scheduler is DDIM or DPM with v-prediction, so x̂0 and the
noise levels come from ᾱ_t (:class:`~kvlock.families.steppers.VPredictionStepper`). Frames 8k+1 at 480×720.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch

from ..errors import ModelLoadError
from ..lock.kv_bank import KVBank
from ..lock.token_mask import Compression
from .base import ModelDefaults, OneTransformer, PassStages, run_stages
from .cogvideox_attention import KVLockCogVideoXAttnProcessor
from .folder import load_pipeline
from .processors import compile_blocks, install, set_backend
from .steppers import VPredictionStepper


def unpatchify_frames_first(tokens: torch.Tensor, frames: int, height: int, width: int, p: int) -> torch.Tensor:
    """(B, F·(H/p)·(W/p), p·p·C) tokens → (B, F, C, H, W), CogVideoX's own output layout."""
    b = tokens.shape[0]
    x = tokens.reshape(b, frames, height // p, width // p, -1, p, p)
    return x.permute(0, 1, 4, 2, 5, 3, 6).flatten(5, 6).flatten(3, 4)


def _swap_frames_and_channels(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 1, 3, 4)


class CogVideoXFamily(OneTransformer):
    """Adapter for ``CogVideoXPipeline`` checkpoints (CogVideoX-2b, CogVideoX-5b)."""

    name: ClassVar[str] = "cogvideox"
    pipeline_class_names: ClassVar[tuple[str, ...]] = ("CogVideoXPipeline",)
    flow_matching: ClassVar[bool] = False
    defaults: ClassVar[ModelDefaults] = ModelDefaults(
        height=480, width=720, frames=49, steps=50, guidance=6.0, text_length=226
    )

    def geometry(self, pipe: Any) -> tuple[Compression, int]:
        p = pipe.transformer.config.patch_size
        vae_t, vae_s = pipe.vae_scale_factor_temporal, pipe.vae_scale_factor_spatial
        return Compression(vae_t=vae_t, vae_s=vae_s, patch=(1, p, p)), vae_s * p

    def valid_frames(self, n: int) -> int:
        return 8 * max(0, -(-(n - 1) // 8)) + 1

    def load(self, path: Path, dtype: torch.dtype) -> Any:
        from diffusers import CogVideoXPipeline

        pipe = load_pipeline(CogVideoXPipeline, path, dtype)  # the VAE too in ``dtype``, as its pipeline runs it
        config = pipe.transformer.config
        if config.patch_size_t is not None:
            raise ModelLoadError(f"{path} is a CogVideoX 1.5 model (temporal patches); only CogVideoX 1.0 is supported")
        if config.in_channels != config.out_channels:
            raise ModelLoadError(f"{path} is an image-to-video CogVideoX model; KV-Lock needs a text-to-video model")
        if pipe.scheduler.config.prediction_type != "v_prediction":
            raise ModelLoadError(
                f"{path}: scheduler predicts {pipe.scheduler.config.prediction_type!r}; CogVideoX is v_prediction"
            )
        return pipe

    def install(self, pipe: Any, bank: KVBank) -> None:
        install(pipe.transformer, bank, KVLockCogVideoXAttnProcessor)

    def set_attention_backend(self, pipe: Any, backend: str | None) -> None:
        set_backend(pipe.transformer, backend)

    def compile(self, pipe: Any, backend: str = "inductor") -> None:
        compile_blocks(pipe.transformer.transformer_blocks, backend)

    def encode_prompt(self, pipe: Any, text: str, max_length: int, device: torch.device | None = None) -> torch.Tensor:
        """Always the model's own text length: its positions are laid out for exactly that many tokens."""
        embeds, _ = pipe.encode_prompt(
            prompt=text,
            do_classifier_free_guidance=False,
            max_sequence_length=pipe.transformer.config.max_text_seq_length,
            device=device if device is not None else pipe.transformer.device,
        )
        return embeds.to(pipe.transformer.dtype)

    def encode_video(self, pipe: Any, video: torch.Tensor) -> torch.Tensor:
        vae = pipe.vae
        latents = vae.encode(video.to(device=vae.device, dtype=vae.dtype)).latent_dist.mode()
        return (latents * vae.config.scaling_factor).float()

    def decode_latents(self, pipe: Any, latents: torch.Tensor) -> torch.Tensor:
        vae = pipe.vae
        latents = latents.to(device=vae.device, dtype=vae.dtype) / vae.config.scaling_factor
        return vae.decode(latents).sample.float()

    def _rotary(self, pipe: Any, frames: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The 5B's rotary tables for a latent grid, computed by the pipeline's own method."""
        if not pipe.transformer.config.use_rotary_positional_embeddings:
            return None
        s = pipe.vae_scale_factor_spatial
        return pipe._prepare_rotary_positional_embeddings(height * s, width * s, frames, pipe.transformer.device)

    def predict(self, pipe: Any, z: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        model = pipe.transformer
        b, _, f, h, w = z.shape
        out = model(
            hidden_states=z.to(model.dtype).permute(0, 2, 1, 3, 4),
            encoder_hidden_states=embeds,
            timestep=t.expand(b),
            image_rotary_emb=self._rotary(pipe, f, h, w),
            return_dict=False,
        )[0]
        return out.permute(0, 2, 1, 3, 4)

    def predict_tokens(
        self, pipe: Any, z: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, token_index: torch.Tensor
    ) -> torch.Tensor:
        """CogVideoX's forward with only ``token_index`` of the video tokens (the prompt's tokens all stay)."""
        return run_stages(self.stages(pipe, z, t, embeds, token_index))

    def stages(
        self, pipe: Any, z: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, token_index: torch.Tensor | None
    ) -> PassStages:
        """CogVideoX's forward opened at its blocks, over ``token_index`` of the video tokens (None: all of
        them, as ``predict``, in the order of diffusers' own forward); the state is (video, prompt) tokens.

        Patch embedding (with its positions) runs for every token and is then cut: it is one convolution.
        """
        model = pipe.transformer
        b, _, f, h, w = z.shape
        p = model.config.patch_size
        hidden = z.to(model.dtype).permute(0, 2, 1, 3, 4)
        emb = model.time_embedding(model.time_proj(t.expand(b)).to(hidden.dtype), None)
        tokens = model.patch_embed(embeds, hidden)
        text = embeds.shape[1]
        encoder, x = tokens[:, :text], tokens[:, text:]
        rotary = self._rotary(pipe, f, h, w)
        if token_index is not None:
            x = x[:, token_index]
            if rotary is not None:
                rotary = (rotary[0][token_index], rotary[1][token_index])

        def run(block: torch.nn.Module, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            x, encoder = state
            return block(hidden_states=x, encoder_hidden_states=encoder, temb=emb, image_rotary_emb=rotary)

        def finish(state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            x = model.proj_out(model.norm_out(model.norm_final(state[0]), temb=emb))
            if token_index is not None:
                full = x.new_zeros(b, f * (h // p) * (w // p), x.shape[-1])
                full[:, token_index] = x
                x = full
            return unpatchify_frames_first(x, f, h, w, p).permute(0, 2, 1, 3, 4)

        return PassStages((x, encoder), model.transformer_blocks, run, finish)

    def stepper(
        self, pipe: Any, steps: int, like: torch.Tensor, generator: torch.Generator | None = None
    ) -> VPredictionStepper:
        swap = _swap_frames_and_channels  # the pipeline's own layout, for its scheduler's noise
        return VPredictionStepper(pipe.scheduler, steps, like.device, generator, swap, swap)

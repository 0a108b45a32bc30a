"""HunyuanVideo 1.5 text-to-video (diffusers ``HunyuanVideo15Pipeline``, 8.3B).

What differs from Wan, all of it kept here: every block is dual-stream (video and text tokens attend in one
attention, the text's padding masked; ``hunyuan15_attention``), so the bank touches the video tokens' K/V
only; the prompt is two encoders' (a multimodal LLM and ByT5 for quoted glyphs), each with its mask, packed
into one tensor the engine only batches and hands back; the transformer takes the latents concatenated with
image-conditioning latents and a mask channel (zeros as text-to-video) and an image-embedding slot (zeros);
the VAE compresses (4, 16, 16) into 32 channels with one scaling factor, and patches are 1×1, so one token
is 16 pixels; flow matching over σ from 1 to 0 in even steps, shifted by the scheduler's ``shift``.
Frames 4k+1; the native size is the checkpoint's ``target_size`` at 16:9 (480p: 480×848).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..errors import ModelLoadError
from ..lock.kv_bank import KVBank
from ..lock.token_mask import Compression
from .base import ModelDefaults, OneTransformer, PassStages, run_stages
from .folder import load_pipeline
from .hunyuan15_attention import KVLockHunyuan15AttnProcessor
from .processors import compile_blocks, install, set_backend
from .steppers import FlowMatchStepper

BLOCKS = "transformer_blocks."  # the dual-stream blocks; the text refiner's own attention is left alone


def pack_prompt(
    embeds: torch.Tensor, mask: torch.Tensor, glyphs: torch.Tensor, glyph_mask: torch.Tensor
) -> torch.Tensor:
    """Both encoders' tokens and masks in one (B, L1 + L2, D1 + 1) tensor, so a pair batches as one: the LLM's
    tokens with their mask as a last channel, then ByT5's likewise, zero-padded to the LLM's width."""
    first = torch.cat([embeds, mask.to(embeds.dtype)[..., None]], dim=-1)
    second = torch.cat([glyphs.to(embeds.dtype), glyph_mask.to(embeds.dtype)[..., None]], dim=-1)
    second = torch.nn.functional.pad(second, (0, first.shape[-1] - second.shape[-1]))
    return torch.cat([first, second], dim=1)


def unpack_prompt(packed: torch.Tensor, glyph_tokens: int, glyph_width: int) -> tuple[torch.Tensor, ...]:
    """The four tensors :func:`pack_prompt` packed: LLM tokens, their mask, ByT5 tokens, their mask."""
    first, second = packed[:, :-glyph_tokens], packed[:, -glyph_tokens:]
    return first[..., :-1], first[..., -1], second[..., :glyph_width], second[..., glyph_width]


class HunyuanVideo15Family(OneTransformer):
    """Adapter for ``HunyuanVideo15Pipeline`` text-to-video checkpoints (480p and 720p)."""

    name: ClassVar[str] = "hunyuan15"
    pipeline_class_names: ClassVar[tuple[str, ...]] = ("HunyuanVideo15Pipeline",)
    flow_matching: ClassVar[bool] = True
    defaults: ClassVar[ModelDefaults] = ModelDefaults(
        height=480, width=848, frames=121, steps=50, guidance=6.0, text_length=1000, fps=24.0
    )

    def defaults_for(self, pipe: Any) -> ModelDefaults:
        """The checkpoint's native size (its ``target_size`` at 16:9, as its pipeline picks it) and guidance."""
        height, width = pipe.video_processor.calculate_default_height_width(9, 16, pipe.target_size)
        return ModelDefaults(
            height=height,
            width=width,
            frames=self.defaults.frames,
            steps=self.defaults.steps,
            guidance=float(pipe.guider.guidance_scale),
            text_length=pipe.tokenizer_max_length,
            fps=self.defaults.fps,
        )

    def geometry(self, pipe: Any) -> tuple[Compression, int]:
        config = pipe.transformer.config
        patch = (config.patch_size_t, config.patch_size, config.patch_size)
        compression = Compression(pipe.vae_scale_factor_temporal, pipe.vae_scale_factor_spatial, patch)
        return compression, compression.vae_s * config.patch_size

    def valid_frames(self, n: int) -> int:
        return 4 * max(0, -(-(n - 1) // 4)) + 1

    def load(self, path: Path, dtype: torch.dtype) -> Any:
        from diffusers import HunyuanVideo15Pipeline

        pipe = load_pipeline(HunyuanVideo15Pipeline, path, {"vae": torch.float32, "default": dtype})
        config = pipe.transformer.config
        if config.get("task_type", "t2v") != "t2v":
            raise ModelLoadError(
                f"{path} is an image-to-video HunyuanVideo 1.5 model; KV-Lock needs the text-to-video one: "
                "hf download hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v --local-dir FOLDER"
            )
        if config.get("use_meanflow"):
            raise ModelLoadError(f"{path} is a step-distilled (MeanFlow) HunyuanVideo 1.5 model, not supported yet")
        return pipe

    def install(self, pipe: Any, bank: KVBank) -> None:
        install(pipe.transformer, bank, KVLockHunyuan15AttnProcessor, layers=BLOCKS)

    def set_attention_backend(self, pipe: Any, backend: str | None) -> None:
        set_backend(pipe.transformer, backend, layers=BLOCKS)

    def compile(self, pipe: Any, backend: str = "inductor") -> None:
        compile_blocks(pipe.transformer.transformer_blocks, backend)

    def encode_prompt(self, pipe: Any, text: str, max_length: int, device: torch.device | None = None) -> torch.Tensor:
        """Both encoders at their own lengths (the model's positions and refiner expect exactly those)."""
        model = pipe.transformer
        embeds, mask, glyphs, glyph_mask = pipe.encode_prompt(
            prompt=text, device=device if device is not None else model.device, dtype=model.dtype
        )
        return pack_prompt(embeds, mask, glyphs, glyph_mask)

    def _prompt(self, pipe: Any, packed: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return unpack_prompt(packed, pipe.tokenizer_2_max_length, pipe.transformer.config.text_embed_2_dim)

    def encode_video(self, pipe: Any, video: torch.Tensor) -> torch.Tensor:
        vae = pipe.vae
        latents = vae.encode(video.to(device=vae.device, dtype=vae.dtype)).latent_dist.mode()
        return (latents * vae.config.scaling_factor).float()

    def decode_latents(self, pipe: Any, latents: torch.Tensor) -> torch.Tensor:
        vae = pipe.vae
        latents = latents.to(device=vae.device, dtype=vae.dtype) / vae.config.scaling_factor
        return vae.decode(latents, return_dict=False)[0].float()

    @staticmethod
    def _model_input(model: Any, z: torch.Tensor) -> torch.Tensor:
        """The latents with the image-conditioning latents and mask channel a text-to-video pass leaves zero."""
        b, c, f, h, w = z.shape
        z = z.to(model.dtype)
        return torch.cat([z, z.new_zeros(b, c, f, h, w), z.new_zeros(b, 1, f, h, w)], dim=1)

    def _image_slot(self, pipe: Any, batch: int, like: torch.Tensor) -> torch.Tensor:
        return like.new_zeros(batch, pipe.vision_num_semantic_tokens, pipe.vision_states_dim)

    def predict(self, pipe: Any, z: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        model = pipe.transformer
        x = self._model_input(model, z)
        text, mask, glyphs, glyph_mask = self._prompt(pipe, embeds)
        return model(
            hidden_states=x,
            image_embeds=self._image_slot(pipe, x.shape[0], x),
            timestep=t.expand(x.shape[0]).to(x.dtype),
            encoder_hidden_states=text,
            encoder_attention_mask=mask,
            encoder_hidden_states_2=glyphs,
            encoder_attention_mask_2=glyph_mask,
            return_dict=False,
        )[0]

    def predict_tokens(
        self, pipe: Any, z: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, token_index: torch.Tensor
    ) -> torch.Tensor:
        """The forward with only ``token_index`` of the video tokens (every text token stays)."""
        return run_stages(self.stages(pipe, z, t, embeds, token_index))

    def _text_tokens(
        self, pipe: Any, model: Any, embeds: torch.Tensor, timestep: torch.Tensor, batch: int, like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The text side of the blocks and its mask, as the model's forward builds them: the refined LLM
        tokens, the projected ByT5 tokens and the (empty, as text-to-video) image slot, each with its kind's
        embedding, valid tokens first in the order image, ByT5, LLM, then the invalid ones zeroed."""
        text, mask, glyphs, glyph_mask = self._prompt(pipe, embeds)
        kinds = model.cond_type_embed
        llm = model.context_embedder(text, timestep, mask)
        llm = llm + kinds(torch.zeros_like(llm[:, :, 0], dtype=torch.long))
        byt5 = model.context_embedder_2(glyphs)
        byt5 = byt5 + kinds(torch.ones_like(byt5[:, :, 0], dtype=torch.long))
        image = model.image_embedder(self._image_slot(pipe, batch, like)) * 0.0
        image = image + kinds(2 * torch.ones_like(image[:, :, 0], dtype=torch.long))
        image_mask = mask.new_zeros(batch, image.shape[1])
        tokens, masks = [], []
        for i in range(batch):
            parts = ((image[i], image_mask[i].bool()), (byt5[i], glyph_mask[i].bool()), (llm[i], mask[i].bool()))
            valid = [part[keep] for part, keep in parts]
            invalid = [parts[0][0][~parts[0][1]]] + [torch.zeros_like(part[~keep]) for part, keep in parts[1:]]
            tokens.append(torch.cat(valid + invalid))
            masks.append(torch.cat([keep[keep] for _, keep in parts] + [keep[~keep] for _, keep in parts]))
        return torch.stack(tokens), torch.stack(masks)

    def stages(
        self, pipe: Any, z: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor, token_index: torch.Tensor | None
    ) -> PassStages:
        """The forward opened at its blocks, over ``token_index`` of the video tokens (None: all of them, as
        ``predict``, in the order of diffusers' own forward); the state is (video, text) tokens."""
        model = pipe.transformer
        x = self._model_input(model, z)
        b, _, f, h, w = x.shape
        pt, p = model.config.patch_size_t, model.config.patch_size
        grid = (f // pt, h // p, w // p)
        count = grid[0] * grid[1] * grid[2]
        rotary = model.rope(x)
        timestep = t.expand(b).to(x.dtype)
        temb = model.time_embed(timestep)
        video = model.x_embedder(x)
        text, mask = self._text_tokens(pipe, model, embeds, timestep, b, x)
        if token_index is not None:
            video, rotary = video[:, token_index], (rotary[0][token_index], rotary[1][token_index])

        def run(block: torch.nn.Module, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
            return block(state[0], state[1], temb, mask, rotary)

        def finish(state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
            out = model.proj_out(model.norm_out(state[0], temb))
            if token_index is not None:
                full = out.new_zeros(b, count, out.shape[-1])
                full[:, token_index] = out
                out = full
            out = out.reshape(b, *grid, -1, pt, p, p).permute(0, 4, 1, 5, 2, 6, 3, 7)
            return out.flatten(6, 7).flatten(4, 5).flatten(2, 3)

        return PassStages((video, text), model.transformer_blocks, run, finish)

    def stepper(
        self, pipe: Any, steps: int, like: torch.Tensor, generator: torch.Generator | None = None
    ) -> FlowMatchStepper:
        """The pipeline's schedule: σ evenly from 1 towards 0, shifted by its scheduler's ``shift``."""
        return FlowMatchStepper(pipe.scheduler, steps, like.device, sigmas=np.linspace(1.0, 0.0, steps + 1)[:-1])

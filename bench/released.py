"""Wan2.2 A14B, Wan2.2 TI2V-5B and HunyuanVideo 1.5 pipelines at their released sizes with random weights,
built directly on the GPU for ``bench/gpu.py`` (no checkpoint can be fetched; timings and memory do not
depend on weight values).

Sizes are the released configurations: A14B is two Wan2.1-14B-shaped transformers with the hand-over at
``boundary_ratio`` 0.875; TI2V-5B is a 30-layer, 3072-wide Wan transformer over the 48-channel Wan2.2 VAE
(residual blocks, 2×2 patchify, 16× in space); HunyuanVideo 1.5 is diffusers' class default (54 dual-stream
blocks, 16 heads × 128) with the Qwen2.5-VL-7B language model as its text encoder, ByT5-small for glyphs and
its 32-channel VAE. Dtypes as ``from_pretrained`` with ``torch_dtype=bfloat16`` gives them, with the Wan VAE
in float32 as Wan's own examples load it.
"""

from __future__ import annotations

from typing import Any

import torch

WAN14B = dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40)
TI2V_5B = dict(num_attention_heads=24, attention_head_dim=128, ffn_dim=14336, num_layers=30)
UMT5_XXL = dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64)
QWEN25_VL_7B_TEXT = dict(
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    vocab_size=152064,
    rope_theta=1_000_000.0,
    max_position_embeddings=128000,
    rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]},
)
BYT5_SMALL = dict(d_model=1472, d_kv=64, d_ff=3584, num_layers=12, num_heads=6, vocab_size=384)
A14B_BOUNDARY = 0.875


def _bf16_on(device: torch.device):
    """Build modules in bf16 directly on ``device`` (restoring the default dtype afterwards)."""

    class Scope:
        def __enter__(self) -> None:
            self.previous = torch.get_default_dtype()
            self.device = torch.device(device)
            self.device.__enter__()
            torch.set_default_dtype(torch.bfloat16)

        def __exit__(self, *exc: object) -> None:
            torch.set_default_dtype(self.previous)
            self.device.__exit__(*exc)

    return Scope()


def _frozen(*modules: Any) -> None:
    for module in modules:
        module.requires_grad_(False)
        module.eval()


def _wan_transformer(shape: dict[str, Any], channels: int) -> Any:
    from diffusers import WanTransformer3DModel

    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        in_channels=channels,
        out_channels=channels,
        text_dim=4096,
        freq_dim=256,
        qk_norm="rms_norm_across_heads",
        cross_attn_norm=True,
        eps=1e-6,
        rope_max_seq_len=1024,
        **shape,
    )
    keep = set(transformer._keep_in_fp32_modules or [])
    for name, param in transformer.named_parameters():
        if keep & set(name.split(".")):
            param.data = param.data.float()
    return transformer


def _umt5(text_length: int) -> tuple[Any, Any]:
    from transformers import UMT5Config, UMT5EncoderModel

    from kvlock.world.tiny import build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.model_max_length = text_length
    config = UMT5Config(
        vocab_size=256384,
        feed_forward_proj="gated-gelu",
        relative_attention_num_buckets=32,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        **UMT5_XXL,
    )
    return tokenizer, UMT5EncoderModel(config)


def build_wan22_a14b(device: torch.device, text_length: int) -> Any:
    """Wan2.2 T2V A14B: two 14B experts, the UMT5-XXL encoder and the Wan2.1 VAE (float32)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline

    torch.manual_seed(0)
    with _bf16_on(device):
        tokenizer, text_encoder = _umt5(text_length)
        high, low = _wan_transformer(WAN14B, 16), _wan_transformer(WAN14B, 16)
    with torch.device(device):
        vae = AutoencoderKLWan(base_dim=96)
    _frozen(high, low, text_encoder, vae)
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=12.0, num_train_timesteps=1000
    )
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler,
        transformer=high,
        transformer_2=low,
        boundary_ratio=A14B_BOUNDARY,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_wan22_ti2v(device: torch.device, text_length: int) -> Any:
    """Wan2.2 TI2V-5B as text-to-video: per-token timesteps over the 48-channel Wan2.2 VAE (float32)."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline

    torch.manual_seed(0)
    with _bf16_on(device):
        tokenizer, text_encoder = _umt5(text_length)
        transformer = _wan_transformer(TI2V_5B, 48)
    with torch.device(device):
        vae = AutoencoderKLWan(
            base_dim=160,
            decoder_base_dim=256,
            z_dim=48,
            dim_mult=[1, 2, 4, 4],
            num_res_blocks=2,
            temperal_downsample=[False, True, True],
            is_residual=True,
            in_channels=12,
            out_channels=12,
            patch_size=2,
            scale_factor_temporal=4,
            scale_factor_spatial=16,
            latents_mean=[0.0] * 48,
            latents_std=[1.0] * 48,
        )
    _frozen(transformer, text_encoder, vae)
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0, num_train_timesteps=1000
    )
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=scheduler,
        transformer=transformer,
        expand_timesteps=True,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_hunyuan15(device: torch.device) -> Any:
    """HunyuanVideo 1.5 480p T2V: the 8.3B transformer, Qwen2.5-VL-7B's language model, ByT5-small and
    the 32-channel VAE, everything in bf16."""
    from diffusers import (
        AutoencoderKLHunyuanVideo15,
        ClassifierFreeGuidance,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideo15Pipeline,
        HunyuanVideo15Transformer3DModel,
    )
    from transformers import ByT5Tokenizer, Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel, T5Config, T5EncoderModel

    from kvlock.world.tiny import build_tokenizer
    from kvlock.world.tiny_families import CHAT_TEMPLATE

    tokenizer = build_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.model_max_length = 2048
    glyph_tokenizer = ByT5Tokenizer()
    torch.manual_seed(0)
    with _bf16_on(device):
        text_encoder = Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(bos_token_id=None, eos_token_id=1, **QWEN25_VL_7B_TEXT))
        glyph_encoder = T5EncoderModel(
            T5Config(feed_forward_proj="gated-gelu", relative_attention_num_buckets=32, **BYT5_SMALL)
        )
        vae = AutoencoderKLHunyuanVideo15()
        transformer = HunyuanVideo15Transformer3DModel(task_type="t2v", target_size=640)
    _frozen(transformer, text_encoder, glyph_encoder, vae)
    pipe = HunyuanVideo15Pipeline(
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
        text_encoder_2=glyph_encoder,
        tokenizer_2=glyph_tokenizer,
        guider=ClassifierFreeGuidance(guidance_scale=6.0),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_smoke(name: str) -> Any:
    """The tests' tiny pipeline of the same layout: a check of the benchmark script, not a measurement."""
    from kvlock.world import tiny_families

    return {
        "wan22-a14b-smoke": tiny_families.build_tiny_wan22_a14b,
        "wan22-ti2v-smoke": tiny_families.build_tiny_wan22_ti2v,
        "hunyuan15-smoke": tiny_families.build_tiny_hunyuan15,
    }[name]()


def build(name: str, device: torch.device, text_length: int) -> Any:
    if name.endswith("smoke"):
        return build_smoke(name).to(device)
    if name == "wan22-a14b":
        return build_wan22_a14b(device, text_length)
    if name == "wan22-ti2v-5b":
        return build_wan22_ti2v(device, text_length)
    return build_hunyuan15(device)

"""``tiny-random``: a tiny Wan2.1 pipeline built from config with fixed seeds (random weights, so its edits
are noise-shaped, not meaningful pictures), the test model every exactness property is checked on.

It exercises every code path of a real Wan checkpoint (same classes, same scheduler, same VAE layout) in
a second on two CPU cores, offline: the tokenizer is a byte-level BPE with no merges built in memory.
"""

from __future__ import annotations

import torch

from ..families.base import ModelDefaults
from ..families.wan import WanFamily
from ..loading.load import BuiltinModel

TINY_DEFAULTS = ModelDefaults(height=64, width=64, frames=17, steps=12, guidance=5.0, text_length=64)
TINY_TEXT_LENGTH = 64
# a 2-layer T5-style encoder over the byte tokenizer (pad 0, eos 1), shared by every tiny pipeline
TINY_TEXT_ENCODER = dict(
    d_model=32,
    d_kv=8,
    d_ff=64,
    num_layers=2,
    num_heads=4,
    relative_attention_num_buckets=8,
    pad_token_id=0,
    eos_token_id=1,
    decoder_start_token_id=0,
)


def build_tokenizer():
    """A byte-level tokenizer over all 256 bytes (any prompt encodes), with pad/eos/unk specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(specials + sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=TINY_TEXT_LENGTH,
    )


def build_tiny_wan(seed: int = 0, dtype: torch.dtype = torch.float32):
    """A WanPipeline with a 2-layer transformer, a 3-channel-base VAE and a 2-layer UMT5 encoder."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(tokenizer), **TINY_TEXT_ENCODER)).eval()
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    ).eval()
    torch.manual_seed(seed + 2)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    ).eval()
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0, num_train_timesteps=1000
    )
    pipe = WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )
    if dtype != torch.float32:
        pipe.transformer.to(dtype)
        pipe.text_encoder.to(dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# offered to the engine's loader as the entry point ``tiny-random`` of the group ``kvlock.models``
TINY_RANDOM_MODEL = BuiltinModel(
    "tiny-random",
    "tiny-random (random-weight Wan2.1 from config)",
    WanFamily(),
    TINY_DEFAULTS,
    lambda dtype: build_tiny_wan(dtype=dtype),
)

"""Random LoRAs in the diffusers/PEFT format, made with peft on a model's own transformer and saved with the
pipeline's own ``save_lora_weights`` — and the bad files a LoRA folder may hold, for the refusals."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "net.0.proj", "net.2")  # every block's attention and FFN linears


def lora_state(transformer: torch.nn.Module, rank: int, seed: int, alpha: float | None = None, scale: float = 0.3):
    """A LoRA of ``rank`` on every block's attention and FFN linears of ``transformer``, with random A and B
    (B is zero at peft's initialisation, which would change nothing), as PEFT names it; and its config."""
    from peft import LoraConfig, get_peft_model_state_dict

    config = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=list(TARGETS), init_lora_weights=False)
    generator = torch.Generator().manual_seed(seed)
    transformer.add_adapter(config, adapter_name="made")
    try:
        state = get_peft_model_state_dict(transformer, adapter_name="made")
        state = {k: torch.randn(v.shape, generator=generator) * scale for k, v in state.items()}
    finally:
        transformer.delete_adapters("made")
    return state, config


def save_lora(
    transformer, folder: Path, name: str, rank: int = 4, seed: int = 0, alpha: float | None = None, pipeline=None
) -> Path:
    """``folder/NAME.safetensors``: a random LoRA for ``transformer``, saved by the pipeline's own
    ``save_lora_weights`` (WanPipeline's unless another pipeline class is given)."""
    from diffusers import WanPipeline

    state, config = lora_state(transformer, rank, seed, alpha)
    (pipeline or WanPipeline).save_lora_weights(
        folder,
        transformer_lora_layers=state,
        weight_name=f"{name}.safetensors",
        transformer_lora_adapter_metadata=config.to_dict(),
    )
    return folder / f"{name}.safetensors"


def save_expert_lora(pipe, folder: Path, rank: int = 4, seed: int = 0) -> Path:
    """A Wan2.2 A14B LoRA as it ships: ``high_noise_model.safetensors`` and ``low_noise_model.safetensors``."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, (name, expert) in enumerate(
        (("high_noise_model", pipe.transformer), ("low_noise_model", pipe.transformer_2))
    ):
        state, config = lora_state(expert, rank, seed + index)
        type(pipe).save_lora_weights(
            folder,
            transformer_lora_layers=state,
            weight_name=f"{name}.safetensors",
            transformer_lora_adapter_metadata=config.to_dict(),
        )
    return folder


def write_safetensors_header(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> Path:
    """A safetensors file with the given (dtype, shape) tensors, zero-filled: its header is what is judged."""
    header, offset = {}, 0
    sizes = {"F32": 4, "BF16": 2, "F16": 2}
    for name, (dtype, shape) in tensors.items():
        count = 1
        for n in shape:
            count *= n
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + count * sizes[dtype]]}
        offset += count * sizes[dtype]
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))
    return path

"""What a LoRA costs per step and per switch, with the blocks compiled (a benchmark).

    python bench/lora.py --model 1.3b                      # Wan2.1 1.3B at 81×480×832, rank 64 (GPU)
    python bench/lora.py --model smoke --device cpu        # the same code on a toy size, to check the script

No checkpoint is downloaded: the Wan2.1 transformer is built from its real configuration with random weights
in bf16 (``bench/gpu.py``'s sizes), and two random LoRAs of ``--rank`` on every block's attention (self and
cross: q, k, v, out) and FFN linears are saved the way diffusers saves one and applied through the engine's
own LoRA state (``kvlock.execution.loras``: diffusers' ``load_lora_weights``, ``set_adapters``, ``fuse_lora``,
``enable_lora_hotswap`` and hotswapping).

Rows, one transformer forward at B = 1 (a CFG step is two): bare; LoRA unfused; LoRA fused; LoRA hotswapped
into a slot padded to ``--rank`` — each with the blocks compiled (inductor), after a warm-up forward. Then
switches between jobs: the seconds from asking for the other LoRA to the end of the next forward, minus one
steady forward, and whether dynamo compiled anything new (its graph and recompile counters).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

CONFIGS = {
    "1.3b": dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30, text_dim=4096),
    "smoke": dict(num_attention_heads=2, attention_head_dim=32, ffn_dim=128, num_layers=2, text_dim=64),
}
SIZES = {"1.3b": (81, 480, 832), "smoke": (9, 64, 64)}
TEXT_TOKENS = 512


def build_pipe(size: str, device: torch.device) -> Any:
    """A WanPipeline holding only a random-weight transformer (what a LoRA touches), in bf16 on ``device``."""
    from diffusers import UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel

    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    with torch.device(device):
        torch.set_default_dtype(torch.bfloat16)
        try:
            transformer = WanTransformer3DModel(
                patch_size=(1, 2, 2),
                in_channels=16,
                out_channels=16,
                freq_dim=256,
                qk_norm="rms_norm_across_heads",
                cross_attn_norm=True,
                eps=1e-6,
                rope_max_seq_len=1024,
                **CONFIGS[size],
            ).eval()
        finally:
            torch.set_default_dtype(previous)
    keep = set(transformer._keep_in_fp32_modules or [])
    for name, param in transformer.named_parameters():
        if keep & set(name.split(".")):
            param.data = param.data.float()
    transformer.requires_grad_(False)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return WanPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=scheduler, transformer=transformer)


def save_random_lora(transformer: torch.nn.Module, folder: Path, name: str, rank: int, seed: int) -> Path:
    """A LoRA of ``rank`` on every block's attention and FFN linears, random, saved by WanPipeline."""
    from diffusers import WanPipeline

    generator = torch.Generator().manual_seed(seed)
    state = {}
    for module_name, module in transformer.named_modules():
        if isinstance(module, torch.nn.Linear) and module_name.startswith("blocks."):
            down = torch.randn(rank, module.in_features, generator=generator) * module.in_features**-0.5
            up = torch.randn(module.out_features, rank, generator=generator) * 0.01
            state[f"{module_name}.lora_A.weight"] = down.to(torch.bfloat16)
            state[f"{module_name}.lora_B.weight"] = up.to(torch.bfloat16)
    WanPipeline.save_lora_weights(folder, transformer_lora_layers=state, weight_name=f"{name}.safetensors")
    return folder / f"{name}.safetensors"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Forward:
    """One transformer forward on fixed inputs of the benchmark's size."""

    def __init__(self, transformer: torch.nn.Module, size: tuple[int, int, int], device: torch.device) -> None:
        frames, height, width = size
        latent = (1, 16, (frames - 1) // 4 + 1, height // 8, width // 8)
        self.model, self.device = transformer, device
        self.z = torch.randn(latent, device=device, dtype=torch.bfloat16)
        self.text = torch.randn(1, TEXT_TOKENS, transformer.config.text_dim, device=device, dtype=torch.bfloat16)
        self.t = torch.tensor([500.0], device=device)

    def __call__(self) -> float:
        sync(self.device)
        began = time.perf_counter()
        with torch.no_grad():
            self.model(hidden_states=self.z, timestep=self.t, encoder_hidden_states=self.text, return_dict=False)
        sync(self.device)
        return time.perf_counter() - began

    def steady(self, reps: int) -> float:
        self()  # warm: compiles if anything is new
        return sorted(self() for _ in range(reps))[reps // 2]


def compiled_graphs() -> tuple[int, int]:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"], sum(counters["recompiles"].values())


def resolved(path: Path, weight: float = 1.0) -> Any:
    from kvlock.loading.lora_check import ResolvedLora
    from kvlock.loading.lora_file import read_lora
    from kvlock.settings import LoraChoice

    lora = read_lora(path)
    return ResolvedLora(LoraChoice(lora.name, weight), lora, None)


def switch(state: Any, forward: Forward, loras: list[Any], steady: float) -> dict[str, Any]:
    """Ask for ``loras`` and run one forward: the extra seconds over a steady forward, and what compiled."""
    before = compiled_graphs()
    sync(forward.device)
    began = time.perf_counter()
    state.activate(loras)
    forward()
    seconds = time.perf_counter() - began - steady
    after = compiled_graphs()
    names = "+".join(lora.choice.name for lora in loras) or "none"
    return {
        "to": names,
        "seconds": round(seconds, 3),
        "new_graphs": after[0] - before[0],
        "recompiles": after[1] - before[1],
    }


def run_mode(mode: str, args: argparse.Namespace, device: torch.device, files: list[Path]) -> dict[str, Any]:
    """Per-step time of a LoRA applied in ``mode`` (compiled), then the switches between the two LoRAs."""
    import torch._dynamo

    from kvlock.execution.loras import LoraState
    from kvlock.families.processors import compile_blocks

    torch._dynamo.reset()
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    pipe = build_pipe(args.model, device)
    forward = Forward(pipe.transformer, SIZES[args.model], device)
    row: dict[str, Any] = {"mode": mode}
    if mode == "bare":
        compile_blocks(pipe.transformer.blocks, args.backend)
        row["step_s"] = forward.steady(args.reps)
        return row
    state = LoraState(pipe, [pipe.transformer], mode, rank=args.rank, slots=1)
    if mode == "hotswap":
        state.prepare_hotswap()  # before compilation, as diffusers asks
    first, second = resolved(files[0]), resolved(files[1], 0.8)
    if mode != "hotswap":
        state.activate([first])
    compile_blocks(pipe.transformer.blocks, args.backend)
    if mode == "hotswap":
        state.activate([first])
    began = time.perf_counter()
    forward()
    row["first_forward_s"] = round(time.perf_counter() - began, 2)  # compilation included
    row["step_s"] = steady = forward.steady(args.reps)
    row["switches"] = [
        switch(state, forward, [second], steady),
        switch(state, forward, [], steady),
        switch(state, forward, [first], steady),
        switch(state, forward, [second], steady),
    ]
    row["lora_files_read"] = state.loads
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(CONFIGS), default="1.3b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--backend", default="inductor", help="torch.compile backend of the blocks")
    parser.add_argument("--modes", default="bare,unfused,fused,hotswap")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        template = build_pipe(args.model, torch.device("cpu") if args.model == "smoke" else device).transformer
        files = [save_random_lora(template, Path(folder), name, args.rank, seed) for seed, name in enumerate("ab")]
        del template
        for mode in args.modes.split(","):
            rows.append(run_mode(mode, args, device, files))
            if device.type == "cuda":
                torch.cuda.empty_cache()
    bare = next((r["step_s"] for r in rows if r["mode"] == "bare"), None)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    frames, height, width = SIZES[args.model]
    print(f"# LoRA cost, Wan2.1 {args.model} {frames}×{height}×{width}, rank {args.rank}, {args.backend}, {name}")
    print(f"{'mode':<10} {'step s':>8} {'× bare':>7}  switches (to: extra s, new graphs/recompiles)")
    for row in rows:
        ratio = f"{row['step_s'] / bare:.3f}" if bare else "-"
        switches = "; ".join(
            f"{s['to']}: {s['seconds']:+.3f} s, {s['new_graphs']}/{s['recompiles']}" for s in row.get("switches", [])
        )
        print(f"{row['mode']:<10} {row['step_s']:>8.4f} {ratio:>7}  {switches}")
    if args.json:
        args.json.write_text(
            json.dumps({"device": name, "model": args.model, "rank": args.rank, "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()

"""The engine's execution options on the command line, shared by ``kvlock edit`` and ``kvlock serve``."""

from __future__ import annotations

import argparse

from kvlock.execution.acceleration import (
    ATTENTION_CHOICES,
    COMPOSITES,
    DECODES,
    LORA_MODES,
    MEMORY_MODES,
    VAE_TILING,
    Acceleration,
    default_compile_cache,
)


def add_acceleration_arguments(parser: argparse.ArgumentParser, compile_default: str) -> None:
    """``compile_default`` is "auto" for the server (it amortises compilation over many edits), "off" for one edit."""
    group = parser.add_argument_group("GPU execution")
    group.add_argument(
        "--compile",
        choices=("auto", "on", "off"),
        default=compile_default,
        help=f"compile the transformer blocks (auto: on for CUDA; costs about a minute once) [{compile_default}]",
    )
    group.add_argument(
        "--compile-cache",
        default=str(default_compile_cache()),
        help="folder that keeps compiled kernels between runs, so a restart does not compile again; 'none' "
        "leaves torch's own (%(default)s)",
    )
    group.add_argument("--attention", choices=sorted(ATTENTION_CHOICES), default="auto", help="attention backend")
    group.add_argument(
        "--memory",
        choices=MEMORY_MODES,
        default="auto",
        help="where weights live: auto picks the fastest mode that fits the free GPU memory",
    )
    group.add_argument("--memory-limit-gb", type=float, help="plan to use at most this much GPU memory")
    group.add_argument("--vae-tiling", choices=VAE_TILING, default="auto", help="auto: on at 720p and up")
    group.add_argument(
        "--lora-mode",
        choices=LORA_MODES,
        default="auto",
        help="how LoRAs are applied and switched between edits: unfused adapters, fused into the weights, or "
        "hotswapped into slots of a compiled model (auto: hotswap when compiled, else unfused)",
    )
    group.add_argument("--lora-rank", type=int, default=64, help="hotswap: the highest LoRA rank accepted [64]")
    group.add_argument("--lora-slots", type=int, default=1, help="hotswap: LoRAs one edit may apply [1]")
    group.add_argument(
        "--decode",
        choices=DECODES,
        default="box",
        help="box: decode only the latents the composite reads, grown by the VAE's reach (the whole-frame decode "
        "there, to rounding); frame: whole frames [box]",
    )
    group.add_argument(
        "--composite", choices=COMPOSITES, default="device", help="composite where the decode is, or on the CPU"
    )


def acceleration_from_args(args: argparse.Namespace, parallel: str | None = None) -> Acceleration:
    """``parallel`` (a layout, for ``serve --gpus``) leaves "auto" compilation off: compiled blocks under
    diffusers' context-parallel hooks have not been measured yet."""
    on_cuda = str(args.device).startswith("cuda")
    compiled = args.compile == "on" or (args.compile == "auto" and on_cuda and parallel is None)
    return Acceleration(
        attention=args.attention,
        compile="inductor" if compiled else None,
        memory=args.memory,
        memory_limit_gb=args.memory_limit_gb,
        vae_tiling=args.vae_tiling,
        decode=args.decode,
        composite=args.composite,
        parallel=parallel,
        compile_cache=None if args.compile_cache.lower() == "none" else args.compile_cache,
        lora_mode=args.lora_mode,
        lora_rank=args.lora_rank,
        lora_slots=args.lora_slots,
    ).validated()

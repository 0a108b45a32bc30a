"""One edit across the devices of a process group: sequence (context) parallelism through diffusers.

diffusers' context parallelism (``ContextParallelConfig``, the model's ``_cp_plan``) cuts the token
sequence into one contiguous shard per rank at the first block (the rotary table with it) and gathers
it after the output projection; every self-attention then runs diffusers' Ulysses template (an
all-to-all from token shards to head shards and back) or its ring template. KV-Lock's K/V exchange
happens in the processor before that call, on this rank's shard of tokens with all heads:

- capture and fusion use the background tokens of this rank's shard, numbered within the shard;
- a foreground-only pass runs, on each rank, the foreground tokens of its own shard padded with
  background tokens of the same shard up to the largest count any rank has (the all-to-all and the ring
  need equal query blocks). Its K/V are the shard's cached background plus the real foreground tokens'
  own, so each rank contributes exactly its shard's tokens and the union over ranks is the single-device
  K/V set. The padding tokens' outputs land on background tokens, which the sampler takes from the
  source pass.

The "anything" variants of both templates are used, so every token count and head count the single
device accepts works here too (shards differ by at most one token, cut as ``torch.tensor_split`` cuts).

Every rank runs the whole loop on the same data: the transformer's output is gathered on all ranks, and
the source latents, each step's latents and the cancel flag come from rank 0, so every rank takes the
same branch (mode, α, cancel) — a rank on another branch would wait forever in a collective the others
never call.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..errors import InvalidRequest, SettingsError
from ..families.context_parallel import shard_bounds
from ..lock.token_mask import TokenMask
from ..sampling.layout import PassTokens
from .acceleration import PARALLEL_LAYOUTS


@dataclass(frozen=True)
class ForegroundShards:
    """The tokens of a foreground-only pass, laid out for the ranks.

    ``tokens`` holds one block of equal length per rank, in rank order, each within its rank's shard:
    first the shard's foreground tokens, then background tokens of the same shard as padding. ``own[r]`` is
    how many leading tokens of block r are foreground.
    """

    tokens: torch.Tensor
    own: tuple[int, ...]


def foreground_shards(flat: torch.Tensor, world: int) -> ForegroundShards | None:
    """Lay out the foreground tokens of the boolean token mask ``flat`` for ``world`` ranks.

    None when no layout exists: a shard made of foreground only, beside a shard one token shorter, leaves
    nothing to pad the shorter one with (then the step runs full fused passes, which are exact at α = 1).
    """
    bounds = shard_bounds(flat.numel(), world)
    fg = [flat[a:b].nonzero().squeeze(1) + a for a, b in bounds]
    bg = [(~flat[a:b]).nonzero().squeeze(1) + a for a, b in bounds]
    width = max(len(f) for f in fg)
    if width == 0 or any(width > b - a for a, b in bounds):
        return None
    blocks = [torch.cat([f, g[: width - len(f)]]) for f, g in zip(fg, bg, strict=True)]
    return ForegroundShards(torch.cat(blocks), tuple(len(f) for f in fg))


class AgreedFlag:
    """A cancel flag that every rank reads at the same point of the loop, and all get rank 0's answer.

    The sampler reads its cancel flag once per step on every rank; this turns that read into a broadcast
    over the group's CPU (gloo) channel, so a cancel on the server's rank stops every rank at one step.
    """

    def __init__(self, local: threading.Event | None, group: Any) -> None:
        self.local, self.group = local, group

    def is_set(self) -> bool:
        value = torch.tensor([int(self.local is not None and self.local.is_set())], dtype=torch.int32)
        dist.broadcast(value, src=0, group=self.group)
        return bool(value.item())


class SequenceGroup:
    """This rank's view of the group an editor spans: how its passes see the tokens, and agreement."""

    def __init__(self, layout: str, rank: int, world: int, control: Any) -> None:
        self.layout, self.rank, self.world, self.control = layout, rank, world, control

    @property
    def leader(self) -> bool:
        """Rank 0 reports progress and writes results; the others compute alongside it."""
        return self.rank == 0

    def describe(self) -> str:
        return f"{self.layout} sequence parallel over {self.world} ranks (this is rank {self.rank})"

    def pass_tokens(self, masks: TokenMask) -> PassTokens:
        flat = masks.flat
        if flat.numel() < self.world:
            raise InvalidRequest(
                f"this window has {flat.numel()} tokens, fewer than the {self.world} devices that share it; "
                "edit it on one device or at a larger size"
            )
        if flat.numel() % self.world and dist.get_backend() == "gloo":
            raise InvalidRequest(
                f"this window has {flat.numel()} tokens, which {self.world} ranks cannot share equally, and a gloo "
                "(CPU) process group gathers equal shards only; choose a size whose token count is a multiple of "
                f"{self.world}, or run the group on GPUs (NCCL gathers unequal shards)"
            )
        start, stop = shard_bounds(flat.numel(), self.world)[self.rank]
        background = (~flat[start:stop]).nonzero().squeeze(1)
        shards = foreground_shards(flat, self.world)
        if shards is None:
            return PassTokens(background=background, foreground=None, joined=None)
        return PassTokens(background=background, foreground=shards.tokens, joined=shards.own[self.rank])

    def agree(self, tensor: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``tensor`` on every rank (in place)."""
        dist.broadcast(tensor, src=0)
        return tensor

    def agreed(self, cancel: threading.Event | None) -> AgreedFlag:
        return AgreedFlag(cancel, self.control)


def context_parallel_config(layout: str, world: int) -> Any:
    from diffusers import ContextParallelConfig

    if layout == "ulysses":
        return ContextParallelConfig(ulysses_degree=world, ulysses_anything=True)
    if layout == "ring":
        return ContextParallelConfig(ring_degree=world, ring_anything=True)
    raise SettingsError(f"parallel must be one of {sorted(PARALLEL_LAYOUTS)}, got {layout!r}")


def join_sequence_parallel(pipe: Any, family: Any, layout: str, device: torch.device) -> SequenceGroup:
    """Spread ``pipe``'s transformer(s) over the initialised default process group (every rank calls this).

    The steps are those of diffusers' ``ModelMixin.enable_parallelism`` — build the device mesh, record the
    config on the model and on every attention processor (KV-Lock's and the one it wraps), install the
    model's ``_cp_plan`` hooks — done here because diffusers 0.42 picks the device as ``rank %
    torch.accelerator.device_count()``, which divides by zero on a CPU-only host (the gloo group the tests
    use) and ignores the device the editor placed the model on.
    """
    from diffusers import ParallelConfig
    from diffusers.hooks.context_parallel import apply_context_parallel
    from torch.distributed.device_mesh import init_device_mesh

    if not getattr(family, "sequence_parallel", False):
        raise SettingsError(f"sequence parallelism is implemented for Wan models; {family.name} runs on one device")
    if not dist.is_available() or not dist.is_initialized():
        raise SettingsError(
            f"parallel={layout!r} needs a torch.distributed process group: start the ranks with torchrun (or "
            "`kvlock serve --gpus 0,1,…`) and call torch.distributed.init_process_group before loading"
        )
    world, rank = dist.get_world_size(), dist.get_rank()
    if world < 2:
        raise SettingsError(f"parallel={layout!r} needs at least 2 ranks; this process group has {world}")
    experts = [module for _, module in family.transformers(pipe)]
    if any(getattr(module, "_parallel_config", None) is not None for module in experts):
        raise SettingsError("this model is already spread over a process group; load it again for another editor")
    cp = context_parallel_config(layout, world)
    mesh = init_device_mesh(device.type, cp.mesh_shape, mesh_dim_names=cp.mesh_dim_names)
    config = ParallelConfig(context_parallel_config=cp)
    config.setup(rank, world, device, mesh=mesh)
    for transformer in experts:  # both experts of a two-expert model, on the one mesh
        transformer._parallel_config = config
        for module in transformer.modules():
            processor = getattr(module, "processor", None)
            for target in (processor, getattr(processor, "original", None)):
                if target is not None and hasattr(target, "_parallel_config"):
                    target._parallel_config = config
        apply_context_parallel(transformer, cp, transformer._cp_plan)
    control = dist.new_group(backend="gloo")  # cancel flags are CPU tensors, whatever the device backend
    return SequenceGroup(layout, rank, world, control)

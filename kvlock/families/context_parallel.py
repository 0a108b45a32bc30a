"""How diffusers' context parallelism cuts a model's token sequence, as far as a family's forward must know.

diffusers' context parallelism (``ContextParallelConfig``, the model's ``_cp_plan``) hands each rank one
contiguous shard of the tokens at the first block, the rotary table with it, cut as ``torch.tensor_split``
cuts (its "anything" sharder). A family that runs a forward over a subset of tokens (``predict_tokens``)
needs the rotary rows of those tokens as this rank numbers them; everything else about running an edit
across a process group lives in ``kvlock.execution.sequence_parallel``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def shard_bounds(total: int, world: int) -> list[tuple[int, int]]:
    """[start, stop) of each rank's tokens, cut as ``torch.tensor_split`` (diffusers' anything sharder) cuts."""
    base, extra = divmod(total, world)
    bounds, start = [], 0
    for rank in range(world):
        stop = start + base + (1 if rank < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def context_parallel_of(model: Any) -> Any | None:
    """The ``ContextParallelConfig`` diffusers recorded on ``model``, or None on one device."""
    parallel = getattr(model, "_parallel_config", None)
    return getattr(parallel, "context_parallel_config", None) if parallel is not None else None


def rotary_rows(model: Any, token_index: torch.Tensor, total: int) -> torch.Tensor:
    """Rows of the model's rotary table, as its ``rope`` returns it here, for the tokens this rank runs.

    On one device that is ``token_index`` itself. Under context parallelism the model's plan hands each
    rank its shard of the table and, at the first block, its block of ``token_index``'s tokens (laid out by
    ``kvlock.execution.sequence_parallel.foreground_shards``), so the rows are that block, numbered within
    the shard.
    """
    cp = context_parallel_of(model)
    if cp is None:
        return token_index
    world = cp._world_size
    rank = dist.get_rank(cp._flattened_mesh.get_group())
    start, _ = shard_bounds(total, world)[rank]
    return token_index.tensor_split(world)[rank] - start


def local_tokens(model: Any, token_index: torch.Tensor | None, total: int) -> torch.Tensor | slice:
    """The (global) tokens this rank's pass runs: ``token_index`` (None: every token) on one device; under
    context parallelism this rank's shard of them, as the model's plan cuts the hidden states."""
    cp = context_parallel_of(model)
    if cp is None:
        return slice(None) if token_index is None else token_index
    world = cp._world_size
    rank = dist.get_rank(cp._flattened_mesh.get_group())
    if token_index is None:
        start, stop = shard_bounds(total, world)[rank]
        return slice(start, stop)
    return token_index.tensor_split(world)[rank]

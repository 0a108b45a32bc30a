"""The LoRAs a loaded model carries from one edit to the next, switched per edit without reloading the model.

Everything goes through diffusers' own LoRA loaders (``load_lora_weights``, ``set_adapters``, ``fuse_lora``,
``enable_lora_hotswap`` and ``load_lora_weights(..., hotswap=True)``); a LoRA for a two-expert model (Wan2.2
A14B) loads its low-noise file into ``transformer_2`` with ``load_into_transformer_2=True``, as diffusers does.

Modes (``Acceleration.lora_mode``):

- ``unfused`` (the default without compilation): each LoRA is loaded once as an adapter and kept (the least
  recently used dropped past ``KEEP``); an edit activates its own with ``set_adapters(names, weights)``, an edit
  without LoRAs disables them all. Exactly what diffusers' pipeline computes with the same LoRAs.
- ``fused``: as ``unfused``, then ``fuse_lora`` folds the active LoRAs into the weights (no cost per step); the
  next edit with other LoRAs unfuses first. Unfusing subtracts what fusing added, which in bfloat16 does not
  give back the exact weights: for a server that keeps one LoRA, not one that switches all day.
- ``hotswap`` (the default with compilation where LoRAs are offered): before the blocks are compiled,
  ``enable_lora_hotswap`` and a placeholder adapter of rank ``rank`` on every linear layer, all zeros, fill
  ``slots`` adapter slots; an edit's
  LoRAs are then hotswapped into the slots (their weights copied into the slots' tensors, ranks padded), so the
  compiled graph never changes and nothing recompiles. A LoRA's weight is applied by scaling the slot's scaling
  tensors in place: ``set_adapters`` would put floats back into them, which the compiled graph guards on. An
  unused slot's scaling is 0, so it adds exactly nothing. A LoRA of a higher rank than ``rank``, or more LoRAs
  than slots, is refused before the edit starts, naming the server option to raise.

Diffusers' pipeline methods work on the pipeline's components, which stay where they are: loading a LoRA
never reloads or moves the base model (``loads`` counts the LoRA files read, for the trace and the tests).
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import LoraUnusableError
from ..loading.lora_check import ResolvedLora
from ..loading.lora_file import LoraFile, LoraPart

KEEP = 8  # adapters kept loaded in the unfused and fused modes
SLOT = "kvlock_slot{}"


def adapter_name(lora: LoraFile) -> str:
    """A peft adapter name for a LoRA: its name in the characters a module key may hold, and what identifies
    its files' contents (so a LoRA replaced on disk is loaded afresh)."""
    stamp = "_".join(f"{p.size:x}{int(p.path.stat().st_mtime_ns) & 0xFFFFFF:x}" for p in lora.parts)
    return re.sub(r"[^A-Za-z0-9_]", "_", lora.name) + "_" + stamp


def load_part(pipe: Any, part: LoraPart, adapter: str, hotswap: bool = False) -> None:
    """One file of a LoRA into its expert, through the pipeline's own loader."""
    extra = {"load_into_transformer_2": True} if part.expert == 1 else {}
    pipe.load_lora_weights(
        str(part.path.parent), weight_name=part.path.name, adapter_name=adapter, hotswap=hotswap, **extra
    )


@dataclass(frozen=True)
class LoraSwitch:
    """What activating an edit's LoRAs did, for the trace."""

    mode: str
    seconds: float
    loaded: tuple[str, ...]  # LoRAs whose files were read for this edit (the rest were already in memory)

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "switch_seconds": round(self.seconds, 4), "loaded": list(self.loaded)}


class LoraState:
    """The LoRA adapters of one runtime's pipeline, and the switch from one edit's LoRAs to the next's."""

    def __init__(self, pipe: Any, experts: Sequence[torch.nn.Module], mode: str, rank: int = 64, slots: int = 1):
        self.pipe, self.experts, self.mode, self.rank, self.slots = pipe, list(experts), mode, rank, slots
        self.loads = 0  # LoRA files read into the model, ever (a switch back to a kept adapter reads none)
        self._adapters: OrderedDict[str, LoraFile] = OrderedDict()  # unfused/fused: loaded, oldest first
        self._active: tuple[tuple[str, float], ...] = ()
        self._fused = False
        self._slot_holds: list[str | None] = []  # hotswap: the adapter name each slot holds
        self._slot_scales: list[list[dict[torch.Tensor, float]]] = []  # per slot, per expert: scaling → its base

    # -- hotswap ------------------------------------------------------------------------------------

    def prepare_hotswap(self) -> None:
        """Before compilation: the slots, each a zero adapter of ``rank`` on every linear layer of every expert."""
        if not hasattr(self.pipe, "enable_lora_hotswap"):
            return
        placeholders = [_placeholder(e, self.rank) for e in self.experts]
        for slot in range(self.slots):
            name = SLOT.format(slot)
            self.pipe.enable_lora_hotswap(target_rank=self.rank, check_compiled="ignore" if slot else "error")
            for expert, state in enumerate(placeholders):
                extra = {"load_into_transformer_2": True} if expert == 1 else {}
                self.pipe.load_lora_weights(dict(state), adapter_name=name, **extra)
        names = [SLOT.format(s) for s in range(self.slots)]
        for expert in self.experts:  # every slot active, as set_adapters would make them, scalings untouched
            for layer in _lora_layers(expert):
                layer.set_adapter(names)
        self._slot_holds = [None] * self.slots
        self._slot_scales = [[_scalings(e, SLOT.format(s)) for e in self.experts] for s in range(self.slots)]
        for slot in range(self.slots):
            self._scale_slot(slot, None, 0.0)

    def _scale_slot(self, slot: int, lora: LoraFile | None, weight: float) -> None:
        """Scale slot ``slot`` to ``weight`` × its LoRA's own scaling, in place; experts the LoRA has no file for
        (and every expert of an empty slot) to 0."""
        covered = set(lora.experts) if lora is not None else set()
        for expert, scales in enumerate(self._slot_scales[slot]):
            factor = weight if expert in covered else 0.0
            for tensor, base in scales.items():
                tensor.fill_(base * factor)

    def _hotswap(self, loras: Sequence[ResolvedLora]) -> tuple[str, ...]:
        if not self._slot_scales:  # a pipeline without diffusers' hotswap has no slots (and takes no LoRA)
            if loras:
                raise LoraUnusableError(f"{type(self.pipe).__name__} cannot hotswap LoRAs")
            return ()
        if len(loras) > self.slots:
            raise LoraUnusableError(
                f"{len(loras)} LoRAs asked, but this server holds {self.slots} at a time while compiled "
                "(kvlock serve --lora-slots N)"
            )
        loaded = []
        for slot in range(self.slots):
            resolved = loras[slot] if slot < len(loras) else None
            if resolved is None:
                self._scale_slot(slot, None, 0.0)
                continue
            lora = resolved.file
            if lora.rank > self.rank:
                raise LoraUnusableError(
                    f"LoRA {lora.name} has rank {lora.rank}; this server hotswaps LoRAs of rank up to {self.rank} "
                    "(kvlock serve --lora-rank R)"
                )
            name = adapter_name(lora)
            if self._slot_holds[slot] != name:
                self._slot_holds[slot] = None
                try:
                    for part in lora.parts:
                        load_part(self.pipe, part, SLOT.format(slot), hotswap=True)
                        self.loads += 1
                except (ValueError, RuntimeError) as exc:  # diffusers' and peft's own refusals, said as they are
                    self._scale_slot(slot, None, 0.0)
                    raise LoraUnusableError(
                        f"LoRA {lora.name} cannot be hotswapped into the compiled model: {exc}"
                    ) from exc
                self._slot_holds[slot] = name
                self._slot_scales[slot] = [_scalings(e, SLOT.format(slot)) for e in self.experts]
                loaded.append(lora.name)
            self._scale_slot(slot, lora, resolved.choice.weight)
        return tuple(loaded)

    # -- unfused / fused ----------------------------------------------------------------------------

    def _adapters_for(self, loras: Sequence[ResolvedLora]) -> tuple[str, ...]:
        loaded = []
        for resolved in loras:
            name = adapter_name(resolved.file)
            if name in self._adapters:
                self._adapters.move_to_end(name)
                continue
            try:
                for part in resolved.file.parts:
                    load_part(self.pipe, part, name)
                    self.loads += 1
            except (ValueError, RuntimeError, KeyError) as exc:
                self._forget(name)
                raise LoraUnusableError(f"LoRA {resolved.file.name} could not be loaded: {exc}") from exc
            self._adapters[name] = resolved.file
            loaded.append(resolved.file.name)
        wanted = {adapter_name(r.file) for r in loras}
        while len(self._adapters) > max(KEEP, len(wanted)):
            oldest = next(n for n in self._adapters if n not in wanted)
            self._forget(oldest)
        return tuple(loaded)

    def _forget(self, name: str) -> None:
        self._adapters.pop(name, None)
        for expert in self.experts:
            if name in getattr(expert, "peft_config", {}):
                expert.delete_adapters(name)

    def _activate(self, loras: Sequence[ResolvedLora]) -> None:
        active = tuple((adapter_name(r.file), r.choice.weight) for r in loras)
        if active == self._active and (self.mode != "fused" or self._fused == bool(active)):
            return
        if self._fused:
            self.pipe.unfuse_lora(components=self._components())
            self._fused = False
        if not active:
            if self._adapters:
                self.pipe.disable_lora()
        else:
            self.pipe.enable_lora()
            self.pipe.set_adapters([n for n, _ in active], [w for _, w in active])
            if self.mode == "fused":
                self.pipe.fuse_lora(components=self._components(), adapter_names=[n for n, _ in active])
                self._fused = True
        self._active = active

    def _components(self) -> list[str]:
        return ["transformer", "transformer_2"][: len(self.experts)]

    # -- per edit -----------------------------------------------------------------------------------

    @property
    def in_use(self) -> bool:
        """Whether LoRAs act on the model now (an edit without any then has something to switch off)."""
        return bool(self._active) or any(name is not None for name in self._slot_holds)

    def activate(self, loras: Sequence[ResolvedLora]) -> LoraSwitch:
        """Make exactly ``loras`` (with their weights) act on the model for the next edit."""
        began = time.perf_counter()
        if self.mode == "hotswap":
            loaded = self._hotswap(loras)
        else:
            wanted = tuple((adapter_name(r.file), r.choice.weight) for r in loras)
            if self._fused and wanted != self._active:  # unfused before any adapter is loaded or removed
                self.pipe.unfuse_lora(components=self._components())
                self._fused = False
            loaded = self._adapters_for(loras)
            self._activate(loras)
        return LoraSwitch(self.mode, time.perf_counter() - began, loaded)


def _placeholder(expert: torch.nn.Module, rank: int) -> dict[str, torch.Tensor]:
    """A LoRA of zeros on every linear layer of ``expert``: it changes nothing, and reserves the layers."""
    state = {}
    for name, module in expert.named_modules():
        if isinstance(module, torch.nn.Linear):
            state[f"transformer.{name}.lora_A.weight"] = torch.zeros(rank, module.in_features)
            state[f"transformer.{name}.lora_B.weight"] = torch.zeros(module.out_features, rank)
    return state


def _lora_layers(expert: torch.nn.Module) -> list[Any]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in expert.modules() if isinstance(m, BaseTunerLayer)]


def _scalings(expert: torch.nn.Module, adapter: str) -> dict[torch.Tensor, float]:
    """The scaling tensors of ``adapter`` in ``expert`` (made tensors by ``enable_lora_hotswap``) with their
    values as the last hotswap set them."""
    out = {}
    for layer in _lora_layers(expert):
        scale = getattr(layer, "scaling", {}).get(adapter)
        if isinstance(scale, torch.Tensor):
            out[scale] = float(scale)
    return out


def resolve_mode(choice: str, compiled: bool, offered: bool) -> str:
    """``auto``: hotswap when the blocks are compiled and LoRAs are offered (switching then recompiles nothing;
    the slots cost every step a little, so a model with no LoRA to apply keeps its bare blocks), else unfused."""
    if choice == "auto":
        return "hotswap" if compiled and offered else "unfused"
    return choice

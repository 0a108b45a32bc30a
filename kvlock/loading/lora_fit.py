"""Whether a LoRA fits a model, decided from shapes alone, before any weight is loaded or any step runs.

diffusers injects a LoRA into every module its keys name and then loads the weights; keys that name no
module are only warned about, and a shape that differs fails inside PyTorch's ``load_state_dict`` halfway
through injecting. So the engine checks first: the LoRA's keys are put in diffusers' own names by the
pipeline's own ``lora_state_dict`` (which converts the formats it knows, e.g. Wan's original release) run on
*meta* tensors shaped like the file's — only the scalar ``alpha`` entries, a few bytes, are read for real —
and each target must be a linear layer of the model's transformer with the LoRA's input and output sizes,
and each pair of matrices must agree on its rank. The model's shapes come from its folder's safetensors
headers (the server checks a request without loading the model) or from the loaded module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import LoraUnusableError
from .lora_file import LoraFile, LoraPart, read_header

PREFIX = "transformer."
LORA_PARAMETER = ".lora_"  # what peft names the weights it adds to a layer


@dataclass(frozen=True)
class LoraTarget:
    """One layer a LoRA changes, in the transformer's own module names."""

    module: str
    rank: int
    features_in: int
    features_out: int


Shapes = Mapping[str, tuple[int, ...]]  # a transformer's parameters by name → shape


def diffusers_keys(part: LoraPart, pipeline_class: Any) -> dict[str, tuple[int, ...]]:
    """The part's tensors as diffusers will load them (name → shape), converted by the pipeline's own loader."""
    scalars = [k for k, t in part.tensors.items() if k.endswith(".alpha") or not t.shape]
    tensors: dict[str, torch.Tensor] = {
        k: torch.empty(t.shape, device="meta") for k, t in part.tensors.items() if k not in scalars
    }
    if scalars:
        from safetensors import safe_open

        with safe_open(str(part.path), framework="pt") as handle:
            tensors.update({k: handle.get_tensor(k) for k in scalars})
    try:
        state = pipeline_class.lora_state_dict(tensors)
    except Exception as exc:  # diffusers' converters raise what they raise on keys they do not expect
        raise LoraUnusableError(
            f"{part.path.name}: {pipeline_class.__name__} cannot read this LoRA's keys ({type(exc).__name__}: {exc})"
        ) from exc
    if isinstance(state, tuple):
        state = state[0]
    return {k: tuple(v.shape) for k, v in state.items()}


def lora_targets(keys: Mapping[str, tuple[int, ...]], where: str) -> tuple[dict[str, LoraTarget], list[str]]:
    """The layers the keys change, and what is wrong with the keys themselves (no ``lora`` in a name, a key for
    another component, an A/B pair that does not agree on its rank)."""
    problems: list[str] = []
    foreign = sorted({k.split(".", 1)[0] for k in keys if not k.startswith(PREFIX)})
    if foreign:
        problems.append(f"{where} has weights for {', '.join(foreign)}, not for the transformer")
    plain = sorted(k for k in keys if "lora" not in k)
    if plain:
        problems.append(f"{where} has weights that are not LoRA weights: {_few(plain)}")
    downs = {k[len(PREFIX) : -len(".lora_A.weight")]: s for k, s in keys.items() if k.endswith(".lora_A.weight")}
    ups = {k[len(PREFIX) : -len(".lora_B.weight")]: s for k, s in keys.items() if k.endswith(".lora_B.weight")}
    unpaired = sorted(set(downs) ^ set(ups))
    if unpaired:
        problems.append(f"{where}: these layers have one LoRA matrix of two: {_few(unpaired)}")
    targets: dict[str, LoraTarget] = {}
    for module in sorted(set(downs) & set(ups)):
        down, up = downs[module], ups[module]
        if len(down) != 2 or len(up) != 2:
            problems.append(f"{where}: {module} has LoRA matrices of {len(down)} and {len(up)} dimensions, not 2")
        elif down[0] != up[1]:
            problems.append(f"{where}: {module}'s LoRA matrices disagree on the rank ({down[0]} and {up[1]})")
        else:
            targets[module] = LoraTarget(module, down[0], down[1], up[0])
    return targets, problems


def fit_problems(targets: Mapping[str, LoraTarget], shapes: Shapes, where: str) -> list[str]:
    """Each target must be a linear layer of the model with the LoRA's sizes; what is not, in a few words."""
    missing, mismatched = [], []
    for module, target in targets.items():
        weight = shapes.get(f"{module}.weight")
        if weight is None:
            missing.append(module)
        elif len(weight) != 2 or weight != (target.features_out, target.features_in):
            theirs = "×".join(map(str, weight))
            mismatched.append(f"{module} (LoRA {target.features_out}×{target.features_in}, model {theirs})")
    problems = []
    if missing:
        problems.append(f"{where} changes {len(missing)} layer(s) the model does not have: {_few(missing)}")
    if mismatched:
        problems.append(f"{where} has layers of other sizes than the model's: {_few(mismatched)}")
    return problems


def _few(items: list[str], most: int = 3) -> str:
    shown = ", ".join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def check_lora_fits(lora: LoraFile, pipeline_class: Any, expert_shapes: tuple[Shapes, ...]) -> None:
    """Raise :class:`LoraUnusableError` with every reason ``lora`` cannot be applied to a model whose experts
    have ``expert_shapes`` (one transformer, or Wan2.2 A14B's two)."""
    if not hasattr(pipeline_class, "load_lora_weights"):
        raise LoraUnusableError(
            f"LoRA {lora.name}: diffusers offers no LoRA loader for {pipeline_class.__name__}, so no LoRA can be "
            "applied to this model"
        )
    problems: list[str] = []
    for part in lora.parts:
        where = f"LoRA {lora.name}" + (f" ({part.path.name})" if len(lora.parts) > 1 else "")
        if part.expert >= len(expert_shapes):
            problems.append(
                f"{where} is for the low-noise expert of a two-expert model (Wan2.2 A14B); this model has one"
            )
            continue
        targets, own = lora_targets(diffusers_keys(part, pipeline_class), where)
        problems += own
        if not targets and not own:
            problems.append(f"{where} changes no layer of the transformer")
        problems += fit_problems(targets, expert_shapes[part.expert], where)
    if problems:
        raise LoraUnusableError("; ".join(problems) + ": it was made for another base model, or is damaged")


def module_shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    """A loaded transformer's parameter shapes under their own names, with any LoRA layers peft added taken out."""
    out = {}
    for name, parameter in module.named_parameters():
        if LORA_PARAMETER in name:
            continue
        out[name.replace(".base_layer.", ".")] = tuple(parameter.shape)
    return out


def folder_shapes(component: Path) -> dict[str, tuple[int, ...]]:
    """A saved transformer's parameter shapes from its safetensors headers (one file or an index of shards)."""
    index = next(iter(sorted(component.glob("*.safetensors.index.json"))), None)
    if index is not None:
        try:
            files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, KeyError, json.JSONDecodeError) as exc:
            raise LoraUnusableError(f"{index} cannot be read to check LoRAs against: {exc}") from exc
        paths = [component / f for f in files]
    else:
        paths = sorted(component.glob("*.safetensors"))
    shapes: dict[str, tuple[int, ...]] = {}
    for path in paths:
        tensors, _ = read_header(path)
        shapes.update({name: info.shape for name, info in tensors.items()})
    return shapes

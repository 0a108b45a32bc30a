"""The LoRAs of a request resolved and checked against a model before any work: by the engine when an edit
starts (against the loaded transformers) and by a server when a job is submitted (against the model folder's
headers, without loading it), with the same checks and the same messages."""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import LoraUnusableError
from ..settings import LoraChoice
from .load import TINY, TINY_FOLDER, builtin_models
from .lora_catalog import LoraCatalog
from .lora_file import LoraFile
from .lora_fit import Shapes, check_lora_fits, folder_shapes, module_shapes
from .lora_schedule import LoraSchedule

EXPERT_FOLDERS = ("transformer", "transformer_2")


@dataclass(frozen=True)
class ResolvedLora:
    """A requested LoRA found on disk, checked to fit the model, with its file's schedule (if it has one)."""

    choice: LoraChoice
    file: LoraFile
    schedule: LoraSchedule | None

    def describe(self) -> dict[str, Any]:
        """What the trace records of it."""
        return {
            "name": self.choice.name,
            "weight": self.choice.weight,
            "location": str(self.file.location),
            "rank": self.file.rank,
            "experts": list(self.file.experts),
            "schedule": self.schedule.source if self.schedule is not None else "",
        }


def resolve_loras(
    choices: Sequence[LoraChoice], catalog: LoraCatalog, pipeline_class: Any, expert_shapes: tuple[Shapes, ...]
) -> tuple[ResolvedLora, ...]:
    """Find each LoRA by name and check it fits; a LoRA of weight 0 is found and checked but then left out."""
    resolved = []
    for choice in choices:
        lora = catalog.find(choice.name)
        check_lora_fits(lora, pipeline_class, expert_shapes)
        schedule = catalog.schedule(lora)
        if choice.weight != 0.0:
            resolved.append(ResolvedLora(choice, lora, schedule))
    return tuple(resolved)


def loaded_shapes(transformers: Sequence[Any]) -> tuple[Shapes, ...]:
    return tuple(module_shapes(t) for t in transformers)


@functools.lru_cache(maxsize=16)
def _builtin_shapes(name: str) -> tuple[Any, tuple[Shapes, ...]]:
    """A built-in model (made in memory, e.g. ``tiny-random``) is built once to read its shapes."""
    import torch

    pipe = builtin_models()[name].build(torch.float32)
    experts = [getattr(pipe, n) for n in EXPERT_FOLDERS if getattr(pipe, n, None) is not None]
    return type(pipe), loaded_shapes(experts)


def folder_model(location: str) -> tuple[Any, tuple[Shapes, ...]]:
    """The pipeline class and each expert's shapes of the model at ``location`` (what ``find_model`` returns),
    read from its headers; a built-in model is built once for them."""
    if location in builtin_models():
        return _builtin_shapes(location)
    folder = TINY_FOLDER if location == TINY else Path(location)
    import diffusers

    try:
        class_name = json.loads((folder / "model_index.json").read_text())["_class_name"]
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise LoraUnusableError(f"the model at {folder} cannot be read to check LoRAs against: {exc}") from exc
    pipeline_class = getattr(diffusers, class_name, None)
    if pipeline_class is None:
        raise LoraUnusableError(f"the model at {folder} is a {class_name}, which diffusers does not know")
    experts = tuple(folder_shapes(folder / n) for n in EXPERT_FOLDERS if (folder / n / "config.json").is_file())
    return pipeline_class, experts


def check_loras_for_model(location: str, choices: Sequence[LoraChoice], catalog: LoraCatalog) -> None:
    """Everything the engine will check of ``choices`` on the model at ``location``, without loading it."""
    if not choices:
        return
    pipeline_class, experts = folder_model(location)
    resolve_loras(choices, catalog, pipeline_class, experts)

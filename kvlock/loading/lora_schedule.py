"""A LoRA's own ``kvlock.json``: the sampling defaults it brings to its base model.

A step-distilled LoRA (the 4-step, guidance-1 kind) only works with its schedule, so it carries it: the same
fields a model folder's ``kvlock.json`` sets (``steps``, ``guidance``, ``guidance_2``, τ and the lock's
``schedule``, and whatever sampler settings a model folder's file accepts), read into :class:`LoraSchedule`
and laid over the model's own defaults (:func:`with_lora_schedules`). So an edit takes each value from the
request, else its LoRAs' files, else the model's, else the engine's — the model folder's precedence with the
LoRA, the more specific of the two, in front. The model's native size (height, width, frames, text length,
frame rate) belongs to the model and is never a LoRA's to change.

Two LoRAs of one edit that set the same field to different values are refused: no order of LoRAs should
decide an edit's step count silently.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..errors import LoraError, LoraUnusableError, ModelLoadError
from ..families.base import ModelDefaults
from .load import check_folder_values

MODEL_ONLY = ("height", "width", "frames", "text_length", "fps")  # the base model's, never a LoRA's
ABOUT = ("base", "description", "training", "calibration")  # what a file may say of itself, read by people
TYPED = ("steps", "guidance", "guidance_2", "tau", "tau_source", "schedule", "schedule_source")


@dataclass(frozen=True)
class LoraSchedule:
    """What one LoRA's ``kvlock.json`` sets; ``None``/empty leaves the model's value. ``sampler`` holds the
    remaining fields a model folder's ``kvlock.json`` accepts (its scheduler settings), applied the same way."""

    source: str
    steps: int | None = None
    guidance: float | None = None
    guidance_2: float | None = None
    tau: float | None = None
    tau_source: str = ""
    schedule: Mapping[str, Any] | None = None
    schedule_source: str = ""
    sampler: Mapping[str, Any] = field(default_factory=dict)
    base: str = ""  # what the file says the LoRA was made for (shown by ``kvlock loras``)

    def values(self) -> dict[str, Any]:
        """The ModelDefaults fields this LoRA sets."""
        out = {name: getattr(self, name) for name in ("steps", "guidance", "guidance_2", "tau")}
        out = {k: v for k, v in out.items() if v is not None}
        if self.tau is not None:
            out["tau_source"] = self.tau_source or f"{self.source} (τ calibrated with this LoRA)"
        return out | dict(self.sampler)


def read_lora_schedule(path: Path) -> LoraSchedule:
    """Parse and check a LoRA's ``kvlock.json``; a bad file is a :class:`LoraUnusableError` naming the field."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LoraUnusableError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise LoraUnusableError(f"{path} must hold an object of sampling defaults, got {type(data).__name__}")
    known = {f.name for f in fields(ModelDefaults)} - set(MODEL_ONLY)
    refused = sorted(set(data) & set(MODEL_ONLY))
    if refused:
        raise LoraUnusableError(f"{path}: {', '.join(refused)} belong to the base model, not to a LoRA; remove them")
    unknown = sorted(set(data) - known - set(ABOUT))
    if unknown:
        raise LoraUnusableError(
            f"{path}: unknown fields {', '.join(unknown)}; a LoRA's kvlock.json may set {', '.join(sorted(known))}"
        )
    try:
        check_folder_values(path, data)
    except ModelLoadError as exc:
        raise LoraUnusableError(str(exc)) from None
    typed = {name: data[name] for name in TYPED if name in data}
    sampler = {k: v for k, v in data.items() if k in known and k not in TYPED}
    base = data.get("base", "")
    return LoraSchedule(source=str(path), sampler=sampler, base=base if isinstance(base, str) else "", **typed)


def with_lora_schedules(defaults: ModelDefaults, schedules: Mapping[str, LoraSchedule]) -> ModelDefaults:
    """``defaults`` (the model's) with what the named LoRAs' files set laid over it; the lock's schedule is
    merged field by field, and where it came from names both."""
    if not schedules:
        return defaults
    chosen: dict[str, tuple[str, Any]] = {}
    lock: dict[str, tuple[str, Any]] = {}
    for name, schedule in schedules.items():
        for key, value in schedule.values().items():
            _agree(chosen, key, name, value)
        for key, value in (schedule.schedule or {}).items():
            _agree(lock, key, name, value)
    values = {key: value for key, (_, value) in chosen.items()}
    if lock:
        values["schedule"] = {**(defaults.schedule or {}), **{k: v for k, (_, v) in lock.items()}}
        names = sorted({who for who, _ in lock.values()})
        theirs = "; ".join(
            f"LoRA {who}'s kvlock.json"
            + (f" ({schedules[who].schedule_source})" if schedules[who].schedule_source else "")
            for who in names
        )
        fields_set = ", ".join(sorted(lock))
        model = f" over the model's ({defaults.schedule_source})" if defaults.schedule_source else ""
        values["schedule_source"] = f"{theirs}: {fields_set}{model}"
    return replace(defaults, **values)


def _agree(chosen: dict[str, tuple[str, Any]], key: str, name: str, value: Any) -> None:
    if key in chosen and chosen[key][1] != value:
        other, theirs = chosen[key]
        raise LoraError(
            f"LoRAs {other} and {name} set {key} differently ({theirs!r} and {value!r}) in their kvlock.json: "
            f"set {key} for this edit, or apply one of them"
        )
    chosen.setdefault(key, (name, value))

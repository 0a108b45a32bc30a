"""Model-family adapters, looked up by the pipeline class a diffusers folder names."""

from __future__ import annotations

from .base import ModelDefaults, ModelFamily
from .cogvideox import CogVideoXFamily
from .hunyuan15 import HunyuanVideo15Family
from .ltx import LTXFamily
from .wan import WanFamily

FAMILIES: tuple[type, ...] = (WanFamily, CogVideoXFamily, LTXFamily, HunyuanVideo15Family)


def family_for_pipeline(class_name: str) -> ModelFamily | None:
    """The adapter for a ``model_index.json`` ``_class_name``, or None if no family handles it."""
    for family in FAMILIES:
        if class_name in family.pipeline_class_names:
            return family()
    return None


def supported_pipelines() -> list[str]:
    return [name for family in FAMILIES for name in family.pipeline_class_names]


__all__ = ["FAMILIES", "ModelDefaults", "ModelFamily", "family_for_pipeline", "supported_pipelines"]

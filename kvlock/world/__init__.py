"""The embedded model's world: research around the engine, not the engine.

It holds the procedural clip generator (``scenes``), the recipe that trains the shipped ``tiny`` model on
it (``training``), the edit cases with their ground truth (``cases``), the judges (``judges``), the
quality benchmark's runner (``benchmark``), the demo, and random-weight test pipelines built from config
(``tiny``, ``tiny_families``). Imports point one way: the world uses the engine, the engine never imports
the world. Importing this package registers the test model ``tiny-random`` with the engine's loader.
"""

from __future__ import annotations

from ..families.wan import WanFamily
from ..loading import TINY_RANDOM, BuiltinModel, register_builtin
from .tiny import TINY_DEFAULTS, build_tiny_wan

register_builtin(
    BuiltinModel(
        TINY_RANDOM,
        "tiny-random (random-weight Wan2.1 from config)",
        WanFamily(),
        TINY_DEFAULTS,
        lambda dtype: build_tiny_wan(dtype=dtype),
    )
)

"""The embedded model's world: research around the engine, not the engine.

It holds the procedural clip generator (``scenes``), the recipe that trains the shipped ``tiny`` model on
it (``training``), the edit cases with their ground truth (``cases``), the judges (``judges``), the
quality benchmark's runner (``benchmark``), the demo, and random-weight test pipelines built from config
(``tiny``, ``tiny_families``). Imports point one way: the world uses the engine, the engine never imports
the world. The test model ``tiny-random`` reaches the engine's loader as an entry point (``pyproject.toml``).
"""

"""Does the model follow prompts? Plain text-to-video on held-out prompts, judged per attribute.

A prompt is the caption of a random one-object scene whose (shape, colour) pair was never seen in
training; the clip is generated from noise alone (the engine with a matte covering the whole frame has no
background to lock, so it runs the model's own text-to-video sampling with classic guidance) and judged
for colour, shape, size and motion without any reference picture.
"""

from __future__ import annotations

import numpy as np
import torch

from ..editing.editor import Editor, EditRequest
from ..settings import EditSettings
from .judges import judge_generation
from .scenes import SceneSpec, sample_scene

ATTRIBUTES = ("colour", "shape", "size", "motion")


def heldout_prompts(count: int, seed: int = 4242) -> list[SceneSpec]:
    generator = torch.Generator().manual_seed(seed)
    return [sample_scene(generator, split="heldout", max_objects=1) for _ in range(count)]


def generate(editor: Editor, prompt: str, seed: int, steps: int | None = None) -> np.ndarray:
    """(T, H, W, 3) float in [0, 1]: one clip from noise at the model's native size."""
    d = editor.model.defaults
    blank = np.zeros((d.frames, d.height, d.width, 3), np.uint8)
    everything = np.ones(blank.shape[:3], np.float32)
    # from pure noise whatever the model's schedule says: this is generation, there is no source to keep
    settings = EditSettings(seed=seed, steps=steps, method="static_cfg", feather=0, strength=1.0)
    result = editor.edit(EditRequest(blank, everything, prompt, settings))
    return result.frames.astype(np.float32) / 255.0


def judge_prompt(editor: Editor, index: int, steps: int | None = None, seed: int = 4242) -> dict:
    """Generate and judge held-out prompt ``index`` (its scene and noise seed follow from ``seed``)."""
    scene = heldout_prompts(index + 1, seed)[index]
    judged = judge_generation(generate(editor, scene.caption(), seed + index, steps))
    wanted = scene.objects[0]
    row: dict = {"prompt": scene.caption(), **{f"judged_{a}": judged[a] for a in ATTRIBUTES}}
    row.update({a: judged[a] == getattr(wanted, a) for a in ATTRIBUTES})
    row["all"] = all(row[a] for a in ATTRIBUTES)
    return row


def prompt_following(editor: Editor, count: int = 48, steps: int | None = None, seed: int = 4242) -> dict:
    """Accuracy per attribute (and all four at once) over ``count`` held-out prompts, with the rows."""
    rows = [judge_prompt(editor, i, steps, seed) for i in range(count)]
    summary = {a: float(np.mean([r[a] for r in rows])) for a in ATTRIBUTES}
    summary["all"] = float(np.mean([r["all"] for r in rows]))
    return {"count": count, "summary": summary, "rows": rows}

"""Edit cases with ground truth: a generated clip, a matte, a prompt, and the clip the edit should produce.

Each case changes one object of a scene in one way (``KINDS``): its colour, its shape, its size down (the
leftover of the matte must become background) or up, its motion, or one object of two. Targets of colour
and shape edits are (shape, colour) pairs held out of training. The matte is what an editor would paint:
per frame, the region of the old object and of the new one, grown by a few pixels. Because the generator
renders the target scene too, every case knows the right answer: the target frames, the true background
without the edited object, and which matte pixels the target shows as background (the leftover).

Two splits come from disjoint seeds: ``calibration`` (for choosing settings) and ``test`` (never tuned on).

Erase cases (:func:`make_erase_case`) take one object out of a scene: the matte is that object's region grown
by the same few pixels, less wherever the other object (always drawn in front) covers it, as an editor would
paint it; the right answer is the scene rendered without it — the true background, and the other object
where there is one. Their seeds are the split's, offset so they never repeat an edit case.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from .scenes import COLOURS, HELD_OUT, MOTIONS, SHAPES, ObjectSpec, SceneSpec, render_scene, sample_scene

KINDS = ("recolour", "reshape", "shrink", "grow", "motion", "pair")
SPLIT_SEEDS = {"calibration": 100_000, "test": 500_000}
ERASE_OFFSET = 50_000  # erase cases' seeds: the split's, past every edit case
GROW = 4  # pixels the matte extends past both objects


@dataclass(frozen=True)
class EditCase:
    name: str
    kind: str
    source: SceneSpec
    target: SceneSpec
    edited: int  # which object of the scene changes
    frames: np.ndarray  # (T, H, W, 3) uint8, the source clip
    matte: np.ndarray  # (T, H, W) float in {0, 1}
    target_frames: np.ndarray  # (T, H, W, 3) float in [0, 1], what a perfect edit shows
    reference: np.ndarray  # (T, H, W, 3) float in [0, 1], the target scene without the edited object
    leftover: np.ndarray  # (T, H, W) bool, matte pixels the target shows as background
    seed: int

    @property
    def prompt(self) -> str:
        return self.target.caption()

    @property
    def source_prompt(self) -> str:
        return self.source.caption()

    @property
    def wanted(self) -> ObjectSpec:
        return self.target.objects[self.edited]


def _pick(options: list, generator: torch.Generator):
    return options[int(torch.randint(len(options), (1,), generator=generator))]


def _train_pairs(shape: str | None = None, colour: str | None = None) -> list[tuple[str, str]]:
    return [
        (s, c)
        for s in SHAPES
        for c in COLOURS
        if (s, c) not in HELD_OUT and (shape is None or s == shape) and (colour is None or c == colour)
    ]


def _objects(kind: str, base: ObjectSpec, held: tuple[str, str], g: torch.Generator) -> tuple[ObjectSpec, ObjectSpec]:
    """(source object, target object) for one kind of edit, starting from a sampled object's place and motion."""
    shape, colour = held
    if kind == "recolour":
        source_pair = _pick([p for p in _train_pairs(shape=shape) if p[1] != colour], g)
        sizes = (base.size, base.size)
    elif kind == "reshape":
        source_pair = _pick([p for p in _train_pairs(colour=colour) if p[0] != shape], g)
        sizes = (base.size, base.size)
    elif kind in ("shrink", "grow", "pair"):
        source_pair = _pick([p for p in _train_pairs() if p[0] != shape and p[1] != colour], g)
        sizes = {"shrink": ("large", "small"), "grow": ("small", "large")}.get(kind, (base.size, base.size))
    else:  # motion: the same object, moving another way
        source_pair = (base.shape, base.colour)
        shape, colour = base.shape, base.colour
        sizes = (base.size, base.size)
    source = replace(base, shape=source_pair[0], colour=source_pair[1], size=sizes[0])
    motion = _pick([m for m in MOTIONS if m != base.motion], g) if kind == "motion" else base.motion
    return source, replace(base, shape=shape, colour=colour, size=sizes[1], motion=motion)


def _grow(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    return F.max_pool2d(mask.float()[:, None], 2 * pixels + 1, 1, pixels)[:, 0] > 0


def make_case(split: str, index: int) -> EditCase:
    """Case ``index`` of a split: its kind cycles through ``KINDS``, everything else follows from its seed."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {sorted(SPLIT_SEEDS)}, got {split!r}")
    kind = KINDS[index % len(KINDS)]
    seed = SPLIT_SEEDS[split] + index
    g = torch.Generator().manual_seed(seed)
    scene = sample_scene(g, max_objects=1)
    if kind == "pair":
        while len(scene.objects) < 2:
            scene = sample_scene(g, max_objects=2)
    held = sorted(HELD_OUT)[int(torch.randint(len(HELD_OUT), (1,), generator=g))]
    source_obj, target_obj = _objects(kind, scene.objects[0], held, g)
    others = scene.objects[1:]
    source = SceneSpec(scene.background, scene.tone, (source_obj, *others), scene.seed)
    target = SceneSpec(scene.background, scene.tone, (target_obj, *others), scene.seed)
    return case_from_scenes(f"{split}-{index:03d}-{kind}", kind, source, target, seed)


def case_from_scenes(
    name: str, kind: str, source: SceneSpec, target: SceneSpec, seed: int, frames: int = 17
) -> EditCase:
    """A case whose first object changes from ``source`` to ``target`` (every other object stays).

    ``frames`` longer than the model's window make a long-clip case (``bench/long_clips.py``).
    """
    edited = 0
    others = source.objects[1:]
    video, source_alpha, _ = render_scene(source, frames)
    target_video, target_alpha, _ = render_scene(target, frames)
    without = SceneSpec(source.background, source.tone, others, source.seed)
    reference = render_scene(without, frames)[0] if others else render_scene(target, frames)[2]
    matte = _grow((source_alpha[edited] > 0) | (target_alpha[edited] > 0), GROW)
    leftover = matte & (target_alpha.amax(dim=0) == 0)
    to_hwc = lambda v: v.permute(0, 2, 3, 1).numpy()  # noqa: E731
    return EditCase(
        name=name,
        kind=kind,
        source=source,
        target=target,
        edited=edited,
        frames=(to_hwc(video) * 255).round().astype(np.uint8),
        matte=matte.numpy().astype(np.float32),
        target_frames=to_hwc(target_video),
        reference=to_hwc(reference),
        leftover=leftover.numpy(),
        seed=seed,
    )


def edit_cases(count: int, split: str = "test", first: int = 0) -> list[EditCase]:
    """Cases ``first`` … ``first + count − 1`` of a split (every kind equally often for multiples of six)."""
    return [make_case(split, i) for i in range(first, first + count)]


@dataclass(frozen=True)
class EraseCase:
    name: str
    source: SceneSpec
    frames: np.ndarray  # (T, H, W, 3) uint8, the source clip
    matte: np.ndarray  # (T, H, W) float in {0, 1}: the erased object's region, grown by GROW
    truth: np.ndarray  # (T, H, W, 3) float in [0, 1]: the scene without the object
    seed: int

    @property
    def background_prompt(self) -> str:
        """What an editor would type to describe what should be left: the scene without the object."""
        without = SceneSpec(self.source.background, self.source.tone, self.source.objects[1:], self.source.seed)
        return without.caption().strip()


def make_erase_case(split: str, index: int, frames: int = 17) -> EraseCase:
    """Erase case ``index`` of a split: a sampled scene of one or two objects, the first taken out."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"split must be one of {sorted(SPLIT_SEEDS)}, got {split!r}")
    seed = SPLIT_SEEDS[split] + ERASE_OFFSET + index
    scene = sample_scene(torch.Generator().manual_seed(seed), max_objects=2)
    without = SceneSpec(scene.background, scene.tone, scene.objects[1:], scene.seed)
    video, alpha, _ = render_scene(scene, frames)
    truth = render_scene(without, frames)[0]
    matte = _grow(alpha[0] > 0, GROW)
    if len(alpha) > 1:  # the other object is drawn over the erased one: an editor's matte leaves it out
        matte &= alpha[1] == 0
    to_hwc = lambda v: v.permute(0, 2, 3, 1).numpy()  # noqa: E731
    return EraseCase(
        name=f"{split}-erase-{index:03d}-{scene.objects[0].motion}",
        source=scene,
        frames=(to_hwc(video) * 255).round().astype(np.uint8),
        matte=matte.numpy().astype(np.float32),
        truth=to_hwc(truth),
        seed=seed,
    )

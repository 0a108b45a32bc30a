"""Rendering a strip's frames to pixels on the main thread, exactly as the sequencer shows them.

The strip is rendered alone (every other strip muted) through the scene's sequencer with the Standard
view transform, no look, no dither and 8-bit PNG output, so pixels are the strip's own display values;
the scene's settings and the strips' mute flags are restored afterwards, whatever happens.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bpy
import numpy as np

from .compat import all_strips, set_visible_end, top_strips


@contextmanager
def standard_colour(scene: Any) -> Iterator[None]:
    """Render settings that keep pixel values as they are; restored on exit."""
    view, display, render, image = (
        scene.view_settings,
        scene.display_settings,
        scene.render,
        scene.render.image_settings,
    )
    saved = [
        (view, "view_transform", "Standard"),
        (view, "look", "None"),
        (view, "exposure", 0.0),
        (view, "gamma", 1.0),
        (view, "use_curve_mapping", False),
        (display, "display_device", "sRGB"),
        (render, "dither_intensity", 0.0),
        (render, "resolution_percentage", 100),
        (render, "use_sequencer", True),
        (render, "use_compositing", False),
        (image, "file_format", "PNG"),
        (image, "color_mode", "RGB"),
        (image, "color_depth", "8"),
        (render, "filepath", render.filepath),
    ]
    previous = [(owner, name, getattr(owner, name)) for owner, name, _ in saved]
    try:
        for owner, name, value in saved:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in previous:
            setattr(owner, name, value)


@contextmanager
def solo(scene: Any, strip: Any) -> Iterator[None]:
    """Mute every strip but ``strip`` (and unmute it); restore every mute flag on exit."""
    strips = list(all_strips(scene.sequence_editor))
    previous = {s.name: s.mute for s in strips}
    try:
        for s in strips:
            s.mute = s.name != strip.name
        yield
    finally:
        for s in strips:
            s.mute = previous[s.name]


@contextmanager
def temporary_mask_strip(scene: Any, mask: Any, start: int, end: int) -> Iterator[Any]:
    """A mask strip for a mask data-block over [start, end) on a free channel, removed on exit."""
    strips = top_strips(scene.sequence_editor)
    used = {s.channel for s in strips}
    channel = next(c for c in range(1, 129) if c not in used)
    strip = strips.new_mask(name="kvlock-matte", mask=mask, channel=channel, frame_start=start)
    try:
        set_visible_end(strip, end)
        yield strip
    finally:
        strips.remove(strip)


def _read_png(path: Path) -> np.ndarray:
    """An 8-bit PNG as (H, W, 3) uint8 with row 0 at the top (Blender's pixels start at the bottom)."""
    image = bpy.data.images.load(str(path), check_existing=False)
    try:
        width, height = image.size
        buffer = np.empty(width * height * 4, dtype=np.float32)
        image.pixels.foreach_get(buffer)
    finally:
        bpy.data.images.remove(image)
    rgba = buffer.reshape(height, width, 4)[::-1]
    return np.rint(rgba[..., :3] * 255.0).astype(np.uint8)


def render_frames(scene: Any, strip: Any, start: int, end: int) -> np.ndarray:
    """(end − start, H, W, 3) uint8: the strip alone at scene frames [start, end), at the render size."""
    frames = []
    current = scene.frame_current
    with tempfile.TemporaryDirectory(prefix="kvlock-gather-") as folder, standard_colour(scene), solo(scene, strip):
        try:
            for frame in range(start, end):
                scene.frame_set(frame)
                path = Path(folder) / f"frame_{frame:06d}.png"
                scene.render.filepath = str(path)
                bpy.ops.render.render(write_still=True)
                frames.append(_read_png(path))
        finally:
            scene.frame_set(current)
    return np.stack(frames)

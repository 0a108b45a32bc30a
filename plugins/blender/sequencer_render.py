"""Rendering one frame through the sequencer, for strips that have no media of their own (main thread only).

Each call renders a single frame, so the job's timer can spread a range over many ticks and the interface
keeps drawing (and shows progress) in between. For the call's duration the scene renders neutrally —
Standard view transform, no look, exposure 0, gamma 1, no curves, no white balance, the output following the
scene's colour management rather than overriding it, no stamp, no border, 100 % size, 8-bit RGBA PNG — and
only the wanted strip is seen, as its own image: every other top-level strip is muted, the strip's own
channel unmuted and its blend Alpha Over at full opacity (effect inputs still feed their effect, as Blender
renders them regardless of mutes; mutes inside a meta strip are the meta's and are kept). Everything is put back
before the call returns, whatever happens.

A mask data-block is rasterised by Blender itself, at the plate's size in the plate's pixels: a temporary
scene of that size holds a mask strip whose frame 0 is the plate's first media frame, so the mask is
evaluated at ``mask.frame_start`` + the media frame, as a mask strip placed at the plate's media start would.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import bpy

from .compat import channel, set_visible_end, top_strips, visible_range


def _neutral_settings(scene: Any) -> list[tuple[Any, str, Any]]:
    view, display, render = scene.view_settings, scene.display_settings, scene.render
    image = render.image_settings
    wanted = [
        (view, "view_transform", "Standard"),
        (view, "look", "None"),
        (view, "exposure", 0.0),
        (view, "gamma", 1.0),
        (view, "use_curve_mapping", False),
        (view, "use_white_balance", False),
        (display, "display_device", "sRGB"),
        (render, "dither_intensity", 0.0),
        (render, "resolution_percentage", 100),
        (render, "use_border", False),
        (render, "use_stamp", False),
        (render, "use_multiview", False),
        (render, "use_sequencer", True),
        (render, "use_compositing", False),
        (image, "media_type", "IMAGE"),  # 5.x: before file_format, which depends on it
        (image, "file_format", "PNG"),
        (image, "color_mode", "RGBA"),
        (image, "color_depth", "8"),
        (image, "color_management", "FOLLOW_SCENE"),
        (render, "filepath", render.filepath),
    ]
    return [(owner, name, value) for owner, name, value in wanted if hasattr(owner, name)]


VIEW = ("view_transform", "look", "exposure", "gamma", "use_curve_mapping", "use_white_balance")
WHITE = ("white_balance_temperature", "white_balance_tint")


def _override_settings(scene: Any) -> list[tuple[Any, str]]:
    """The output's own colour settings: switching its colour management back to Override copies the
    scene's into them, so they are put back last."""
    image = scene.render.image_settings
    view = image.view_settings
    names = [(view, n) for n in (*VIEW, *WHITE) if hasattr(view, n)]
    return [*names, (image.display_settings, "display_device")]


@contextmanager
def neutral_render(scene: Any) -> Iterator[None]:
    """Render settings that keep pixel values as they are; restored on exit in the same order (the output's
    media type before its format, its format before its colour mode), then the output's own colour settings."""
    wanted = _neutral_settings(scene)
    previous = [(owner, name, getattr(owner, name)) for owner, name, _ in wanted]
    previous += [(owner, name, getattr(owner, name)) for owner, name in _override_settings(scene)]
    try:
        for owner, name, value in wanted:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in previous:
            setattr(owner, name, value)


@contextmanager
def solo(scene: Any, strip: Any) -> Iterator[None]:
    """Only ``strip`` is seen, as its own image: other top-level strips muted, it and its channel unmuted, its
    blend Alpha Over at full opacity (its blend with what is below is the composition's, not the strip's;
    the result strip takes it over). Restored on exit."""
    editor = scene.sequence_editor
    strips = list(top_strips(editor))
    previous = [(s, s.mute) for s in strips]
    lane = channel(editor, strip.channel)
    lane_muted, blend = lane.mute, (strip.blend_type, strip.blend_alpha)
    try:
        for s in strips:
            s.mute = s.name != strip.name
        lane.mute = False
        strip.blend_type, strip.blend_alpha = "ALPHA_OVER", 1.0
        yield
    finally:
        strip.blend_type, strip.blend_alpha = blend
        lane.mute = lane_muted
        for s, muted in previous:
            s.mute = muted


def _render_still(scene: Any, frame: int, path: str) -> None:
    """Render ``scene`` at ``frame`` into ``path``. The render operator reads the frame from the context's
    scene even when told which scene to render, so the context is that scene for the call."""
    current = scene.frame_current
    try:
        scene.frame_set(frame)
        scene.render.filepath = path
        with bpy.context.temp_override(scene=scene):
            bpy.ops.render.render(write_still=True, scene=scene.name)
    finally:
        scene.frame_set(current)


def render_strip_frame(scene: Any, strip_name: str, frame: int, path: str) -> None:
    """The top-level strip ``strip_name`` alone at timeline ``frame``, as the canvas shows it, into ``path``."""
    strip = top_strips(scene.sequence_editor).get(strip_name)
    if strip is None:
        raise LookupError(f"the strip {strip_name} was removed while KV-Lock was rendering it")
    start, end = visible_range(strip)
    if not start <= frame < end:
        raise LookupError(f"{strip_name} no longer covers frame {frame}")
    with neutral_render(scene), solo(scene, strip):
        _render_still(scene, frame, path)


def render_mask_frame(mask_name: str, size: tuple[int, int], media_frame: int, path: str) -> None:
    """The mask data-block rasterised at ``size`` (the plate's pixels) for the plate's ``media_frame``."""
    mask = bpy.data.masks.get(mask_name)
    if mask is None:
        raise LookupError(f"the mask {mask_name} was removed while KV-Lock was rendering it")
    temp = bpy.data.scenes.new("KV-Lock mask (temporary)")
    strips = top_strips(temp.sequence_editor_create())
    strip = strips.new_mask(name="mask", mask=mask, channel=1, frame_start=0)
    try:
        temp.render.resolution_x, temp.render.resolution_y = size
        set_visible_end(strip, max(visible_range(strip)[1], media_frame + 1))  # past its end the last frame holds
        with neutral_render(temp):
            _render_still(temp, media_frame, path)
    finally:
        strips.remove(strip)  # before the scene, so the mask's user count stays right
        bpy.data.scenes.remove(temp)

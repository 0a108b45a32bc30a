"""Blender 4.5 LTS and 5.x differences, chosen by what the running Blender has, never by its version.

- the strips collection: ``strips``/``strips_all`` (4.4+) or ``sequences``/``sequences_all`` (older);
- a strip's visible range: ``left_handle``/``right_handle`` (5.2+) or ``frame_final_start``/``frame_final_end``;
- its content: ``content_start``/``content_duration``/``content_trim_*`` (5.2+) or ``frame_start``/
  ``frame_duration``/``animation_offset_*`` (4.5, 5.0; deprecated in 5.2);
- the scene the sequencer edits: the workspace's ``sequencer_scene`` (5.0+) when set, else the window's.
"""

from __future__ import annotations

from typing import Any


def _first(owner: Any, *names: str) -> Any:
    for name in names:
        if hasattr(owner, name):
            return getattr(owner, name)
    raise AttributeError(f"{type(owner).__name__} has none of {names}")


def sequencer_scene(context: Any) -> Any:
    """The scene whose sequencer the user is editing."""
    return getattr(context, "sequencer_scene", None) or context.scene


def top_strips(editor: Any) -> Any:
    """The editor's top-level strips collection (where new strips are added)."""
    return editor.strips if hasattr(editor, "strips") else editor.sequences


def all_strips(editor: Any) -> Any:
    """Every strip, including those inside meta strips."""
    return editor.strips_all if hasattr(editor, "strips_all") else editor.sequences_all


def visible_range(strip: Any) -> tuple[int, int]:
    """Timeline frames [start, end) the strip shows after trimming by its handles."""
    if hasattr(strip, "left_handle"):
        return int(strip.left_handle), int(strip.right_handle)
    return int(strip.frame_final_start), int(strip.frame_final_end)


def set_visible_end(strip: Any, end: int) -> None:
    """Move the strip's right handle to timeline frame ``end`` (exclusive)."""
    if hasattr(strip, "right_handle"):
        strip.right_handle = end
    else:
        strip.frame_final_end = end


def content_start(strip: Any) -> float:
    """Timeline frame where the strip's content (after the hold offset) starts."""
    return float(_first(strip, "content_start", "frame_start"))


def content_duration(strip: Any) -> int:
    """Timeline frames the content spans, before the handles trim it."""
    return int(_first(strip, "content_duration", "frame_duration"))


def trims(strip: Any) -> tuple[int, int]:
    """Media frames cut off the start and end of the media (the hold offsets)."""
    return int(_first(strip, "content_trim_start", "animation_offset_start")), int(
        _first(strip, "content_trim_end", "animation_offset_end")
    )


def channel(editor: Any, number: int) -> Any:
    """The sequencer channel ``number`` (its name, mute and lock)."""
    return editor.channels[number]

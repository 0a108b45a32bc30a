"""Blender 4.5 LTS and 5.x differences, chosen by what the running Blender has, never by its version.

- the strips collection: ``strips``/``strips_all`` (4.4+) or ``sequences``/``sequences_all`` (older);
- a strip's visible range: ``left_handle``/``right_handle`` (5.2+) or ``frame_final_start``/``frame_final_end``.
"""

from __future__ import annotations

from typing import Any


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


def source_path(strip: Any) -> str:
    """The media file a movie strip reads, or the folder + first file of an image strip."""
    if strip.type == "MOVIE":
        return strip.filepath
    if strip.type == "IMAGE" and len(strip.elements):
        return strip.directory + strip.elements[0].filename
    return ""


def set_visible_end(strip: Any, end: int) -> None:
    """Move the strip's right handle to timeline frame ``end`` (exclusive)."""
    if hasattr(strip, "right_handle"):
        strip.right_handle = end
    else:
        strip.frame_final_end = end

"""Where a result goes: a new file beside the .blend (never over one) and a free channel above the source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .compat import all_strips, visible_range

SUFFIX = {"ffv1": ".mkv", "prores": ".mov"}


class PlacementError(Exception):
    """The result has nowhere to go; the message says what to change."""


def output_folder(blend_path: str, chosen: str) -> Path:
    """The chosen folder, else the .blend's folder; an unsaved .blend needs a chosen folder."""
    if chosen:
        folder = Path(chosen).expanduser()
        if not folder.is_dir():
            raise PlacementError(f"output folder {folder} does not exist")
        return folder
    if not blend_path:
        raise PlacementError("save the .blend first, or choose an output folder in the KV-Lock panel")
    return Path(blend_path).parent


def free_channel_above(editor: Any, channel: int, start: int, end: int) -> int:
    """The lowest channel above ``channel`` with no strip overlapping [start, end)."""
    busy: set[int] = set()
    for strip in all_strips(editor):
        s, e = visible_range(strip)
        if s < end and start < e:
            busy.add(strip.channel)
    for candidate in range(channel + 1, 129):
        if candidate not in busy:
            return candidate
    raise PlacementError(f"no free channel above {channel} for frames {start}–{end - 1}")

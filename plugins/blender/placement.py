"""Where a result goes: a new file beside the .blend (never over one), and the channel directly above the
source, so it replaces what the composition showed and stays below whatever was above the source.

When that channel holds another strip over the edited frames, nothing is covered silently: the editor
chooses to shift every strip above the source up one channel (channel names, mutes and locks move with
them, so the composition looks the same) or names a free channel above the source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .compat import channel, top_strips, visible_range

SUFFIX = {"ffv1": ".mkv", "prores": ".mov", "exr": ""}  # exr: a folder of NAME.NNNN.exr
MAX_CHANNEL = 128
# what makes a media strip look as it does on the canvas; copied from the source onto the result
BLEND = ("blend_type", "blend_alpha")
LOOK = (
    *BLEND,
    "use_flip_x",
    "use_flip_y",
    "color_saturation",
    "color_multiply",
    "multiply_alpha",
    "alpha_mode",
    "use_float",
    "use_deinterlace",
)
TRANSFORM = ("offset_x", "offset_y", "scale_x", "scale_y", "rotation", "origin", "filter")
CROP = ("min_x", "max_x", "min_y", "max_y")


class PlacementError(Exception):
    """The result has nowhere to go as asked; the message says what to change."""


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


def occupants(editor: Any, number: int, start: int, end: int) -> list[str]:
    """Top-level strips on channel ``number`` that show any frame of [start, end)."""
    names = []
    for strip in top_strips(editor):
        s, e = visible_range(strip)
        if strip.channel == number and s < end and start < e:
            names.append(strip.name)
    return names


def _frames(start: int, end: int) -> str:
    return f"frames {start}–{end - 1}"


def choose_channel(editor: Any, source: int, start: int, end: int, mode: str, picked: int) -> tuple[int, bool]:
    """(channel for the result, whether the strips above the source must shift up first), or PlacementError.

    ``mode``: ABOVE (directly above; refused when taken), SHIFT (directly above, shifting what is there up),
    CHANNEL (``picked``, which must be above the source and free).
    """
    above = source + 1
    if mode == "CHANNEL":
        if not source < picked <= MAX_CHANNEL:
            raise PlacementError(
                f"pick a channel above the source's channel {source} (up to {MAX_CHANNEL}): on or below it the "
                "result would be hidden by the source"
            )
        taken = occupants(editor, picked, start, end)
        if taken:
            raise PlacementError(f"channel {picked} holds {', '.join(taken)} over {_frames(start, end)}; pick another")
        return picked, False
    if above > MAX_CHANNEL:
        raise PlacementError(f"the source is on the last channel ({MAX_CHANNEL}); move it down first")
    taken = occupants(editor, above, start, end)
    if not taken:
        return above, False
    if mode == "SHIFT":
        check_shift(editor, source)
        return above, True
    raise PlacementError(
        f"channel {above}, directly above the source, holds {', '.join(taken)} over {_frames(start, end)}; "
        "choose where the result goes (Placement in the KV-Lock panel): shift the strips above up one channel, "
        "or pick a free channel"
    )


def free_channel(editor: Any, lowest: int, start: int, end: int) -> int | None:
    """The lowest channel from ``lowest`` up with no strip over [start, end) and not locked; None if none is."""
    for number in range(lowest, MAX_CHANNEL + 1):
        if not occupants(editor, number, start, end) and not channel(editor, number).lock:
            return number
    return None


def check_shift(editor: Any, source: int) -> None:
    """Refuse a shift that would push a strip past the last channel or move a locked strip or channel."""
    for strip in top_strips(editor):
        if strip.channel <= source:
            continue
        if strip.channel == MAX_CHANNEL:
            raise PlacementError(f"{strip.name} is on the last channel ({MAX_CHANNEL}): the strips above cannot shift")
        if strip.lock or channel(editor, strip.channel).lock:
            raise PlacementError(f"{strip.name} (channel {strip.channel}) is locked: unlock it, or pick a free channel")


def shift_up(editor: Any, source: int) -> None:
    """Move every top-level strip above channel ``source`` up one channel, top first (so each lands on a
    channel already vacated), and the channels' names, mutes and locks with them."""
    check_shift(editor, source)
    for strip in sorted((s for s in top_strips(editor) if s.channel > source), key=lambda s: -s.channel):
        strip.channel += 1
    lanes = [channel(editor, n) for n in range(source + 1, MAX_CHANNEL + 1)]
    settings = [(lane.name, lane.mute, lane.lock) for lane in lanes]
    for n, lane in enumerate(lanes):  # names are unique: clear them all before any moves up
        lane.name = f"kvlock-shift-{n}"
    for n, lane in enumerate(lanes):
        number = source + 1 + n
        if n == 0:
            lane.name, lane.mute, lane.lock = f"Channel {number}", False, False
            continue
        name, mute, lock = settings[n - 1]
        lane.name = f"Channel {number}" if name == f"Channel {number - 1}" else name
        lane.mute, lane.lock = mute, lock


def copy_look(source: Any, result: Any, media: bool) -> None:
    """Give the result the source's blend, and for a media source (the result is at the media's size) its
    transform, crop and colour settings too, so the edit lands exactly where the source showed. A result the
    sequencer rendered has the transform baked in: it takes the blend only. (Its colour space is the colour
    module's to set.)"""
    for name in LOOK if media else BLEND:
        if hasattr(source, name) and hasattr(result, name):
            setattr(result, name, getattr(source, name))
    if not media:
        return
    for name in TRANSFORM:
        setattr(result.transform, name, getattr(source.transform, name))
    for name in CROP:
        setattr(result.crop, name, getattr(source.crop, name))

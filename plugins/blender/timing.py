"""Which media frame a movie or image strip shows at each timeline frame, as Blender's sequencer computes it.

Blender (``give_frame_index`` and the movie/image readers, 4.5–5.2) shows at timeline frame ``t``

    index = round(clamp((t − content_start) · rate_factor, 0, length − 1)) + trim_start

where ``content_start`` is ``frame_start`` (5.2: ``content_start``), ``trim_start`` the hold offset
``animation_offset_start`` (5.2: ``content_trim_start``), ``length`` the media's frames less both hold
offsets, and ``rate_factor`` the media's rate over the scene's when Blender plays the movie at its own speed
(else 1). A one-image strip always shows its image. Frames before the content or after it repeat the first
or last frame (held frames). Reversed playback, strobe (frame stepping), retiming keys and a rate factor
other than 1 change this map; the add-on refuses them rather than approximate them.

Nothing here imports bpy: the operator reads the numbers, these functions do the arithmetic.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class StripTiming:
    """A strip's timing as Blender stores it (timeline frames; ``trim_*`` in media frames)."""

    content_start: float
    content_duration: int  # timeline frames the content spans (``frame_duration``)
    trim_start: int = 0
    trim_end: int = 0
    reverse: bool = False
    strobe: float = 1.0
    retiming_keys: int = 0
    single_image: bool = False


def retime_problem(name: str, timing: StripTiming) -> str | None:
    """Why the strip's frames cannot be mapped one to one onto its media, or None when they can."""
    if timing.reverse:
        return f"{name} plays its media reversed: turn off Reverse Frames, edit, then reverse the result"
    if timing.strobe > 1.0:
        return f"{name} steps its frames (Strobe {timing.strobe:g}): set Strobe to 1, edit, then step the result"
    if timing.retiming_keys:
        return (
            f"{name} is retimed ({timing.retiming_keys} retiming keys): reset its retiming "
            "(Strip › Retiming › Reset Retiming) or render it to a new file first"
        )
    if timing.content_start != int(timing.content_start):
        return f"{name} starts at the fractional frame {timing.content_start:g}: move it to a whole frame"
    return None


def rate_problem(
    name: str, timing: StripTiming, media_frames: int, media_rate: Fraction, scene_rate: Fraction
) -> str | None:
    """Why Blender does not play the movie one media frame per timeline frame, or None when it does.

    Blender retimes a movie whose rate differs from the scene's when it was added with "Adjust Playback
    Rate" (the default in the UI); the Python API cannot read that flag, but the content length shows it:
    one to one, the content spans exactly the media's frames less the hold offsets.
    """
    if media_rate == scene_rate or timing.single_image:
        return None
    if timing.content_duration == media_frames - timing.trim_start - timing.trim_end:
        return None
    return (
        f"{name} runs at {_rate(media_rate)} fps and the scene at {_rate(scene_rate)}: Blender plays it retimed, so "
        "its frames do not map one to one onto the timeline; set the scene's frame rate to the movie's "
        "(Output Properties › Frame Rate), or conform the movie first"
    )


def media_indices(timing: StripTiming, length: int, start: int, end: int) -> list[int]:
    """The media frame shown at each timeline frame of [start, end); ``length`` = media frames less trims."""
    if length < 1:
        raise ValueError(f"the strip shows no media frames (length {length})")
    if timing.single_image:
        return [timing.trim_start] * (end - start)
    first = int(timing.content_start)
    return [min(max(t - first, 0), length - 1) + timing.trim_start for t in range(start, end)]


def contiguous(indices: list[int]) -> tuple[int, int] | None:
    """[a, b) when the indices are exactly a, a+1, …, b−1 (readable as one range), else None."""
    if not indices or any(b != a + 1 for a, b in itertools.pairwise(indices)):
        return None
    return indices[0], indices[-1] + 1


def _rate(rate: Fraction) -> str:
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"

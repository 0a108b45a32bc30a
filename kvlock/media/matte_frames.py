"""Which frames of a matte file go with a source range — one rule for the server and for clients that decode
mattes themselves to upload them (so it needs neither torch nor PyAV).

A matte that names its own range (its own first frame, as a matte clip slipped against its source does) is
read exactly there: as many frames as the source range, or one frame used for every frame. A matte that
names no range follows the source: a still is used for every frame; a matte that covers the source is read
over the same range; a matte exactly as long as the range (already trimmed) is used as is. Anything else is
an error that gives both lengths.
"""

from __future__ import annotations

from ..errors import MatteError


def matte_frames(
    matte_frames: int, still: bool, source_frames: int, start: int, end: int, own: tuple[int, int] | None = None
) -> tuple[int, int, list[str]]:
    """The matte's [first, last) for source frames [start, end), and warnings; ``own`` is its own range."""
    length = end - start
    if own is not None:
        first, last = own
        if not 0 <= first < last <= matte_frames:
            raise MatteError(f"matte range [{first}, {last}) is outside the matte's [0, {matte_frames})")
        if last - first == 1:
            return first, last, [f"matte range is one frame: used for all {length} frames"] if length > 1 else []
        if last - first != length:
            raise MatteError(
                f"matte range [{first}, {last}) has {last - first} frames but the source range [{start}, {end}) "
                f"has {length}: give the matte as many frames as the source (or one)"
            )
        return first, last, []
    if still or matte_frames == 1:
        return 0, 1, [f"matte is a single image: used for all {length} frames"]
    if matte_frames >= end and matte_frames >= source_frames:
        return start, end, []
    if matte_frames == length:
        return 0, length, [f"matte has {length} frames, as many as the range: read from its first frame"]
    raise MatteError(
        f"matte has {matte_frames} frames; it must cover the source ({source_frames} frames, read over "
        f"[{start}, {end})) or match the range ({length} frames), or be a single still"
    )

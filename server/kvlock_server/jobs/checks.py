"""The engine's pixel checks on a submission, run over its media in pieces so memory stays bounded.

Checking a whole clip at once costs several float copies of it (a 64×1024×1024 matte raised the
server's memory by about 11× its bytes). Here the source and the matte are read ``batch_bytes`` of float
values at a time (at least one frame), so one check holds about five times that — one batch of raw
pixels, its float values and a few temporaries — whatever the clip's length. The answers are the
engine's: a matte that is empty after its channel, inversion and threshold is refused the way
``normalise_matte`` refuses it; a file that cannot be decoded over the range is refused before the job
exists. Dilation is left out: it can neither empty a matte nor fill an empty one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from kvlock.errors import MatteError
from kvlock.media.decode import MediaInfo, probe, read_frames
from kvlock.media.matte import MatteOptions, matte_plan, read_matte, refine

from .media import check_codec, inline_matte_values, pin, read_inline, source_info
from .media_roots import MediaRoots
from .model import JobSpec

EMPTY = "matte is empty (all zero): there is nothing to edit; check the matte's channel or invert"


def batches(start: int, end: int, frame_values: int, batch_bytes: int) -> Iterator[tuple[int, int]]:
    """Consecutive [a, b) covering [start, end), each about ``batch_bytes`` of float32 (at least a frame)."""
    step = max(1, batch_bytes // max(1, 4 * frame_values))
    for a in range(start, end, step):
        yield a, min(end, a + step)


def check_upload(spec: JobSpec, folder: Path, roots: MediaRoots, batch_bytes: int) -> None:
    """Raise the engine's error for a submission it would refuse; return quietly when the job can run."""
    rate = Fraction(*spec.rate)
    with ExitStack() as held:
        source = source_info(spec, folder, roots, held)
        check_codec(source, spec.codec)
        if spec.source.kind == "file":
            start, end = spec.source.start, spec.source.end or source.frames
            for a, b in batches(start, end, source.width * source.height * 2, batch_bytes):
                read_frames(source, a, b)  # decodes, or raises what is wrong with the file there
        else:
            start, end = 0, spec.source.frames
        options = spec.matte_options
        if spec.matte.kind == "file":
            matte = probe(pin(held, spec.matte, roots, folder), rate)
            own = (spec.matte.start, spec.matte.end) if spec.matte.end else None
            if not _file_matte_has_pixels(matte, source, (start, end), own, options, batch_bytes):
                raise MatteError(EMPTY)
        elif not _inline_matte_has_pixels(spec, folder, options, batch_bytes):
            raise MatteError(EMPTY)


def _found(values: np.ndarray, options: MatteOptions) -> bool:
    return bool(refine(values, replace(options, dilate=0)).any())


def _inline_matte_has_pixels(spec: JobSpec, folder: Path, options: MatteOptions, batch_bytes: int) -> bool:
    raw = read_inline(spec.matte, folder)  # mapped from disk: only the batch being read is in memory
    for a, b in batches(0, raw.shape[0], raw.shape[1] * raw.shape[2], batch_bytes):
        if _found(inline_matte_values(raw[a:b], options.channel), options):
            return True
    return False


def _file_matte_has_pixels(
    matte: MediaInfo,
    source: MediaInfo,
    span: tuple[int, int],
    own: tuple[int, int] | None,
    options: MatteOptions,
    batch_bytes: int,
) -> bool:
    """Whether the refined matte has a non-zero pixel anywhere in the range, read piece by piece.

    ``auto`` picks alpha only if the alpha is below 1 somewhere in the whole clip, which one piece cannot
    tell: both readings are followed to the end and the choice is made as the engine makes it.
    """
    first, last, _ = matte_plan(matte, source, *span, options, own)
    auto = ["alpha", "luma"] if matte.has_alpha else ["luma"]
    channels = auto if options.channel == "auto" else [options.channel]
    found = dict.fromkeys(channels, False)
    translucent = False
    for a, b in batches(first, last, source.width * source.height, batch_bytes):
        for channel in channels:
            values = read_matte(matte, source, a, b, MatteOptions(channel=channel))  # unrefined values
            if channel == "alpha" and len(channels) == 2:
                translucent = translucent or bool((values < 1.0).any())
            found[channel] = found[channel] or _found(values, options)
    if len(channels) == 2:
        return found["alpha"] if translucent else found["luma"]
    return found[channels[0]]

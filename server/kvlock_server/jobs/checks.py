"""The engine's pixel checks on a submission: one forward pass over each file, a frame at a time, stoppable.

Before a job exists, every frame of the source range and of the matte is decoded once, in order (never a
re-open and seek per piece: a long-GOP file is decoded once, whatever its length), so a damaged, truncated
or lying file is refused naming the file and the frame (:func:`kvlock.media.decode.iter_frames`), and a matte
that is empty after its channel, inversion and threshold is refused the way ``normalise_matte`` refuses it.
Dilation is left out: it can neither empty a matte nor fill an empty one.

Memory: one decoded frame and its conversion at a time (each within the roots' ``max_frame_bytes``), and
the matte's float values a strip of rows at a time (:data:`kvlock.media.matte.STRIP_BYTES`), so a check
holds two frames and a few strips, whatever the clip's length or what its files claim (docs/server.md
states the bound).

Cancellation: the caller's ``cancel`` event is looked at between frames; once set (the client gave up) the
check stops with :class:`CheckCancelled`, so no work goes on for nobody and no job appears.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import TypeVar

import numpy as np

from kvlock.errors import MatteError
from kvlock.media.decode import iter_frames
from kvlock.media.matte import MatteOptions, matte_plan, matte_strips, refine, translucent

from .media import check_codec, file_info, read_inline, source_info
from .media_roots import MediaRoots
from .model import JobSpec

EMPTY = "matte is empty (all zero): there is nothing to edit; check the matte's channel or invert"
T = TypeVar("T")


class CheckCancelled(Exception):
    """The submission's client went away while its media was checked; the check stopped."""


def stoppable(items: Iterable[T], cancel: threading.Event) -> Iterator[T]:
    """``items``, stopping with :class:`CheckCancelled` as soon as ``cancel`` is set between two of them."""
    for item in items:
        if cancel.is_set():
            raise CheckCancelled()
        yield item
    if cancel.is_set():
        raise CheckCancelled()


class MatteScan:
    """Whether a matte, refined as the engine refines it, has a non-zero pixel, fed one frame at a time.

    ``auto`` picks alpha only if the alpha is below full somewhere in the whole clip, which one frame cannot
    tell: both readings are followed to the end and the choice is made as the engine makes it."""

    def __init__(self, options: MatteOptions, has_alpha: bool, size: tuple[int, int]) -> None:
        auto = ["alpha", "luma"] if has_alpha else ["luma"]
        self.channels = auto if options.channel == "auto" else [options.channel]
        self.options = replace(options, dilate=0)
        self.height, self.width = size
        self.found = dict.fromkeys(self.channels, False)
        self.translucent = False

    def add(self, frame: np.ndarray) -> None:
        if len(self.channels) == 2 and not self.translucent:
            self.translucent = translucent(frame)
        for channel in self.channels:
            if not self.found[channel]:
                self.found[channel] = any(
                    refine(values, self.options).any()
                    for _, values in matte_strips(frame, channel, self.height, self.width)
                )

    def has_pixels(self) -> bool:
        if len(self.channels) == 2:
            return self.found["alpha"] if self.translucent else self.found["luma"]
        return self.found[self.channels[0]]


def check_upload(spec: JobSpec, folder: Path, roots: MediaRoots, cancel: threading.Event) -> None:
    """Raise the engine's error for a submission it would refuse; return quietly when the job can run."""
    rate = Fraction(*spec.rate)
    with ExitStack() as held:
        source = source_info(spec, folder, roots, held)
        check_codec(source, spec.codec)
        start, end = (
            (spec.source.start, spec.source.end or source.frames)
            if spec.source.kind == "file"
            else (0, spec.source.frames)
        )
        if spec.matte.kind == "file":  # sizes and lengths first, from the headers: nothing decoded in vain
            matte = file_info(held, spec.matte, roots, folder, rate)
            own = (spec.matte.start, spec.matte.end) if spec.matte.end else None
            first, last, _ = matte_plan(matte, source, start, end, spec.matte_options, own)
            scan = MatteScan(spec.matte_options, matte.has_alpha, (source.height, source.width))
            frames: Iterable[np.ndarray] = iter_frames(matte, first, last)
        else:
            scan = MatteScan(spec.matte_options, False, (spec.matte.height, spec.matte.width))
            frames = read_inline(spec.matte, folder)  # mapped from disk: only the frame being read is in memory
        if spec.source.kind == "file":  # every frame decoded once, or refused naming the frame that is not
            deque(stoppable(iter_frames(source, start, end), cancel), maxlen=0)
        deque(map(scan.add, stoppable(frames, cancel)), maxlen=0)  # no frame is left bound to a name here
        if not scan.has_pixels():
            raise MatteError(EMPTY)

"""Reading strips into plain data on the main thread, so the worker never touches bpy.

Movie and image strips become :class:`~.media.MediaStrip` (files, timing, transform); everything else
(scene, effect, text, colour, mask, meta, movie-clip strips) has no media of its own and is rendered by the
sequencer instead.
"""

from __future__ import annotations

import os
from typing import Any

import bpy

from .compat import content_duration, content_start, trims
from .geometry import StripGeometry
from .media import MediaStrip
from .timing import StripTiming

MEDIA_TYPES = {"MOVIE", "IMAGE"}


def _abspath(strip: Any, path: str) -> str:
    return os.path.normpath(bpy.path.abspath(path, library=strip.id_data.library))


def timing_of(strip: Any) -> StripTiming:
    trim_start, trim_end = trims(strip)
    return StripTiming(
        content_start=content_start(strip),
        content_duration=content_duration(strip),
        trim_start=trim_start,
        trim_end=trim_end,
        reverse=bool(getattr(strip, "use_reverse_frames", False)),
        strobe=float(getattr(strip, "strobe", 1.0)),
        retiming_keys=len(getattr(strip, "retiming_keys", ())),
        single_image=strip.type == "IMAGE" and len(strip.elements) == 1,
    )


def look_of(strip: Any) -> StripGeometry:
    """The strip's transform, crop and flips (its image size comes from the media, later)."""
    t, c = strip.transform, strip.crop
    return StripGeometry(
        width=0,
        height=0,
        offset=(float(t.offset_x), float(t.offset_y)),
        scale=(float(t.scale_x), float(t.scale_y)),
        rotation=float(t.rotation),
        origin=(float(t.origin[0]), float(t.origin[1])),
        crop=(int(c.min_x), int(c.max_x), int(c.min_y), int(c.max_y)),
        flip=(bool(strip.use_flip_x), bool(strip.use_flip_y)),
    )


def media_strip(strip: Any) -> MediaStrip | None:
    """The strip's media, or None when it has none (the sequencer must render it); ValueError (with what to do)
    for a movie shown from another video stream than its first, which neither the server nor PyAV reads here."""
    if strip.type == "MOVIE":
        if getattr(strip, "stream_index", 0):
            raise ValueError(
                f"{strip.name} shows video stream {strip.stream_index} of its movie; KV-Lock edits a movie's first "
                f"video stream: extract that stream to its own file (ffmpeg -i IN -map 0:v:{strip.stream_index} "
                "-c copy OUT) and use it"
            )
        files: tuple[str, ...] = (_abspath(strip, strip.filepath),)
        kind = "movie"
    elif strip.type == "IMAGE" and len(strip.elements):
        folder = _abspath(strip, strip.directory)
        files = tuple(os.path.join(folder, e.filename) for e in strip.elements)
        kind = "images"
    else:
        return None
    return MediaStrip(strip.name, kind, files, timing_of(strip), look_of(strip))

"""The flags that bound what reading media may cost (``kvlock edit``, ``submit`` and ``serve`` alike)."""

from __future__ import annotations

import argparse

from kvlock.errors import SettingsError
from kvlock.media.limits import DEFAULT_LIMITS, GIB, MIB, MediaLimits


def add_media_limit_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("media limits (judged from each file's header, before it is decoded)")
    group.add_argument(
        "--max-frame-mb",
        type=float,
        default=DEFAULT_LIMITS.max_frame_bytes / MIB,
        help="largest frame read, decoded (every EXR channel over its data window counts) [%(default)g]; at most "
        "this / 8 bytes of pixels (8192×4096 at the default), and 8192 pixels a side",
    )
    group.add_argument(
        "--max-clip-gb",
        type=float,
        default=DEFAULT_LIMITS.max_clip_bytes / GIB,
        help="largest range held in memory, decoded [%(default)g]",
    )


def media_limits_from_args(args: argparse.Namespace) -> MediaLimits:
    try:
        return MediaLimits(max_frame_bytes=int(args.max_frame_mb * MIB), max_clip_bytes=int(args.max_clip_gb * GIB))
    except ValueError as error:
        raise SettingsError(f"--max-frame-mb / --max-clip-gb: {error}") from None

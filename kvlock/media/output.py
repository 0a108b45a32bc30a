"""Writing an edit's result in the codec asked for, as true to the plate as that codec allows.

- ``exr`` (a folder of ``NAME.NNNN.exr``): for EXR sources only. Each frame is its source file with the colour
  replaced (:mod:`kvlock.media.exr`): channels, pixel types, data and display windows, header attributes and
  frame numbers are the source's, and outside the feathered matte every value is the source's bits.
- ``ffv1`` / ``png``: lossless; 16-bit sources stay 16-bit, alpha is written. From a scene-linear plate they
  hold its display-referred view (the view transform of :mod:`kvlock.media.colour`, 16-bit), not the plate.
- ``prores`` (4444, 10-bit, alpha) and ``h264`` (8-bit preview, no alpha): lossy, see :mod:`.encode`.

The checks run before any work (:func:`check_output`), so a wrong choice costs nothing.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import InvalidRequest
from .atomic import atomic_path
from .colour import PixelEncoding, display_code_values
from .decode import MediaInfo
from .encode import CODECS, write_video
from .exr import write_exr_region, write_exr_sequence

OUTPUT_SUFFIXES: dict[str, str] = {codec: spec.suffix for codec, spec in CODECS.items()} | {"exr": ""}


def check_output(source: MediaInfo, codec: str, alpha: bool) -> list[str]:
    """Refuse a codec that cannot hold the result; warn where it loses something the plate has."""
    if codec not in OUTPUT_SUFFIXES:
        raise InvalidRequest(f"unknown codec {codec!r}; choose one of {', '.join(sorted(OUTPUT_SUFFIXES))}")
    warnings: list[str] = []
    if codec == "exr" and source.codec != "exr":
        raise InvalidRequest(
            f"--codec exr writes the source EXR files back with the edit in them, but {source.path.name} is "
            f"{source.codec}; for a display-referred source use ffv1, png (16-bit) or prores"
        )
    if source.transfer == "scene_linear" and codec != "exr":
        warnings.append(
            f"{codec} holds display-referred pixels: the scene-linear plate is written through the view transform "
            "(sRGB with a highlight shoulder, 16-bit), not as the plate itself; use --codec exr to keep the plate"
        )
    if alpha and codec == "h264":
        warnings.append("h264 has no alpha channel: the plate's alpha is not written (use ffv1, prores or png)")
    return warnings


def _display(frames: np.ndarray, encoding: PixelEncoding) -> np.ndarray:
    """Float plates → uint16 display code values; alpha (coverage, not colour) is scaled, not transformed."""
    if not np.issubdtype(frames.dtype, np.floating):
        return frames
    colour = display_code_values(frames[..., :3], encoding)
    if frames.shape[-1] == 3:
        return colour
    alpha = np.rint(np.clip(np.nan_to_num(frames[..., 3:].astype(np.float32)), 0.0, 1.0) * 65535.0)
    return np.concatenate([colour, alpha.astype(np.uint16)], axis=-1)


def write_result(
    path: Path,
    frames: np.ndarray,
    source: MediaInfo,
    start: int,
    codec: str,
    encoding: PixelEncoding,
    rate: Fraction | None = None,
    timecode: str | None = None,
    overwrite: bool = False,
    region: bool = False,
) -> tuple[Path, list[str]]:
    """Write frames [start, start + len) of ``source``'s edit (``region``: the straight-RGBA edited region).

    Returns the final path (a folder for image sequences) and warnings about what the codec changed.
    """
    path = Path(path)
    rate = rate or source.rate
    if codec != "exr":
        return write_video(path, _display(frames, encoding), rate, codec, timecode, overwrite), []
    digits = max(4, source.digits)
    numbers = [source.first_number + start + i for i in range(len(frames))]
    warnings: list[str] = []
    with atomic_path(path, overwrite) as temp:
        temp.mkdir()
        if region:
            write_exr_region(temp, path.name, frames, numbers, digits)
        else:
            templates = source.files[start : start + len(frames)]
            warnings = write_exr_sequence(temp, path.name, frames, templates, numbers, digits, source.limits)
    return path, warnings

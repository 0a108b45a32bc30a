"""OpenEXR plates in and out, keeping everything of the file that the edit does not change.

Reading: a frame is its display window (the format), as float16 when the colour channels are all half and
float32 otherwise, with R, G, B (and A when present) as stored — scene-linear values above 1.0, negative
values, NaN and infinities included. Pixels of the display window outside the data window are 0, which is
what OpenEXR defines them to be. Before OpenEXR decodes anything, the header is read by hand
(:mod:`.exr_header`) and the file refused if decoding it would pass the reader's limits: every channel over
the data window (OpenEXR decodes them all) and the colour over the display window (the frame), each within
``max_frame_bytes`` (:mod:`.limits`). A file whose pixel data OpenEXR cannot decode is refused as damaged.

Writing: each output frame starts from its source file — every channel (AOVs, depth, …) at its own pixel
type, the data window, the display window and every header attribute (timeCode, framesPerSecond,
chromaticities, a renderer's metadata) — and only the colour channels' pixels inside the display window are
replaced. The data window grows when the edit reaches pixels the source did not store, never shrinks, and
overscan (data outside the display window) is copied untouched. Lossless compressions are kept; a lossy
one (DWAA/DWAB, B44/B44A, and PXR24 on float channels) would change the untouched pixels on re-encoding,
so such files are written with ZIP instead, and the caller is told.

Not handled (refused with a message): multi-part and deep files, subsampled channels, and files without
R, G and B channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UnreadableMediaError
from .exr_header import COMPRESSIONS, PIXEL_BYTES, PIXEL_NAMES, ExrHeader, Window, read_header
from .limits import DEFAULT_LIMITS, MediaLimits

COLOUR = ("R", "G", "B")
ALPHA = "A"
__all__ = ["ExrInfo", "Window", "probe_exr", "read_exr", "write_exr_region", "write_exr_sequence"]


def _openexr() -> Any:
    try:
        import OpenEXR
    except ImportError:
        raise UnreadableMediaError(
            "OpenEXR plates need the openexr package: `pip install openexr` (or `pip install kvlock[exr]`)"
        ) from None
    return OpenEXR


@dataclass(frozen=True)
class ExrInfo:
    """What a probe needs from one file: the format, the colour channels' type, timecode and rate."""

    display: Window
    data: Window
    has_alpha: bool
    dtype: np.dtype
    timecode: str | None
    rate: Fraction | None
    compression: str


def _check_layout(path: Path, header: ExrHeader) -> tuple[Window, Window]:
    """Refuse what the plate reader does not handle, from the header alone; the data and display windows."""
    if header.multipart:
        raise UnreadableMediaError(f"{path} is a multi-part EXR; write the plate single-part")
    if header.deep:
        raise UnreadableMediaError(f"{path} is a deep EXR; only flat (scanline or tiled) images can be edited")
    if header.data is None or header.display is None or not header.channels:
        raise UnreadableMediaError(f"{path}: its EXR header has no channels or windows; the file is damaged")
    channels = header.channels
    missing = [c for c in COLOUR if c not in channels]
    if missing:
        raise UnreadableMediaError(
            f"{path} has no {', '.join(missing)} channel(s) (found {', '.join(sorted(channels)) or 'none'}); "
            "KV-Lock edits the R, G, B channels of the plate"
        )
    for name, channel in channels.items():
        if channel.x_sampling != 1 or channel.y_sampling != 1:
            raise UnreadableMediaError(f"{path}: channel {name} is subsampled; only full-resolution channels work")
        if channel.pixel_type not in PIXEL_BYTES:
            raise UnreadableMediaError(f"{path}: channel {name} has an unknown pixel type; the file is damaged")
    for name in (*COLOUR, ALPHA):
        if name in channels and PIXEL_NAMES[channels[name].pixel_type] == "UINT":
            raise UnreadableMediaError(f"{path}: channel {name} holds integers; colour must be half or float")
    return header.data, header.display


def _colour_names(header: ExrHeader) -> list[str]:
    return [n for n in (*COLOUR, ALPHA) if n in header.channels]


def _header_dtype(header: ExrHeader) -> np.dtype:
    half = all(PIXEL_NAMES[header.channels[n].pixel_type] == "HALF" for n in _colour_names(header))
    return np.dtype(np.float16 if half else np.float32)


def checked_header(path: Path, limits: MediaLimits = DEFAULT_LIMITS) -> ExrHeader:
    """The file's header, refused unless the reader handles it and reading it stays within ``limits``: every
    channel over the data window (what OpenEXR decodes) and the colour over the display window (the frame)."""
    header = read_header(path)
    data, display = _check_layout(path, header)
    stored = sum(PIXEL_BYTES[c.pixel_type] for c in header.channels.values())
    limits.check_frame(path, data.width, data.height, stored, "the data window")
    colour = len(_colour_names(header)) * _header_dtype(header).itemsize
    limits.check_frame(path, display.width, display.height, colour, "the display window")
    return header


def _read(path: Path, limits: MediaLimits = DEFAULT_LIMITS) -> tuple[Any, dict[str, Any], dict[str, np.ndarray]]:
    checked_header(path, limits)  # nothing is decoded past the limits
    exr = _openexr()
    try:
        f = exr.File(str(path), separate_channels=True)
    except RuntimeError as exc:
        raise UnreadableMediaError(f"cannot read EXR {path}: {exc}") from exc
    if len(f.parts) != 1:  # OpenEXR keeps no part of a file whose pixel data it could not decode
        raise UnreadableMediaError(f"cannot read EXR {path}: its pixel data is damaged or cut short")
    return exr, dict(f.header()), {name: channel.pixels for name, channel in f.channels().items()}


def _colour_dtype(pixels: dict[str, np.ndarray]) -> np.dtype:
    names = [n for n in (*COLOUR, ALPHA) if n in pixels]
    return np.dtype(np.float16 if all(pixels[n].dtype == np.float16 for n in names) else np.float32)


def probe_exr(path: Path, limits: MediaLimits = DEFAULT_LIMITS) -> ExrInfo:
    """The first file of a plate, from its header alone (checked against ``limits``)."""
    header = checked_header(path, limits)
    assert header.data is not None and header.display is not None  # checked_header refuses a file without
    return ExrInfo(
        display=header.display,
        data=header.data,
        has_alpha=ALPHA in header.channels,
        dtype=_header_dtype(header),
        timecode=header.timecode,
        rate=header.rate,
        compression=_compression_name(header.compression),
    )


def _compression_name(code: int | None) -> str:
    if code is None:
        return ""
    return f"{COMPRESSIONS[code]}_COMPRESSION" if code < len(COMPRESSIONS) else f"compression {code}"


def _canvas(header: dict[str, Any], pixels: dict[str, np.ndarray], dtype: np.dtype) -> np.ndarray:
    display, data = Window.of(header["displayWindow"]), Window.of(header["dataWindow"])
    names = [n for n in (*COLOUR, ALPHA) if n in pixels]
    out = np.zeros((display.height, display.width, len(names)), dtype=dtype)
    inside = data.intersection(display)
    if inside is not None:
        rows, cols = inside.slices_in(display)
        src_rows, src_cols = inside.slices_in(data)
        for k, name in enumerate(names):
            out[rows, cols, k] = pixels[name][src_rows, src_cols]
    return out


def read_exr(path: Path, limits: MediaLimits = DEFAULT_LIMITS) -> np.ndarray:
    """(H, W, 3|4) float16/float32: the display window's R, G, B (, A) exactly as stored; 0 outside the data."""
    _, header, pixels = _read(path, limits)
    return _canvas(header, pixels, _colour_dtype(pixels))


def _bits(a: np.ndarray) -> np.ndarray:
    """The stored bits of a float array, so NaN payloads and signed zeros compare exactly."""
    a = np.ascontiguousarray(a)
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def _changed_box(new: np.ndarray, old: np.ndarray, display: Window) -> Window | None:
    """The smallest window (absolute coordinates) holding every pixel whose bits differ."""
    mask = (_bits(new) != _bits(old)).any(axis=-1)
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if rows.size == 0:
        return None
    return Window(
        display.x0 + int(cols[0]), display.y0 + int(rows[0]), display.x0 + int(cols[-1]), display.y0 + int(rows[-1])
    )


def _lossless_compression(exr: Any, header: dict[str, Any], pixels: dict[str, np.ndarray]) -> str | None:
    """Keep the source's compression if re-encoding with it is exact; else switch to ZIP and say so."""
    kept = {exr.NO_COMPRESSION, exr.RLE_COMPRESSION, exr.ZIPS_COMPRESSION, exr.ZIP_COMPRESSION, exr.PIZ_COMPRESSION}
    kept.add(getattr(exr, "ZSTD_COMPRESSION", exr.ZIP_COMPRESSION))  # OpenEXR 3.4+
    compression = header.get("compression", exr.ZIP_COMPRESSION)
    if compression == exr.PXR24_COMPRESSION and all(p.dtype != np.float32 for p in pixels.values()):
        return None  # PXR24 is exact on half and integer channels
    if compression in kept:
        return None
    header["compression"] = exr.ZIP_COMPRESSION
    name = str(compression).rsplit(".", 1)[-1]
    return f"{name} is lossy and would change the untouched pixels: written with ZIP_COMPRESSION instead"


def write_exr_frame(target: Path, template: Path, frame: np.ndarray, limits: MediaLimits = DEFAULT_LIMITS) -> list[str]:
    """Write ``template``'s file with its display window's colour replaced by ``frame``; return warnings."""
    exr, header, pixels = _read(template, limits)
    display, data = Window.of(header["displayWindow"]), Window.of(header["dataWindow"])
    names = [n for n in (*COLOUR, ALPHA) if n in pixels][: frame.shape[-1]]
    if frame.shape[:2] != (display.height, display.width):
        raise ValueError(
            f"frame is {frame.shape[1]}×{frame.shape[0]}, {template}'s display window {display.width}×{display.height}"
        )
    before = np.ascontiguousarray(_canvas(header, pixels, np.dtype(np.float32))[..., : len(names)])
    after = frame[..., : len(names)].astype(np.float32)
    grown = data
    changed = _changed_box(after, before, display)
    if changed is not None:
        grown = data.union(changed)
    if grown != data:
        for name, array in list(pixels.items()):
            bigger = np.zeros((grown.height, grown.width), dtype=array.dtype)
            bigger[data.slices_in(grown)] = array
            pixels[name] = bigger
        header["dataWindow"] = grown.box()
    inside = grown.intersection(display)
    if inside is not None and changed is not None:
        rows, cols = inside.slices_in(display)
        dst_rows, dst_cols = inside.slices_in(grown)
        for k, name in enumerate(names):
            region = pixels[name][dst_rows, dst_cols]
            new = frame[rows, cols, k].astype(region.dtype)
            old = before[rows, cols, k].astype(region.dtype)
            # only pixels that changed are written, so an untouched pixel keeps its exact stored bits
            pixels[name][dst_rows, dst_cols] = np.where(_bits(new) == _bits(old), region, new)
    warnings = [w for w in [_lossless_compression(exr, header, pixels)] if w]
    header.pop("channels", None)
    exr.File(header, pixels).write(str(target))
    return warnings


def write_exr_sequence(
    folder: Path,
    stem: str,
    frames: np.ndarray,
    templates: Sequence[Path],
    numbers: Sequence[int],
    digits: int = 4,
    limits: MediaLimits = DEFAULT_LIMITS,
) -> list[str]:
    """One file per frame in ``folder`` (which exists), ``STEM.NNNN.exr`` numbered as the source's frames."""
    if not len(frames) == len(templates) == len(numbers):
        raise ValueError(f"{len(frames)} frames but {len(templates)} source files and {len(numbers)} numbers")
    warnings: list[str] = []
    for frame, template, number in zip(frames, templates, numbers, strict=True):
        for w in write_exr_frame(folder / f"{stem}.{number:0{digits}d}.exr", template, frame, limits):
            if w not in warnings:
                warnings.append(w)
    return warnings


def write_exr_region(folder: Path, stem: str, frames: np.ndarray, numbers: Sequence[int], digits: int = 4) -> None:
    """The edited region (straight RGBA, alpha = feathered matte) as premultiplied RGBA EXRs, OpenEXR's own
    convention, ZIP-compressed, at the frames' pixel type."""
    exr = _openexr()
    for frame, number in zip(frames, numbers, strict=True):
        alpha = frame[..., 3].astype(np.float32)
        channels = {n: (frame[..., k].astype(np.float32) * alpha).astype(frame.dtype) for k, n in enumerate(COLOUR)}
        channels[ALPHA] = frame[..., 3]
        header = {"compression": exr.ZIP_COMPRESSION, "type": exr.scanlineimage}
        exr.File(header, {k: np.ascontiguousarray(v) for k, v in channels.items()}).write(
            str(folder / f"{stem}.{number:0{digits}d}.exr")
        )

"""OpenEXR plates in and out, keeping everything of the file that the edit does not change.

Reading: a frame is its display window (the format), as float16 when the colour channels are all half and
float32 otherwise, with R, G, B (and A when present) as stored — scene-linear values above 1.0, negative
values, NaN and infinities included. Pixels of the display window outside the data window are 0, which is
what OpenEXR defines them to be.

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

COLOUR = ("R", "G", "B")
ALPHA = "A"


def _openexr() -> Any:
    try:
        import OpenEXR
    except ImportError:
        raise UnreadableMediaError(
            "OpenEXR plates need the openexr package: `pip install openexr` (or `pip install kvlock[exr]`)"
        ) from None
    return OpenEXR


@dataclass(frozen=True)
class Window:
    """An EXR box (inclusive corners, absolute pixel coordinates)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @classmethod
    def of(cls, box: Any) -> Window:
        (x0, y0), (x1, y1) = box
        return cls(int(x0), int(y0), int(x1), int(y1))

    @property
    def width(self) -> int:
        return self.x1 - self.x0 + 1

    @property
    def height(self) -> int:
        return self.y1 - self.y0 + 1

    def box(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return (self.x0, self.y0), (self.x1, self.y1)

    def union(self, other: Window) -> Window:
        return Window(min(self.x0, other.x0), min(self.y0, other.y0), max(self.x1, other.x1), max(self.y1, other.y1))

    def intersection(self, other: Window) -> Window | None:
        w = Window(max(self.x0, other.x0), max(self.y0, other.y0), min(self.x1, other.x1), min(self.y1, other.y1))
        return w if w.x0 <= w.x1 and w.y0 <= w.y1 else None

    def slices_in(self, outer: Window) -> tuple[slice, slice]:
        """Rows and columns of this window inside an array that covers ``outer``."""
        return (
            slice(self.y0 - outer.y0, self.y1 - outer.y0 + 1),
            slice(self.x0 - outer.x0, self.x1 - outer.x0 + 1),
        )


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


def _check_layout(path: Path, f: Any) -> dict[str, Any]:
    if len(f.parts) != 1:
        raise UnreadableMediaError(f"{path} is a multi-part EXR ({len(f.parts)} parts); write the plate single-part")
    header = f.header()
    if "deep" in str(header.get("type", "")):
        raise UnreadableMediaError(f"{path} is a deep EXR; only flat (scanline or tiled) images can be edited")
    channels = f.channels()
    missing = [c for c in COLOUR if c not in channels]
    if missing:
        raise UnreadableMediaError(
            f"{path} has no {', '.join(missing)} channel(s) (found {', '.join(sorted(channels)) or 'none'}); "
            "KV-Lock edits the R, G, B channels of the plate"
        )
    for name, channel in channels.items():
        if channel.xSampling != 1 or channel.ySampling != 1:
            raise UnreadableMediaError(f"{path}: channel {name} is subsampled; only full-resolution channels work")
    for name in (*COLOUR, ALPHA):
        if name in channels and not np.issubdtype(channels[name].pixels.dtype, np.floating):
            raise UnreadableMediaError(f"{path}: channel {name} holds integers; colour must be half or float")
    return header


def _timecode(value: Any) -> str | None:
    """SMPTE text from an EXR ``timeCode`` attribute (OpenEXR's TimeCode: hours, minutes, seconds, frame)."""
    try:
        parts = (value.hours, value.minutes, value.seconds, value.frame)
        drop = bool(value.dropFrame)
    except AttributeError:
        return None
    hours, minutes, seconds, frame = (int(v) for v in parts)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{';' if drop else ':'}{frame:02d}"


def _read(path: Path) -> tuple[Any, dict[str, Any], dict[str, np.ndarray]]:
    exr = _openexr()
    try:
        f = exr.File(str(path), separate_channels=True)
    except RuntimeError as exc:
        raise UnreadableMediaError(f"cannot read EXR {path}: {exc}") from exc
    header = _check_layout(path, f)
    return exr, dict(header), {name: channel.pixels for name, channel in f.channels().items()}


def _colour_dtype(pixels: dict[str, np.ndarray]) -> np.dtype:
    names = [n for n in (*COLOUR, ALPHA) if n in pixels]
    return np.dtype(np.float16 if all(pixels[n].dtype == np.float16 for n in names) else np.float32)


def probe_exr(path: Path) -> ExrInfo:
    """The first file of a plate, read whole (the pixel types are only known from the pixels)."""
    _, header, pixels = _read(path)
    rate = header.get("framesPerSecond")
    return ExrInfo(
        display=Window.of(header["displayWindow"]),
        data=Window.of(header["dataWindow"]),
        has_alpha=ALPHA in pixels,
        dtype=_colour_dtype(pixels),
        timecode=_timecode(header["timeCode"]) if "timeCode" in header else None,
        rate=Fraction(rate) if isinstance(rate, Fraction) and rate > 0 else None,
        compression=str(header.get("compression", "")).rsplit(".", 1)[-1],
    )


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


def read_exr(path: Path) -> np.ndarray:
    """(H, W, 3|4) float16/float32: the display window's R, G, B (, A) exactly as stored; 0 outside the data."""
    _, header, pixels = _read(path)
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


def write_exr_frame(target: Path, template: Path, frame: np.ndarray) -> list[str]:
    """Write ``template``'s file with its display window's colour replaced by ``frame``; return warnings."""
    exr, header, pixels = _read(template)
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
    folder: Path, stem: str, frames: np.ndarray, templates: Sequence[Path], numbers: Sequence[int], digits: int = 4
) -> list[str]:
    """One file per frame in ``folder`` (which exists), ``STEM.NNNN.exr`` numbered as the source's frames."""
    if not len(frames) == len(templates) == len(numbers):
        raise ValueError(f"{len(frames)} frames but {len(templates)} source files and {len(numbers)} numbers")
    warnings: list[str] = []
    for frame, template, number in zip(frames, templates, numbers, strict=True):
        for w in write_exr_frame(folder / f"{stem}.{number:0{digits}d}.exr", template, frame):
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

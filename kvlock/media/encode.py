"""Encoding results for NLE round trips (docs/design.md §5, Media).

- ``ffv1``: lossless, the default for intermediates; RGB(A) stored as-is (``bgr0``/``bgra``, 16-bit as
  ``gbrp16le``/``gbrap16le``) in Matroska. Exact round trip.
- ``prores``: ProRes 4444 (``prores_ks`` profile 4, 10-bit 4:4:4, alpha when present) in QuickTime;
  near-lossless (±2 code values), what Resolve and most NLEs ingest natively.
- ``png``: a numbered PNG sequence in a folder (8- or 16-bit, alpha when present). Exact round trip.
- ``h264``: 4:2:0 preview in MP4 (CRF 18); odd sizes are padded by one edge pixel.

Colour is tagged explicitly (BT.709 primaries and transfer; RGB codecs full range with the RGB matrix,
YUV codecs BT.709 matrix and limited range) so hosts decode the same colours. The frame rate is kept as an
exact fraction, and the source timecode is written where the container carries one (mov/mp4/mkv).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from .atomic import atomic_path

# FFmpeg's enum values (AVColorPrimaries, AVColorTransferCharacteristic, AVColorSpace, AVColorRange)
BT709 = 1
MATRIX_RGB = 0
RANGE_LIMITED, RANGE_FULL = 1, 2


@dataclass(frozen=True)
class CodecSpec:
    container: str
    suffix: str
    codec: str
    options: dict[str, str]
    rgb: bool  # stored as RGB (full range, RGB matrix) rather than YUV


CODECS: dict[str, CodecSpec] = {
    "ffv1": CodecSpec("matroska", ".mkv", "ffv1", {"level": "3", "slicecrc": "1"}, rgb=True),
    "prores": CodecSpec("mov", ".mov", "prores_ks", {"profile": "4", "vendor": "apl0"}, rgb=False),
    "h264": CodecSpec("mp4", ".mp4", "libx264", {"crf": "18", "preset": "medium"}, rgb=False),
    "png": CodecSpec("image2", "", "png", {}, rgb=True),
}


def _pixel_formats(codec: str, channels: int, deep: bool) -> tuple[str, str]:
    """(format of the ndarray we hand PyAV, format the encoder stores)."""
    alpha = channels == 4
    source = ("rgba64le" if alpha else "rgb48le") if deep else ("rgba" if alpha else "rgb24")
    stored = {
        "ffv1": ("gbrap16le" if alpha else "gbrp16le") if deep else ("bgra" if alpha else "bgr0"),
        "png": ("rgba64be" if alpha else "rgb48be") if deep else ("rgba" if alpha else "rgb24"),
        "prores": "yuva444p10le" if alpha else "yuv444p10le",
        "h264": "yuv420p",
    }[codec]
    return source, stored


def _even(frames: np.ndarray) -> np.ndarray:
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if not (pad_h or pad_w):
        return frames
    return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def _add_stream(
    container: av.container.OutputContainer,
    spec: CodecSpec,
    rate: Fraction,
    width: int,
    height: int,
    stored_fmt: str,
    timecode: str | None,
) -> av.video.stream.VideoStream:
    """The video stream, tagged BT.709 (full range RGB, limited range YUV) and with the timecode, if any."""
    if timecode:
        container.metadata["timecode"] = timecode
    stream = container.add_stream(spec.codec, rate=Fraction(rate), options=dict(spec.options))
    stream.width, stream.height = width, height
    stream.pix_fmt = stored_fmt
    if timecode:
        stream.metadata["timecode"] = timecode
    cc = stream.codec_context
    cc.color_primaries, cc.color_trc = BT709, BT709
    cc.colorspace = MATRIX_RGB if spec.rgb else BT709
    cc.color_range = RANGE_FULL if spec.rgb else RANGE_LIMITED
    return stream


def write_video(
    path: str | Path,
    frames: np.ndarray,
    rate: Fraction,
    codec: str = "ffv1",
    timecode: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write (T, H, W, 3|4) uint8/uint16 frames; return the final path (a folder for ``png``)."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")
    if frames.ndim != 4 or frames.shape[-1] not in (3, 4) or frames.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"frames must be uint8/uint16 (T, H, W, 3|4), got {frames.dtype} {frames.shape}")
    spec = CODECS[codec]
    path = Path(path)
    deep = frames.dtype == np.uint16
    if codec == "h264":
        frames = _even(frames[..., :3])
        deep = False
        if frames.dtype == np.uint16:
            frames = (frames.astype(np.uint32) * 255 // 65535).astype(np.uint8)
    source_fmt, stored_fmt = _pixel_formats(codec, frames.shape[-1], deep)
    with atomic_path(path, overwrite) as temp:
        if codec == "png":
            temp.mkdir()
            target, fmt = str(temp / f"{path.name}.%06d.png"), "image2"
        else:
            target, fmt = str(temp), spec.container
        container = av.open(target, "w", format=fmt)
        try:
            tag = timecode if codec != "png" else None
            stream = _add_stream(container, spec, rate, frames.shape[2], frames.shape[1], stored_fmt, tag)
            for i, array in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format=source_fmt)
                if not spec.rgb:  # convert here so the BT.709 matrix and limited range are what is stored
                    frame = frame.reformat(
                        format=stored_fmt,
                        src_colorspace=BT709,
                        dst_colorspace=BT709,
                        src_color_range=RANGE_FULL,
                        dst_color_range=RANGE_LIMITED,
                    )
                frame.pts = i
                frame.time_base = 1 / Fraction(rate)
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        finally:
            container.close()
    return path

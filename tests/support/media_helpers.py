"""Writers for test media: movies through the product's encoder, image sequences through PyAV and OpenEXR."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def unique_frames(count: int, height: int, width: int, channels: int = 3, dtype=np.uint8, seed: int = 0):
    """Noise frames whose first pixel encodes the frame index, so a shifted range is caught at once."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    frames = rng.integers(0, top + 1, (count, height, width, channels), dtype=np.uint64).astype(dtype)
    frames[:, 0, 0, 0] = np.arange(count) % (top + 1)
    return frames


def write_image_sequence(
    folder: Path,
    frames: np.ndarray,
    codec: str = "png",
    start_number: int = 1001,
    digits: int = 4,
    prefix: str = "shot",
) -> Path:
    """Write one image per frame with PyAV's encoders (png or tiff), numbered from ``start_number``."""
    folder.mkdir(parents=True, exist_ok=True)
    deep = frames.dtype == np.uint16
    alpha = frames.shape[-1] == 4
    fmt = ("rgba64le" if alpha else "rgb48le") if deep else ("rgba" if alpha else "rgb24")
    stored = fmt.replace("le", "be") if codec == "png" else fmt  # PNG stores 16-bit big-endian
    suffix = {"png": "png", "tiff": "tif"}[codec]
    for i, array in enumerate(frames):
        path = folder / f"{prefix}.{start_number + i:0{digits}d}.{suffix}"
        with av.open(str(path), "w", format="image2") as container:
            stream = container.add_stream(codec, rate=Fraction(24))
            stream.width, stream.height, stream.pix_fmt = array.shape[1], array.shape[0], stored
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format=fmt)):
                container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return folder


def write_h264_gop(path: Path, frames: np.ndarray, rate: Fraction, gop: int = 12) -> Path:
    """An H.264 file with B-frames and short GOPs, so range reads must seek and reorder correctly."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate, options={"g": str(gop), "bf": "2", "qp": "0"})
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        for i, array in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts = i
            frame.time_base = 1 / rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_turned(path: Path, stored: np.ndarray, rate: Fraction, degrees: float, codec: str = "ffv1") -> Path:
    """``stored`` frames (as a phone's sensor writes them) tagged with a display rotation of ``degrees``
    counter-clockwise (the display matrix players and NLEs apply), through PyAV's own writer of the tag."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = stored.shape[2], stored.shape[1]
        stream.pix_fmt = "bgr0" if codec == "ffv1" else "yuv420p"
        if codec != "ffv1":
            stream.options = {"crf": "1"}
        stream.set_display_rotation(degrees)
        for frame in stored:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path

"""Media files built to hurt a media pipeline, made in a few milliseconds each (tests and ``bench/soak.py``).

Each one lies or is damaged in one way: a header that claims a huge frame, a compression bomb, a container
that claims frames it does not hold, flipped bits inside packets, a timecode tag that is not one. Built from
their formats' own layouts (PNG chunks, GIF's logical screen, EXR header attributes, AVI's frame counts) or
by re-muxing real FFV1 packets with PyAV.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def lying_png(path: Path, width: int = 16000, height: int = 16000) -> Path:
    """68 bytes whose IHDR claims ``width``×``height`` RGBA at 16 bits (2 GiB decoded), with no data to match."""
    ihdr = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 8)))
    return path


def png_bomb(path: Path, width: int, height: int, colour: int = 6, depth: int = 8) -> Path:
    """A true PNG of zeros: a few hundred kB that decode to ``width``×``height`` pixels."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    row = b"\0" * (1 + width * channels * depth // 8)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b""))
    return path


def gif_screen(path: Path, width: int = 8000, height: int = 8000) -> Path:
    """35 bytes: a GIF whose logical screen is ``width``×``height`` around one 1×1 image (every decoded frame
    is the whole screen)."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0x80) + b"\xff\x00\x00\x00\x00\x00"
    codes = 4 | (0 << 3) | (5 << 6)  # LZW, 3-bit codes: clear, index 0, end
    path.write_bytes(screen + image + bytes([2, 2, codes & 0xFF, codes >> 8, 0]) + b"\x3b")
    return path


def exr_plate(path: Path, width: int = 64, height: int = 48, **header) -> Path:
    """A small half-float RGB EXR through the OpenEXR package; ``header`` attributes are added as given."""
    import OpenEXR

    rgb = np.linspace(0.0, 2.0, width * height, dtype=np.float16).reshape(height, width)
    head = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage, **header}
    OpenEXR.File(head, {"R": rgb, "G": rgb.copy(), "B": rgb.copy()}).write(str(path))
    return path


def exr_claiming(path: Path, side: int = 20000) -> Path:
    """A ZIP-compressed EXR whose data and display windows claim ``side``² (OpenEXR would decode gigabytes):
    a real file's header with its two windows rewritten."""
    data = bytearray(exr_plate(path).read_bytes())
    for name in (b"dataWindow\0box2i\0", b"displayWindow\0box2i\0"):
        at = data.index(name) + len(name) + 4
        struct.pack_into("<4i", data, at, 0, 0, side - 1, side - 1)
    path.write_bytes(bytes(data))
    return path


def exr_wide_display(path: Path, side: int = 30000) -> Path:
    """64×48 of data inside a ``side``² display window (the zeros around it are what a reader allocates)."""
    return exr_plate(path, dataWindow=((0, 0), (63, 47)), displayWindow=((0, 0), (side - 1, side - 1)))


def exr_damaged(path: Path) -> Path:
    """A single-part EXR whose header is whole but whose pixel data is cut short."""
    data = exr_plate(path).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def ffv1_clip(path: Path, frames: int = 9, width: int = 64, height: int = 48, **metadata: str) -> Path:
    """A small FFV1 (slice CRCs on) Matroska clip of noise, with stream ``metadata`` tags."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=24, options={"slicecrc": "1"})
        stream.width, stream.height, stream.pix_fmt = width, height, "bgr0"
        for key, value in metadata.items():
            stream.metadata[key] = value
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), "rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _remux(source: Path, target: Path, edit: Callable[[int, bytes], bytes], size: tuple[int, int] | None) -> Path:
    with av.open(str(source)) as inp, av.open(str(target), "w", format="matroska") as out:
        stream = inp.streams.video[0]
        copy = out.add_stream_from_template(stream)
        if size is not None:
            copy.codec_context.width, copy.codec_context.height = size
        for i, packet in enumerate(p for p in inp.demux(stream) if p.size):
            changed = av.Packet(edit(i, bytes(packet)))
            changed.pts, changed.dts, changed.time_base = packet.pts, packet.dts, packet.time_base
            changed.is_keyframe, changed.duration = packet.is_keyframe, packet.duration
            changed.stream = copy
            out.mux(changed)
    return target


def ffv1_flipped(path: Path, frames: int = 9) -> Path:
    """FFV1 with bits flipped inside every frame's packet but the first of each three: the decoder conceals
    the damage and logs slice CRC mismatches instead of failing."""
    clean = ffv1_clip(path.with_name(path.stem + ".clean.mkv"), frames)

    def flip(i: int, data: bytes) -> bytes:
        if i % 3 == 0:
            return data
        damaged = bytearray(data)
        for at in range(50, len(damaged), 97):
            damaged[at] ^= 0x55
        return bytes(damaged)

    return _remux(clean, path, flip, None)


def ffv1_claiming(path: Path, width: int = 8192, height: int = 8192) -> Path:
    """Real 64×48 FFV1 packets in a container that says ``width``×``height``."""
    clean = ffv1_clip(path.with_name(path.stem + ".clean.mkv"))
    return _remux(clean, path, lambda i, data: data, (width, height))


def avi_claiming(path: Path, claimed: int = 99_999, frames: int = 9) -> Path:
    """An FFV1 AVI of ``frames`` frames whose headers (avih dwTotalFrames, strh dwLength) claim ``claimed``."""
    rng = np.random.default_rng(1)
    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("ffv1", rate=24)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "bgr0"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8), "rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, data.index(b"avih") + 8 + 16, claimed)
    struct.pack_into("<I", data, data.index(b"strh") + 8 + 32, claimed)
    path.write_bytes(bytes(data))
    return path


def long_gop(path: Path, frames: int = 3000, width: int = 64, height: int = 48) -> Path:
    """``frames`` frames of H.264 in one GOP (one keyframe): a ~100 kB file a reader must decode from the
    start to reach any frame, so re-seeking per piece costs the square of its length."""
    ramp = np.linspace(0, 255, width, dtype=np.uint8)[None, :, None].repeat(height, 0).repeat(3, 2)
    with av.open(str(path), "w") as container:
        options = {"g": str(frames + 1), "keyint_min": str(frames + 1), "sc_threshold": "0", "bf": "0"}
        stream = container.add_stream("libx264", rate=Fraction(24), options={**options, "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            array = np.roll(ramp, i % width, axis=1)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), "rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def still_matte(path: Path, width: int = 64, height: int = 48) -> Path:
    """A gray PNG still with a white box: a matte for every frame of a source."""
    matte = np.zeros((height, width, 3), np.uint8)
    matte[height // 4 : height // 2, width // 4 : width // 2] = 255
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "rgb24"
        for packet in stream.encode(av.VideoFrame.from_ndarray(matte, "rgb24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path

"""Where a strip's image lands on the sequencer's canvas, and mapping one strip's pixels into another's.

Blender's sequencer (``calc_strip_transform_matrix`` and ``input_preprocess``, 4.5–5.2) places a strip's
image of w×h pixels on the W×H canvas with

    canvas = F · T(p + t + c) · R(rotation) · S(scale) · T(−p) · image

in pixel units with y up: ``p`` the pivot (``origin`` × image size), ``t`` the strip's offset, ``c`` the
whole-pixel centring offset trunc((W − w) / 2), trunc((H − h) / 2), and ``F`` the flips, which mirror the
whole canvas after the transform. Crop removes ``left``/``right``/``bottom``/``top`` pixels of the image
before it is placed. A canvas pixel samples the image at the inverse transform of its centre.

The add-on edits a strip's own media, so a matte drawn in another strip (own size, own transform) is carried
into the plate's pixels through the canvas: plate pixel → canvas → matte pixel, sampled bilinearly
(nearest where the map is a whole-pixel shift). Arrays here are row 0 at the top, as decoders return them.
Nothing here imports bpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StripGeometry:
    """A strip's image size and how it sits on the canvas (Blender's transform, crop and flips)."""

    width: int
    height: int
    offset: tuple[float, float] = (0.0, 0.0)
    scale: tuple[float, float] = (1.0, 1.0)
    rotation: float = 0.0  # radians, counter-clockwise
    origin: tuple[float, float] = (0.5, 0.5)
    crop: tuple[int, int, int, int] = (0, 0, 0, 0)  # left, right, bottom, top (pixels)
    flip: tuple[bool, bool] = (False, False)


def canvas_geometry(width: int, height: int) -> StripGeometry:
    """The canvas itself: what a frame rendered by the sequencer is in."""
    return StripGeometry(width, height)


def image_to_canvas(geometry: StripGeometry, canvas: tuple[int, int]) -> np.ndarray:
    """3×3 matrix taking image coordinates (pixels, y up) to canvas coordinates."""
    w, h = geometry.width, geometry.height
    cw, ch = canvas
    centre = (math.trunc((cw - w) / 2), math.trunc((ch - h) / 2))  # C integer division, as Blender does
    pivot = (w * geometry.origin[0], h * geometry.origin[1])
    cos, sin = math.cos(geometry.rotation), math.sin(geometry.rotation)
    sx, sy = geometry.scale
    linear = np.array([[cos * sx, -sin * sy], [sin * sx, cos * sy]])
    move = np.array(pivot) + np.array(geometry.offset) + np.array(centre) - linear @ np.array(pivot)
    matrix = np.eye(3)
    matrix[:2, :2], matrix[:2, 2] = linear, move
    flip = np.eye(3)
    if geometry.flip[0]:
        flip[0, 0], flip[0, 2] = -1.0, cw
    if geometry.flip[1]:
        flip[1, 1], flip[1, 2] = -1.0, ch
    return flip @ matrix


def plate_to_matte(plate: StripGeometry, matte: StripGeometry, canvas: tuple[int, int]) -> np.ndarray:
    """3×3 matrix taking plate image coordinates to matte image coordinates, through the canvas."""
    return np.linalg.inv(image_to_canvas(matte, canvas)) @ image_to_canvas(plate, canvas)


def is_identity(matrix: np.ndarray, plate: StripGeometry, matte: StripGeometry) -> bool:
    same_size = (plate.width, plate.height) == (matte.width, matte.height)
    return same_size and matte.crop == (0, 0, 0, 0) and np.allclose(matrix, np.eye(3), atol=1e-9)


def whole_pixel_shift(matrix: np.ndarray) -> tuple[int, int] | None:
    """(dx, dy) when the map only moves by whole pixels (so nearest sampling is exact), else None."""
    if not np.allclose(matrix[:2, :2], np.eye(2), atol=1e-9):
        return None
    dx, dy = matrix[0, 2], matrix[1, 2]
    if abs(dx - round(dx)) > 1e-9 or abs(dy - round(dy)) > 1e-9:
        return None
    return round(dx), round(dy)


def sample(
    image: np.ndarray,
    matrix: np.ndarray,
    size: tuple[int, int],
    crop: tuple[int, int, int, int] = (0, 0, 0, 0),
    nearest: bool = False,
) -> np.ndarray:
    """A ``size`` = (width, height) float32 image whose pixel centres are mapped by ``matrix`` into ``image``.

    ``image`` is (h, w) or (h, w, C), row 0 at the top; both coordinate systems are pixels with y up. Samples
    outside the image or its crop are 0, as Blender leaves them transparent. ``nearest`` takes the pixel
    under the mapped centre (Blender's nearest filter); otherwise bilinear between the four around it.
    """
    h, w = image.shape[:2]
    out_w, out_h = size
    xs = np.arange(out_w, dtype=np.float64) + 0.5
    ys = out_h - (np.arange(out_h, dtype=np.float64) + 0.5)  # row r's centre, y up
    gx, gy = np.meshgrid(xs, ys)
    u = matrix[0, 0] * gx + matrix[0, 1] * gy + matrix[0, 2]
    v = matrix[1, 0] * gx + matrix[1, 1] * gy + matrix[1, 2]
    left, right, bottom, top = crop
    inside = (u >= left) & (u < w - right) & (v >= bottom) & (v < h - top)
    pixels = image.astype(np.float32, copy=False)
    if image.ndim == 2:
        pixels = pixels[..., None]
    if nearest:
        col = np.clip(np.floor(u).astype(np.int64), 0, w - 1)
        row = np.clip(h - 1 - np.floor(v).astype(np.int64), 0, h - 1)
        out = pixels[row, col]
    else:
        out = _bilinear(pixels, u - 0.5, (h - 0.5) - v)
    out[~inside] = 0.0
    return out[..., 0] if image.ndim == 2 else out


def _bilinear(pixels: np.ndarray, col: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Bilinear samples at fractional (row, col) pixel-centre positions; texels outside count as 0."""
    h, w = pixels.shape[:2]
    c0, r0 = np.floor(col).astype(np.int64), np.floor(row).astype(np.int64)
    fc, fr = (col - c0)[..., None].astype(np.float32), (row - r0)[..., None].astype(np.float32)
    out = np.zeros((*col.shape, pixels.shape[2]), np.float32)
    for dr, wr in ((0, 1.0 - fr), (1, fr)):
        for dc, wc in ((0, 1.0 - fc), (1, fc)):
            r, c = r0 + dr, c0 + dc
            valid = ((r >= 0) & (r < h) & (c >= 0) & (c < w))[..., None]
            texel = pixels[np.clip(r, 0, h - 1), np.clip(c, 0, w - 1)]
            out += np.where(valid, texel, 0.0) * wr * wc
    return out


def matte_into_plate(
    matte: np.ndarray, matte_geometry: StripGeometry, plate: StripGeometry, canvas: tuple[int, int]
) -> np.ndarray:
    """(plate.height, plate.width) float32: the matte's values at each plate pixel, through the canvas."""
    matrix = plate_to_matte(plate, matte_geometry, canvas)
    if is_identity(matrix, plate, matte_geometry):
        return matte.astype(np.float32, copy=False)
    exact = whole_pixel_shift(matrix) is not None
    return sample(matte, matrix, (plate.width, plate.height), matte_geometry.crop, nearest=exact)

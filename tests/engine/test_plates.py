"""The engine on the plates VFX users bring: scene-linear floats with highlights, negatives and NaN, 16-bit
RGBA, linear-light integers — outside the feathered matte the output is the plate bit for bit, inside it is
the edit in the plate's own encoding, and alpha is never touched."""

from __future__ import annotations

import numpy as np
import pytest

from kvlock import EditRequest, EditSettings, InvalidRequest
from kvlock.editing.compositing import feather_matte
from kvlock.media.colour import SceneLinear, encoding_for

from ..support.clips import box_matte, make_clip

SETTINGS = EditSettings(steps=2, feather=3)


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).view({1: np.uint8, 2: np.uint16, 4: np.uint32}[a.dtype.itemsize])


def _linear_plate(dtype=np.float16, frames=5, height=40, width=56) -> np.ndarray:
    """A display clip turned into linear light ×4 (highlights up to ~4.0), with hot, negative and NaN pixels and
    an alpha ramp."""
    display = make_clip(frames, height, width).astype(np.float64) / 255.0
    linear = np.where(display <= 0.04045, display / 12.92, ((display + 0.055) / 1.055) ** 2.4) * 4.0
    linear[:, 2, 2] = [500.0, 20.0, 30000.0]  # a specular hit far above the ceiling, outside the matte
    linear[:, 3, 3] = [-0.02, -0.5, 0.1]  # out-of-gamut negatives
    linear[:, 4, 4, 1] = np.nan  # a bad render sample, outside the matte …
    linear[:, 20, 28, 0] = np.nan  # … and one inside it
    alpha = np.broadcast_to(np.linspace(0.0, 1.0, width), (frames, height, width))[..., None]
    return np.concatenate([linear, alpha], axis=-1).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_scene_linear_plate_outside_the_matte_is_the_plate_bit_for_bit(editor, dtype):
    plate = _linear_plate(dtype)
    matte = box_matte(5, 40, 56, 12, 18, 16, 20)
    before = plate.copy()
    result = editor.edit(EditRequest(plate, matte, "a red ball", SETTINGS, encoding=SceneLinear()))
    out = result.frames
    assert out.dtype == dtype and out.shape == plate.shape
    assert np.array_equal(_bits(plate), _bits(before))  # the source array is never written to
    outside = np.stack([feather_matte(m, 3) for m in matte]) == 0
    assert (_bits(out[..., :3]) == _bits(plate[..., :3]))[outside].all()  # 500.0, −0.5, NaN and all
    assert np.isnan(out[:, 4, 4, 1]).all() and (out[:, 2, 2, 2] == plate[:, 2, 2, 2]).all()
    inside = ~outside
    edited = out[..., :3][inside]
    assert np.isfinite(edited).all()  # the NaN under the matte is gone, nothing new is NaN or infinite
    assert edited.min() >= 0.0 and edited.max() <= SceneLinear().ceiling
    assert not np.array_equal(edited, plate[..., :3][inside])
    assert (_bits(out[..., 3]) == _bits(plate[..., 3])).all()  # alpha: untouched everywhere
    assert any("NaN or infinite" in w for w in result.warnings)


def test_the_model_sees_the_view_transform_not_the_raw_linear_values(editor):
    """Same scene, two encodings: a linear plate and its display-referred view must reach the model alike."""
    plate = _linear_plate(np.float32)[..., :3]
    plate = np.nan_to_num(plate)
    matte = box_matte(5, 40, 56, 12, 18, 16, 20)
    settings = EditSettings(steps=2, feather=3, seed=3)
    view = SceneLinear().to_model(plate)
    linear = editor.edit(EditRequest(plate, matte, "a red ball", settings, return_raw=True, encoding=SceneLinear()))
    display = editor.edit(EditRequest(view, matte, "a red ball", settings, return_raw=True))
    assert np.allclose(linear.raw, display.raw, atol=1e-5)
    naive = editor.edit(EditRequest(np.clip(plate, 0, 1), matte, "a red ball", settings, return_raw=True))
    assert not np.allclose(naive.raw, display.raw, atol=1e-3)  # a clip to [0, 1] would be another picture


def test_16_bit_rgba_plate_keeps_depth_and_alpha(editor):
    rgb = make_clip(5, 40, 56).astype(np.uint16) * 257
    alpha = np.random.default_rng(2).integers(0, 65536, (5, 40, 56, 1), dtype=np.uint64).astype(np.uint16)
    plate = np.concatenate([rgb, alpha], axis=-1)
    matte = box_matte(5, 40, 56, 12, 18, 16, 20)
    out = editor.edit(EditRequest(plate, matte, "a red ball", SETTINGS)).frames
    outside = np.stack([feather_matte(m, 3) for m in matte]) == 0
    assert out.dtype == np.uint16 and np.array_equal(out[outside], plate[outside])
    assert np.array_equal(out[..., 3], plate[..., 3])
    assert not np.array_equal(out[..., :3][~outside], plate[..., :3][~outside])


def test_linear_light_integers_use_the_transform_without_a_shoulder(editor):
    plate = (make_clip(5, 40, 56).astype(np.uint16) * 257) // 4  # dark-looking linear-light code values
    matte = box_matte(5, 40, 56, 12, 18, 16, 20)
    encoding = encoding_for(plate.dtype, "scene_linear")
    out = editor.edit(EditRequest(plate, matte, "a red ball", SETTINGS, encoding=encoding)).frames
    outside = np.stack([feather_matte(m, 3) for m in matte]) == 0
    assert out.dtype == np.uint16 and np.array_equal(out[outside], plate[outside])


def test_display_floats_out_of_range_are_refused_with_the_way_out(editor):
    plate = np.full((1, 16, 16, 3), 2.0, np.float32)
    with pytest.raises(InvalidRequest, match="SceneLinear"):
        editor.edit(EditRequest(plate, np.ones((1, 16, 16), np.float32), "x", SETTINGS))

"""The view transform between scene-linear plates and the model's display-referred pixels (kvlock.media.colour)."""

from __future__ import annotations

import numpy as np
import pytest

from kvlock.media.colour import (
    DEFAULT_CEILING,
    DisplayReferred,
    SceneLinear,
    encoding_for,
    shoulder,
    srgb_eotf,
    srgb_oetf,
    unshoulder,
)


def test_srgb_curve_matches_the_standard_and_inverts():
    linear = np.array([0.0, 0.0031308, 0.18, 0.5, 1.0])
    assert np.allclose(srgb_oetf(linear), [0.0, 0.0404500, 0.4613561, 0.7353570, 1.0], atol=1e-6)
    x = np.linspace(0.0, 16.0, 2001)
    assert np.allclose(srgb_eotf(srgb_oetf(x)), x, rtol=1e-12, atol=1e-15)


def test_view_transform_is_exactly_invertible_up_to_the_ceiling():
    enc = SceneLinear()
    linear = np.concatenate([np.linspace(0.0, 1.0, 1001), np.geomspace(1.0, DEFAULT_CEILING, 400)])
    shown = enc.to_model(linear)
    assert shown.dtype == np.float32 and shown.min() >= 0.0 and shown.max() <= 1.0
    assert np.all(np.diff(shown) >= 0)  # monotonic: brighter stays brighter
    back = enc.from_model(shown)
    assert np.allclose(back, linear, rtol=2e-5, atol=1e-6)  # float32 round trip of the model's input
    assert enc.to_model(np.array([DEFAULT_CEILING]))[0] == 1.0
    assert 0.89 < enc.to_model(np.array([1.0]))[0] < 0.91  # diffuse white sits below display white


def test_shoulder_is_identity_below_the_knee_and_smooth_at_it():
    top = float(srgb_oetf(np.float64(16.0)))
    below = np.linspace(0.0, 0.8, 101)
    assert np.array_equal(shoulder(below, 0.8, top), below)
    eps = 1e-6
    slope_above = (shoulder(np.array([0.8 + eps]), 0.8, top)[0] - 0.8) / eps
    assert abs(slope_above - 1.0) < 1e-4  # C¹ at the knee: no visible kink in the model's picture
    y = np.linspace(0.0, 1.0, 1001)
    assert np.allclose(shoulder(unshoulder(y, 0.8, top), 0.8, top), y, atol=1e-12)


def test_what_the_model_cannot_be_shown_is_clipped_never_nan():
    enc = SceneLinear()
    odd = np.array([-3.0, np.nan, np.inf, -np.inf, 1e6], np.float32)
    shown = enc.to_model(odd)
    assert np.isfinite(shown).all()
    assert list(shown) == [0.0, 0.0, 1.0, 0.0, 1.0]
    assert np.isfinite(enc.from_model(np.array([0.0, 1.0, 1.5, -0.5]))).all()


def test_encodings_for_each_kind_of_plate():
    assert encoding_for(np.uint8) == DisplayReferred(255.0)
    assert encoding_for(np.uint16).from_model(np.array([1.0]))[0] == 65535.0
    linear_tiff = encoding_for(np.uint16, "scene_linear")
    assert linear_tiff.ceiling == 1.0  # integers hold no highlights above 1.0: no shoulder at all
    codes = np.array([0, 1000, 30000, 65535], np.uint16)
    assert np.allclose(linear_tiff.from_model(linear_tiff.to_model(codes)), codes, atol=0.02)
    half = encoding_for(np.float16, "scene_linear", ceiling=64.0)
    assert isinstance(half, SceneLinear) and half.ceiling == 64.0
    with pytest.raises(ValueError, match="transfer"):
        encoding_for(np.float32, "log")
    with pytest.raises(ValueError, match="ceiling"):
        SceneLinear(ceiling=0.5)

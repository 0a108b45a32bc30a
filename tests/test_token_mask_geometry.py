"""Matte → token mask pooling, temporal windows, cross-fade weights and feathering, on hand-made data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kvlock.compositing import composite_frame, feather_matte
from kvlock.geometry import crossfade_weights, grid_size, matte_box, temporal_windows
from kvlock.token_mask import Compression, build_token_mask, temporal_window_max

WAN = Compression(vae_t=4, vae_s=8, patch=(1, 2, 2))


def test_temporal_pooling_keeps_frame_zero_alone_then_windows_of_four():
    matte = torch.zeros(9, 1, 1)
    matte[0] = 0.2
    matte[3] = 0.7  # window 1 covers frames 1–4
    matte[8] = 1.0  # window 2 covers frames 5–8
    assert temporal_window_max(matte, 4).flatten().tolist() == pytest.approx([0.2, 0.7, 1.0])
    with pytest.raises(ValueError):
        temporal_window_max(torch.zeros(8, 1, 1), 4)


def test_a_single_touching_pixel_makes_its_token_foreground():
    matte = torch.zeros(5, 64, 64)
    matte[2, 17, 40] = 0.01  # latent frame 1, latent cell (2, 5), token (1, 2)
    masks = build_token_mask(matte, WAN)
    assert masks.grid.shape == (2, 4, 4)
    assert masks.grid.sum() == 1 and bool(masks.grid[1, 1, 2])
    assert masks.flat.nonzero().item() == 1 * 16 + 1 * 4 + 2  # (frame, row, column) order
    assert masks.latent.shape == (2, 8, 8) and masks.latent.sum() == 4


def test_dilation_grows_in_tokens_and_soft_mask_stays_inside_foreground_tokens():
    matte = torch.zeros(5, 64, 64)
    matte[:, 24:40, 24:40] = 1.0
    plain = build_token_mask(matte, WAN)
    grown = build_token_mask(matte, WAN, dilate=1)
    assert grown.grid.sum() > plain.grid.sum()
    assert bool((grown.grid | ~plain.grid).all())  # grown is a superset
    assert float(plain.soft.max()) == 1.0
    assert bool((plain.soft[~plain.latent] == 0).all())


def test_temporal_windows_cover_the_clip_with_overlap():
    assert temporal_windows(10, 17, 8) == [(0, 10)]
    windows = temporal_windows(40, 17, 8)
    assert windows[0] == (0, 17) and windows[-1] == (23, 40)
    covered = np.zeros(40, bool)
    for a, b in windows:
        covered[a:b] = True
    assert covered.all()


def test_crossfade_weights_sum_to_one_and_ramp():
    windows = temporal_windows(40, 17, 8)
    weights = crossfade_weights(windows, 40)
    total = np.zeros(40)
    for (a, b), w in zip(windows, weights, strict=True):
        total[a:b] += w
    assert np.allclose(total, 1.0)
    assert weights[0][0] == 1.0 and weights[0][-1] < 0.5 and weights[1][0] < 0.5


def test_grid_size_is_a_multiple_near_the_area():
    h, w = grid_size(562, 1000, 480 * 832, 16)
    assert h % 16 == 0 and w % 16 == 0
    assert abs(h * w - 480 * 832) / (480 * 832) < 0.05
    assert abs(w / h - 1000 / 562) < 0.06


def test_matte_box_grows_by_margin_and_clamps_to_frame():
    matte = np.zeros((3, 100, 200), bool)
    matte[1, 40:60, 190:200] = True
    box = matte_box(matte, 0.5, 4, 100, 200)
    assert (box.top, box.height) == (30, 40)
    assert box.left + box.width == 200 and box.left == 185


def test_feather_is_one_on_matte_and_zero_far_away():
    matte = np.zeros((40, 40), np.float32)
    matte[15:25, 15:25] = 1
    f = feather_matte(matte, 3)
    assert (f[15:25, 15:25] == 1).all()
    assert f[0, 0] == 0 and 0 < f[13, 20] < 1


def test_composite_copies_source_where_weight_is_zero():
    src = np.random.default_rng(0).integers(0, 65535, (8, 8, 3), dtype=np.uint16)
    edited = np.full((8, 8, 3), 123.4, np.float32)
    weight = np.zeros((8, 8), np.float32)
    weight[2:4, 2:4] = 1.0
    out = composite_frame(src, edited, weight)
    assert out.dtype == np.uint16
    mask = weight == 0
    assert np.array_equal(out[mask], src[mask])
    assert (out[2:4, 2:4] == 123).all()

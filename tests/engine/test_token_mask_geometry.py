"""Matte → token mask pooling, temporal windows and their noise, crop boxes and compositing, on hand-made
data."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from kvlock.editing.compositing import composite_frame, feather_matte, handover_weight, inner_ramp, with_source_detail
from kvlock.editing.geometry import (
    MAX_UPSCALE,
    Box,
    crop_frames,
    crop_geometry,
    first_slot,
    grid_size,
    matte_box,
    temporal_windows,
)
from kvlock.errors import SettingsError
from kvlock.lock.noise import NoiseField
from kvlock.lock.token_mask import Compression, build_token_mask, latent_touch_mask, temporal_window_max

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


def _check_plan(windows: list[tuple[int, int]], total: int, window: int, overlap: int, step: int) -> None:
    assert windows[0][0] == 0 and windows[-1][1] == total
    covered = np.zeros(total, int)
    for a, b in windows:
        assert a % step == 0 and 0 < b - a <= window
        covered[a:b] += 1
    assert (covered >= 1).all()  # every frame (a frame in several windows is made by the first, read by the rest)
    strides = []
    for (a0, b0), (a1, b1) in itertools.pairwise(windows):
        assert b0 - a1 >= max(1, overlap)  # the overlap asked for, and a lead-in of one frame at least
        assert b1 > b0  # every window makes new frames
        strides.append(a1 - a0)
    assert not strides or max(strides) - min(strides) <= step  # spread evenly


@pytest.mark.parametrize(("window", "step"), [(17, 4), (81, 4), (49, 4), (161, 8), (13, 4)])
def test_temporal_windows_start_on_latent_slots_overlap_enough_and_spread_evenly(window, step):
    for total in range(1, 4 * window):
        for overlap in (None, 0, 1, window // 2, window - step):
            windows = temporal_windows(total, window, overlap, step)
            wanted = min(8, window - step) if overlap is None else overlap
            _check_plan(windows, total, window, wanted, step)


def test_the_issue_s_clip_is_planned_evenly_with_lead_ins_of_two_latent_windows():
    # 40 frames, 17-frame windows: four evenly spread windows, overlaps of 9 (frame 0 and two latent windows)
    assert temporal_windows(40, 17, None, 4) == [(0, 17), (8, 25), (16, 33), (24, 40)]
    assert temporal_windows(40, 17, 5, 4) == [(0, 17), (12, 29), (24, 40)]  # a shorter lead-in, fewer windows
    assert temporal_windows(10, 17, 8, 4) == [(0, 10)]
    assert temporal_windows(25, 17, 8, 4) == [(0, 17), (8, 25)]
    with pytest.raises(SettingsError, match="no new frames"):
        temporal_windows(40, 17, 16, 4)


def test_window_latents_are_contiguous_slots_of_the_clip():
    """Latent j ≥ 1 of a window starting at 4m holds the same frames as clip slot m + j; latent 0 (frame 4m
    alone) lies in slot m."""
    total = 41
    index = torch.arange(total, dtype=torch.float32)[:, None, None]
    clip_max = temporal_window_max(index, 4)  # slot n holds frames 4n − 3 … 4n: its max is 4n
    clip_min = -temporal_window_max(-index, 4)
    for start, _ in temporal_windows(total, 17, None, 4):
        m = first_slot(start, 4)
        frames = index[start : start + 17]
        if frames.shape[0] < 17:
            continue
        w_max, w_min = temporal_window_max(frames, 4), -temporal_window_max(-frames, 4)
        assert torch.equal(w_max[1:], clip_max[m + 1 : m + 5]) and torch.equal(w_min[1:], clip_min[m + 1 : m + 5])
        assert clip_min[m] <= w_max[0] <= clip_max[m]
    with pytest.raises(ValueError):
        first_slot(6, 4)


def test_noise_field_gives_shared_slots_the_same_noise_and_one_window_the_pipeline_s_noise():
    shape = (1, 16, 5, 6, 10)
    field = NoiseField(seed=3, slots=8)
    first, second = field.window(shape, 0), field.window(shape, 3)
    assert torch.equal(first[:, :, 3:5], second[:, :, 0:2])  # slots 3 and 4 are in both windows
    assert not torch.equal(first[:, :, 0:2], second[:, :, 0:2])
    alone = NoiseField(seed=3, slots=5).window(shape, 0)
    assert torch.equal(alone, torch.randn(shape, generator=torch.Generator("cpu").manual_seed(3)))
    with pytest.raises(ValueError):
        field.window(shape, 4)


def test_token_mask_pools_a_source_resolution_matte_exactly_to_the_latent_grid():
    """A matte on exactly latent cells 2–3 of an 8-cell grid over 120 source pixels (15 per cell) marks those
    cells only; resampling it to the 64-pixel model grid first (bilinear, then > 0) also marks cells 1 and 4."""
    matte = torch.zeros(1, 120, 120)
    matte[:, 30:60, 30:60] = 1.0
    touch = latent_touch_mask(matte, WAN, latent_size=(8, 8))[0]
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:4, 2:4] = True
    assert torch.equal(touch, expected)
    resampled = torch.nn.functional.interpolate(matte[None], size=(64, 64), mode="bilinear", antialias=True)[0]
    assert latent_touch_mask(resampled, WAN)[0].sum() > expected.sum()  # the growth the exact pooling avoids
    one_pixel = torch.zeros(1, 120, 120)
    one_pixel[0, 44, 45] = 0.01  # straddles no edge: cell (2, 3)
    assert latent_touch_mask(one_pixel, WAN, latent_size=(8, 8))[0].nonzero().tolist() == [[2, 3]]
    masks = build_token_mask(matte, WAN, latent_size=(8, 8))
    assert masks.grid.shape == (1, 4, 4) and masks.grid.sum() == 1 and bool(masks.grid[0, 1, 1])


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


@pytest.mark.parametrize(
    ("frame", "near", "size"),
    [
        ((1080, 1920), Box(500, 900, 60, 40), (480, 832)),  # small subject, user grid: pad, and 2× at most
        ((1080, 1920), Box(100, 100, 400, 90), (256, 256)),  # tall box, square grid: widened, not squashed
        ((1080, 1920), Box(500, 900, 60, 40), (None, None)),  # the model's own grid
        ((1080, 1920), Box(0, 1700, 300, 220), (None, 512)),  # at the frame's corner, one side given
    ],
)
def test_crop_box_keeps_the_grid_s_aspect_holds_the_matte_and_bounds_upscaling(frame, near, size):
    frame_h, frame_w = frame
    box, gh, gw = crop_geometry(near, frame_h, frame_w, area=480 * 832, multiple=16, size=size)
    assert gh % 16 == 0 and gw % 16 == 0
    assert size[0] in (None, gh) and size[1] in (None, gw)
    assert abs(box.width / box.height - gw / gh) <= 1.0 / min(box.height, box.width)  # padded, not stretched
    assert gh / box.height <= MAX_UPSCALE and gw / box.width <= MAX_UPSCALE
    assert box.top <= near.top and box.left <= near.left  # the matte's box is inside
    assert box.top + box.height >= near.top + near.height and box.left + box.width >= near.left + near.width
    assert box.top >= 0 and box.left >= 0
    assert box.top + box.height <= frame_h and box.left + box.width <= frame_w


def test_crop_box_in_a_small_frame_shrinks_the_grid_or_repeats_the_edge():
    # the model's own grid: a 40×60 frame cannot give a 2× bound at 480×832, so the grid shrinks
    box, gh, gw = crop_geometry(Box(10, 10, 20, 20), 40, 60, area=480 * 832, multiple=16, size=(None, None))
    assert gh <= MAX_UPSCALE * box.height and gw <= MAX_UPSCALE * box.width
    assert abs(box.width / box.height - gw / gh) <= 1.0 / min(box.height, box.width)
    # a user grid wider than the frame allows: the box reaches past the frame, keeping the aspect
    box, gh, gw = crop_geometry(Box(10, 10, 20, 20), 40, 60, area=480 * 832, multiple=16, size=(64, 256))
    assert (gh, gw) == (64, 256) and box.width == 4 * box.height and box.left < 0
    frames = np.arange(40 * 60 * 3, dtype=np.int64).reshape(1, 40, 60, 3)
    crop = crop_frames(frames, box)
    assert crop.shape == (1, box.height, box.width, 3)
    inside = -box.left
    assert np.array_equal(crop[0, :, :inside], np.repeat(crop[0, :, inside : inside + 1], inside, axis=1))
    assert (crop_frames(frames[..., 0], box, pad="zero")[0, :, :inside] == 0).all()
    assert np.array_equal(crop_frames(frames, Box(5, 6, 10, 12)), frames[:, 5:15, 6:18])


def test_the_hand_over_ramps_evenly_across_the_lead_in_and_is_whole_after_it():
    assert [handover_weight(k, 9) for k in range(11)] == [(k + 1) / 10 for k in range(9)] + [1.0, 1.0]
    assert handover_weight(0, 0) == 1.0  # the first window has no lead-in
    steps = np.diff([0.0] + [handover_weight(k, 4) for k in range(5)])
    assert np.allclose(steps, 0.2)  # the round-trip error spread over context + 1 equal steps


def test_inner_ramp_is_zero_outside_and_at_the_edge_and_one_deep_inside():
    matte = np.zeros((40, 40), np.float32)
    matte[10:30, 10:30] = 1
    ramp = inner_ramp(matte, 4)
    assert (ramp[matte == 0] == 0).all()
    assert ramp[20, 20] == 1 and ramp[20, 14] == 1  # four pixels in
    assert 0 < ramp[20, 11] < ramp[20, 12] < ramp[20, 13] < 1
    assert math.isclose(float(ramp[20, 10]), 1 / 9, abs_tol=1e-6)  # the edge pixel itself: 5 of 9 columns
    full = np.ones((16, 16), np.float32)
    assert (inner_ramp(full, 4) == 1).all()  # the frame's edge is not the matte's edge


def test_feather_ring_shows_the_source_where_the_edit_matches_the_source_s_reconstruction():
    """The halo: in the ring, E equals the VAE's reconstruction R (nothing was edited there). Blending E
    shows R; blending the edit with the source's detail shows the source."""
    rng = np.random.default_rng(1)
    source = rng.integers(0, 255, (40, 40, 3)).astype(np.uint8)
    reconstruction = np.clip(source + rng.normal(0, 12, source.shape), 0, 255).astype(np.float32)
    matte = np.zeros((40, 40), np.float32)
    matte[12:28, 12:28] = 1
    edited = reconstruction.copy()
    edited[12:28, 12:28] = 200.0  # the new subject, inside the matte only
    weight = feather_matte(matte, 4)
    ring = (weight > 0) & (matte == 0)
    layer = with_source_detail(edited, reconstruction, source, inner_ramp(matte, 4), 255.0)
    out = composite_frame(source, layer, weight)
    assert np.array_equal(out[ring], source[ring])
    assert (out[16:24, 16:24] == 200).all()  # deep inside: the edit itself
    halo = composite_frame(source, edited, weight)
    assert not np.array_equal(halo[ring], source[ring])

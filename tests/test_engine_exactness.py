"""The exactness properties of DESIGN §6 on the tiny Wan model (CPU, float32) that concern the whole edit
(compositing, windows, seeds, the source's safety); the per-pass ones run for every family in
``test_families.py``."""

from __future__ import annotations

import numpy as np
import torch

from kvlock import EditRequest, EditSettings
from kvlock.compositing import feather_matte
from kvlock.token_mask import build_token_mask

from .conftest import box_matte, make_clip

PROMPT = "a red cube"


def _outside_feather(matte: np.ndarray, feather: int) -> np.ndarray:
    return np.stack([feather_matte(m, feather) for m in matte]) == 0


def _assert_background_exact(frames, matte, result, feather):
    outside = _outside_feather(matte, feather)
    assert outside.any() and (~outside).any()
    assert result.frames.shape == frames.shape and result.frames.dtype == frames.dtype
    assert np.array_equal(result.frames[outside], frames[outside])
    assert not np.array_equal(result.frames[~outside], frames[~outside])  # the edit changed the subject


def test_background_bit_exact_at_non_grid_size(editor):
    frames = make_clip(9, 562, 1000, seed=2)
    matte = box_matte(9, 562, 1000, 200, 300, 150, 220, drift=5)
    settings = EditSettings(steps=3, feather=6)
    result = editor.edit(EditRequest(frames, matte, PROMPT, settings))
    _assert_background_exact(frames, matte, result, 6)


def test_background_bit_exact_in_crop_to_matte_mode(editor):
    frames = make_clip(9, 300, 400, seed=3)
    matte = box_matte(9, 300, 400, 120, 150, 40, 50, drift=2)
    settings = EditSettings(steps=3, geometry="crop_to_matte")
    result = editor.edit(EditRequest(frames, matte, PROMPT, settings))
    _assert_background_exact(frames, matte, result, settings.feather)
    box = result.trace.windows[0].box
    assert box[2] < 300 and box[3] < 400  # a box around the subject, not the frame


def test_background_bit_exact_for_long_clips_in_windows(editor):
    frames = make_clip(40, 64, 96, seed=4)
    matte = box_matte(40, 64, 96, 16, 4, 24, 24, drift=1)
    settings = EditSettings(steps=2, window_overlap=6)
    result = editor.edit(EditRequest(frames, matte, PROMPT, settings))
    windows = result.trace.windows
    assert len(windows) >= 3 and windows[-1].end == 40
    _assert_background_exact(frames, matte, result, settings.feather)


def test_same_seed_same_output_and_another_seed_differs(editor):
    frames = make_clip(9, 64, 64, seed=5)
    matte = box_matte(9, 64, 64, 16, 16, 32, 32)
    runs = [editor.edit(EditRequest(frames, matte, PROMPT, EditSettings(steps=3, seed=s))) for s in (1, 1, 2)]
    assert np.array_equal(runs[0].frames, runs[1].frames)
    assert not np.array_equal(runs[0].frames, runs[2].frames)


def test_source_arrays_are_not_modified(editor):
    frames = make_clip(9, 64, 64, seed=6)
    matte = box_matte(9, 64, 64, 16, 16, 32, 32)
    before_f, before_m = frames.copy(), matte.copy()
    editor.edit(EditRequest(frames, matte, PROMPT, EditSettings(steps=2)))
    assert np.array_equal(frames, before_f) and np.array_equal(matte, before_m)


def test_latent_lock_returns_background_latents_to_the_source_exactly(editor):
    fam, pipe = editor.model.family, editor.model.pipe
    frames = make_clip(17, 64, 64, seed=8)
    matte = box_matte(17, 64, 64, 24, 8, 16, 16, drift=2)
    result = editor.edit(EditRequest(frames, matte, PROMPT, EditSettings(steps=4, alpha_fixed=0.5)))
    video = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 255.0 * 2.0 - 1.0
    with torch.no_grad():
        x0 = fam.encode_video(pipe, video)
    masks = build_token_mask(torch.from_numpy(matte), editor.model.compression)
    background = (~masks.latent)[None, None].expand_as(x0)
    assert background.any()
    assert torch.equal(result.latents[0][background], x0[background])
    assert not torch.allclose(result.latents[0][~background], x0[~background])

"""The exactness properties of docs/design.md §6 on the tiny Wan model (CPU, float32) that concern the whole edit
(compositing, windows, seeds, the source's safety); the per-pass ones run for every family in
``test_families.py``."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

import kvlock.editing.composer
import kvlock.editing.editor
import kvlock.editing.window
from kvlock import EditRequest, EditSettings
from kvlock.editing.compositing import feather_matte
from kvlock.lock.token_mask import build_token_mask

from ..support.clips import box_matte, make_clip

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


def test_crop_to_matte_with_a_user_size_pads_the_box_to_the_grid_s_aspect(editor):
    frames = make_clip(5, 200, 300, seed=12)
    matte = box_matte(5, 200, 300, 90, 140, 20, 24)
    settings = EditSettings(steps=1, geometry="crop_to_matte", height=32, width=64)
    result = editor.edit(EditRequest(frames, matte, PROMPT, settings))
    top, left, height, width = result.trace.windows[0].box
    assert result.trace.windows[0].model_size[1:] == (32, 64)
    assert abs(width / height - 2.0) <= 1.0 / height  # not stretched to 2:1
    assert 32 / height <= 2.0 and 64 / width <= 2.0  # upscaled 2× at most
    assert top <= 90 - 16 and left <= 140 - 16 and top + height >= 110 + 16 and left + width >= 164 + 16
    _assert_background_exact(frames, matte, result, settings.feather)


def test_background_bit_exact_for_long_clips_in_windows(editor):
    frames = make_clip(40, 64, 96, seed=4)
    matte = box_matte(40, 64, 96, 16, 4, 24, 24, drift=1)
    settings = EditSettings(steps=2)
    result = editor.edit(EditRequest(frames, matte, PROMPT, settings))
    # evenly spread on latent slots, lead-ins of two latent windows besides frame 0 (9 frames)
    windows = [(w.start, w.end, w.context) for w in result.trace.windows]
    assert windows == [(0, 17, 0), (8, 25, 9), (16, 33, 9), (24, 40, 9)]
    _assert_background_exact(frames, matte, result, settings.feather)


def _encode(editor, frames: np.ndarray) -> torch.Tensor:
    video = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 255.0 * 2.0 - 1.0
    with torch.no_grad():
        return editor.model.family.encode_video(editor.model.pipe, video)


def test_a_window_continues_from_the_previous_window_s_result_with_the_same_noise(editor, monkeypatch):
    """Window 2 (frames 12–28) sees frames 12–16 as window 1 made them, locked (its latents there are the
    encoding of that output), and its noise on the clip's latent slots 3–4 is window 1's noise there."""
    noises, seen = [], []
    sample, window_source = kvlock.editing.window.sample_takes, kvlock.editing.editor.window_source

    def spy(family, pipe, bank, x0, takes_noise, *args, **kwargs):
        noises.append(takes_noise[0].clone())
        return sample(family, pipe, bank, x0, takes_noise, *args, **kwargs)

    def spy_source(plan, source, made):
        seen.append(made[plan.start : plan.start + plan.context].copy())  # the output so far, there
        return window_source(plan, source, made)

    monkeypatch.setattr(kvlock.editing.window, "sample_takes", spy)
    monkeypatch.setattr(kvlock.editing.editor, "window_source", spy_source)
    frames = make_clip(29, 64, 64, seed=9)
    matte = box_matte(29, 64, 64, 20, 4, 24, 24, drift=1)
    result = editor.edit(EditRequest(frames, matte, PROMPT, EditSettings(steps=2, window_overlap=5)))
    assert [(w.start, w.context) for w in result.trace.windows] == [(0, 0), (12, 5)]
    lead_in = _encode(editor, seen[1])  # latent frames 0 and 1 of window 2
    assert torch.equal(result.latents[1][:, :, :2], lead_in)
    assert not torch.allclose(lead_in, _encode(editor, frames[12:17]), atol=1e-3)  # the edit, not the source
    assert torch.equal(noises[0][:, :, 3:5], noises[1][:, :, :2])
    assert not torch.equal(noises[0][:, :, :2], noises[1][:, :, :2])


def test_the_lead_in_hands_over_from_the_previous_result_to_the_window_s_own_in_a_ramp(editor, monkeypatch):
    """Frames 12–16 (window 2's lead-in of 5) are, inside the feathered matte, the previous result blended
    with window 2's composite at weights 1/6 … 5/6; from frame 17 on they are window 2's alone, and the
    background outside the feather stays the source's."""
    frames = make_clip(29, 64, 64, seed=9)
    matte = box_matte(29, 64, 64, 20, 4, 24, 24, drift=1)
    before, own = {}, {}
    add = kvlock.editing.composer.Composer.add

    def spy(self, plan, decoded, mattes=None, cancel=None, steps=0):
        if decoded is not None and plan.context:
            before.update({j: self.out[j].copy() for j in range(plan.start, plan.end)})
            alone = kvlock.editing.composer.Composer.__new__(kvlock.editing.composer.Composer)
            alone.__dict__.update(self.__dict__, out=self.out.copy())
            add(alone, dataclasses.replace(plan, context=0), decoded, mattes)  # this window's at full weight
            own.update({j: alone.out[j].copy() for j in range(plan.start, plan.end)})
        return add(self, plan, decoded, mattes, cancel, steps)

    monkeypatch.setattr(kvlock.editing.composer.Composer, "add", spy)
    result = editor.edit(EditRequest(frames, matte, PROMPT, EditSettings(steps=2, window_overlap=5)))
    assert sorted(before) == list(range(12, 29))
    for j in range(12, 17):
        weight = (j - 12 + 1) / 6
        assert not np.array_equal(before[j], own[j])  # the two results differ: there is something to hand over
        blend = (1 - weight) * before[j].astype(np.float64) + weight * own[j].astype(np.float64)
        assert np.abs(result.frames[j] - blend).max() <= 0.5 + 1e-3, j  # rounded once
    for j in range(17, 29):
        assert np.array_equal(result.frames[j], own[j])
    _assert_background_exact(frames, matte, result, EditSettings().feather)


def test_the_matte_is_pooled_onto_the_latent_grid_without_growing(editor):
    """120-pixel frames on a 64-pixel grid: latent cells of 15 source pixels. A matte on exactly cells 2–3
    is one token of 4 × 4 per latent frame; resampled to model size first it grew to 3 × 3 tokens."""
    frames = make_clip(5, 120, 120, seed=10)
    matte = box_matte(5, 120, 120, 30, 30, 30, 30)
    result = editor.edit(EditRequest(frames, matte, PROMPT, EditSettings(steps=1, height=64, width=64)))
    assert result.trace.windows[0].foreground_fraction == 1 / 16


def test_the_feather_ring_shows_the_source_plus_the_edit_s_change_not_the_vae_s_reconstruction(editor):
    """Outside the matte the edit's latents are the source's, so the decoded edit E there is the VAE's
    reconstruction R. In the ring the output may differ from the source only by the edit's change E − R."""
    frames = make_clip(9, 64, 64, seed=11)
    matte = box_matte(9, 64, 64, 20, 20, 20, 20)
    settings = EditSettings(steps=2, feather=4)
    result = editor.edit(EditRequest(frames, matte, PROMPT, settings, return_raw=True))
    with torch.no_grad():
        decoded = editor.model.family.decode_latents(editor.model.pipe, _encode(editor, frames))
    reconstruction = ((decoded[0].permute(1, 2, 3, 0).clamp(-1, 1) + 1) / 2).numpy() * 255.0
    edited, source = result.raw * 255.0, frames.astype(np.float32)
    weight = np.stack([feather_matte(m, 4) for m in matte])[..., None]
    ring = np.broadcast_to(((weight[..., 0] > 0) & (matte == 0))[..., None], source.shape)
    change = np.abs(result.frames.astype(np.float32) - source)
    assert (change[ring] <= (weight * np.abs(edited - reconstruction))[ring] + 0.5 + 1e-3).all()
    halo = weight * np.abs(reconstruction - source)  # what blending E itself would have added
    assert halo[ring].max() > 20


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

"""The exactness properties of DESIGN §6 on the tiny Wan model (CPU, float32)."""

from __future__ import annotations

import numpy as np
import torch

from kvlock import EditRequest, EditSettings
from kvlock.compositing import feather_matte
from kvlock.sampler import _Passes
from kvlock.tiny import TINY_DEFAULTS, build_tiny_wan
from kvlock.token_mask import build_token_mask

from .conftest import box_matte, make_clip

PROMPT, NEGATIVE = "a red cube", "blurry"


def test_alpha_zero_static_cfg_full_matte_reproduces_wan_pipeline(editor):
    frames = make_clip(17, 64, 64)
    matte = np.ones((17, 64, 64), np.float32)
    settings = EditSettings(alpha_fixed=0.0, guidance_form="static", steps=4, seed=7, negative_prompt=NEGATIVE)
    result = editor.edit(EditRequest(frames, matte, PROMPT, settings))
    assert any("covers every pixel" in w for w in result.warnings)

    reference = build_tiny_wan()  # a fresh pipeline with diffusers' own processors
    noise = torch.randn(result.latents[0].shape, generator=torch.Generator("cpu").manual_seed(7))
    common = dict(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        num_frames=17,
        height=64,
        width=64,
        num_inference_steps=4,
        guidance_scale=TINY_DEFAULTS.guidance,
        max_sequence_length=TINY_DEFAULTS.text_length,
    )
    latents = reference(latents=noise.clone(), output_type="latent", **common).frames
    assert torch.allclose(result.latents[0], latents, atol=1e-5, rtol=1e-5)
    video = reference(latents=noise.clone(), output_type="np", **common).frames[0]
    assert np.abs(result.frames.astype(np.float64) - video * 255.0).max() <= 0.5 + 1e-3


def _observe(editor, request):
    """Run an edit and collect, per step and layer, the K/V the source pass stored and the edit passes used."""
    captured, used = [], []
    bank = editor.bank

    def observer(layer, mode, key, value):
        if mode == "capture":
            captured.append((layer, key[:, bank.background_index].clone(), value[:, bank.background_index].clone()))
        elif mode in ("fuse", "foreground"):
            used.append((layer, mode, key.clone(), value.clone(), bank.background_index.clone()))

    bank.observer = observer
    try:
        result = editor.edit(request)
    finally:
        bank.observer = None
    return result, captured, used


def test_alpha_one_edit_passes_see_source_kv_exactly(editor):
    frames = make_clip(9, 64, 64)
    matte = box_matte(9, 64, 64, 16, 16, 24, 24, drift=1)
    for foreground_only in (False, True):
        settings = EditSettings(alpha_fixed=1.0, steps=3, foreground_only=foreground_only)
        _, captured, used = _observe(editor, EditRequest(frames, matte, PROMPT, settings))
        layers = len(captured) // 3
        assert layers == 2
        # cond + uncond per source pass: two passes, or (foreground-only, small matte) one batch of two
        assert sum(key.shape[0] for _, _, key, _, _ in used) == 2 * len(captured)
        passes_per_step = len(used) // 3 // layers
        assert passes_per_step == (1 if foreground_only else 2)
        for n, (layer, mode, key, value, bg) in enumerate(used):
            src_layer, k_src, v_src = captured[(n // (passes_per_step * layers)) * layers + n % layers]
            assert layer == src_layer
            n_bg = bg.numel()
            if mode == "fuse":
                k_bg, v_bg = key[:, bg], value[:, bg]
            else:  # foreground-only: cached background first, then the pass's own tokens
                assert mode == "foreground" and key.shape[1] > n_bg
                k_bg, v_bg = key[:, :n_bg], value[:, :n_bg]
            for row in range(key.shape[0]):
                assert torch.equal(k_bg[row : row + 1], k_src) and torch.equal(v_bg[row : row + 1], v_src)


def test_foreground_only_pass_matches_full_pass_on_foreground_tokens(editor):
    fam, pipe, bank = editor.model.family, editor.model.pipe, editor.bank
    matte = torch.from_numpy(box_matte(9, 64, 64, 8, 20, 20, 30, drift=2))
    masks = build_token_mask(matte, editor.model.compression)
    bank.background_index = masks.background_index
    passes = _Passes(fam, pipe, bank, masks)
    gen = torch.Generator("cpu").manual_seed(3)
    z_src, z = torch.randn(1, 16, 3, 8, 8, generator=gen), torch.randn(1, 16, 3, 8, 8, generator=gen)
    embeds = fam.encode_prompt(pipe, PROMPT, TINY_DEFAULTS.text_length)
    t = pipe.scheduler.timesteps[0] if len(pipe.scheduler.timesteps) else torch.tensor(500)
    with torch.no_grad():
        fill = passes.source(z_src, t, embeds)
        full = passes.edit("fuse", 1.0, z, t, embeds, fill)
        fg_only = passes.edit("foreground", 1.0, z, t, embeds, fill)
    bank.clear()
    region = masks.latent[None, None].expand_as(full)
    assert torch.allclose(full[region], fg_only[region], atol=1e-5, rtol=1e-4)
    assert torch.equal(fg_only[~region], fill[~region])


def test_foreground_only_edit_matches_full_edit(editor):
    frames = make_clip(9, 64, 64, seed=1)
    matte = box_matte(9, 64, 64, 20, 8, 20, 20, drift=3)
    results = [
        editor.edit(EditRequest(frames, matte, PROMPT, EditSettings(alpha_fixed=1.0, steps=4, foreground_only=f)))
        for f in (False, True)
    ]
    assert torch.allclose(results[0].latents[0], results[1].latents[0], atol=1e-4, rtol=1e-4)
    assert np.abs(results[0].frames.astype(int) - results[1].frames.astype(int)).max() <= 1
    assert {r.mode for r in results[1].trace.windows[0].steps} == {"foreground"}


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

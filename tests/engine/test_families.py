"""Every family through the same engine code path — Wan2.1, Wan2.2 A14B (two experts) and TI2V-5B, CogVideoX,
LTX-Video, HunyuanVideo 1.5: docs/design.md §6's exactness properties on tiny random-weight pipelines of each,
saved as diffusers folders and loaded like a user's checkpoint."""

from __future__ import annotations

import functools
import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

import kvlock.editing.window
from kvlock import Editor, EditRequest, EditSettings
from kvlock.editing.compositing import feather_matte
from kvlock.loading.catalog import list_models
from kvlock.lock.token_mask import build_token_mask
from kvlock.sampling.loop import Passes
from kvlock.world.tiny import TINY_DEFAULTS, build_tiny_wan
from kvlock.world.tiny_families import (
    TINY_A14B_DEFAULTS,
    TINY_COGVIDEOX_DEFAULTS,
    TINY_HUNYUAN15_DEFAULTS,
    TINY_LTX_DEFAULTS,
    TINY_TI2V_DEFAULTS,
    build_tiny_cogvideox,
    build_tiny_hunyuan15,
    build_tiny_ltx,
    build_tiny_wan22_a14b,
    build_tiny_wan22_ti2v,
)
from kvlock_bridge import ArrayClip, Params

from ..support.clips import box_matte, make_clip
from ..support.server_helpers import client, start, states, wait_for

PROMPT, NEGATIVE = "a red cube", "blurry"

CASES = {
    "wan": (build_tiny_wan, TINY_DEFAULTS),
    "cogvideox-5b-style": (lambda: build_tiny_cogvideox(rotary=True), TINY_COGVIDEOX_DEFAULTS),
    "cogvideox-2b-style": (lambda: build_tiny_cogvideox(rotary=False), TINY_COGVIDEOX_DEFAULTS),
    "cogvideox-dpm": (lambda: build_tiny_cogvideox(scheduler="dpm"), TINY_COGVIDEOX_DEFAULTS),
    "ltx": (build_tiny_ltx, TINY_LTX_DEFAULTS),
    "wan22-a14b": (build_tiny_wan22_a14b, TINY_A14B_DEFAULTS),
    "wan22-ti2v": (build_tiny_wan22_ti2v, TINY_TI2V_DEFAULTS),
    "hunyuan15": (build_tiny_hunyuan15, TINY_HUNYUAN15_DEFAULTS),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Each tiny pipeline saved as a diffusers folder with its working size in kvlock.json."""
    root = tmp_path_factory.mktemp("models")
    for name, (build, defaults) in CASES.items():
        build().save_pretrained(root / name)
        (root / name / "kvlock.json").write_text(json.dumps(asdict(defaults)))
    return root


@pytest.fixture(scope="module", params=list(CASES))
def case(request, folders):
    build, defaults = CASES[request.param]
    return request.param, Editor.from_pretrained(str(folders / request.param)), build, defaults


def latent_shape(editor: Editor, frames: int, height: int, width: int) -> tuple[int, ...]:
    c = editor.model.compression
    channels = editor.model.pipe.transformer.config.out_channels  # Hunyuan's input adds conditioning channels
    return (1, channels, (frames - 1) // c.vae_t + 1, height // c.vae_s, width // c.vae_s)


def reference_latents(name: str, pipe, noise: torch.Tensor, seed: int, **common) -> torch.Tensor:
    """The family's own diffusers pipeline from the same noise, returned as (B, C, F, H, W)."""
    if name == "wan22-a14b":  # the model's second guidance for its low-noise expert, passed as its card does
        return pipe(latents=noise.clone(), guidance_scale_2=TINY_A14B_DEFAULTS.guidance_2, **common).frames
    if name.startswith("wan"):
        return pipe(latents=noise.clone(), **common).frames
    if name == "hunyuan15":  # its guidance and prompt lengths are the pipeline's own (its guider, its tokenizers)
        drop = ("guidance_scale", "max_sequence_length")
        return pipe(latents=noise.clone(), **{k: v for k, v in common.items() if k not in drop}).frames
    if name.startswith("cogvideox"):
        generator = torch.Generator("cpu").manual_seed(seed + 1)  # what the engine gives a stochastic scheduler
        out = pipe(latents=noise.permute(0, 2, 1, 3, 4).clone(), generator=generator, **common).frames
        return out.permute(0, 2, 1, 3, 4) if common["output_type"] == "latent" else out
    _, _, f, h, w = noise.shape
    out = pipe(latents=pipe._pack_latents(noise.clone(), 1, 1), **common).frames
    return pipe._unpack_latents(out, f, h, w, 1, 1) if common["output_type"] == "latent" else out


def test_alpha_zero_static_cfg_full_matte_reproduces_the_family_pipeline(case):
    name, editor, build, d = case
    frames = make_clip(d.frames, d.height, d.width)
    matte = np.ones(frames.shape[:3], np.float32)
    settings = EditSettings(alpha_fixed=0.0, guidance_form="static", steps=4, seed=7, negative_prompt=NEGATIVE)
    result = editor.edit(EditRequest(frames, matte, PROMPT, settings))
    reference = build()  # a fresh pipeline with diffusers' own processors
    noise = torch.randn(result.latents[0].shape, generator=torch.Generator("cpu").manual_seed(7))
    common = dict(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        num_frames=d.frames,
        height=d.height,
        width=d.width,
        num_inference_steps=4,
        guidance_scale=d.guidance,
        max_sequence_length=d.text_length,
    )
    latents = reference_latents(name, reference, noise, 7, output_type="latent", **common)
    assert torch.allclose(result.latents[0], latents, atol=1e-5, rtol=1e-5)
    video = reference_latents(name, reference, noise, 7, output_type="np", **common)[0]
    assert np.abs(result.frames.astype(np.float64) - video * 255.0).max() <= 0.5 + 1e-3


def test_alpha_one_edit_passes_see_source_kv_exactly(case):
    _, editor, _, d = case
    frames = make_clip(9, d.height, d.width)
    matte = box_matte(9, d.height, d.width, d.height // 4, d.width // 4, d.height // 2, d.width // 3, drift=1)
    bank = editor.runtime.bank
    for foreground_only in (False, True):
        captured, used = [], []

        def observer(layer, mode, key, value, captured=captured, used=used):
            if mode == "capture":
                bg = bank.background_index
                captured.append((layer, key[:, bg].clone(), value[:, bg].clone()))
            elif mode in ("fuse", "foreground"):
                used.append((layer, mode, key.clone(), value.clone(), bank.background_index.clone()))

        bank.observer = observer
        try:
            settings = EditSettings(alpha_fixed=1.0, steps=3, foreground_only=foreground_only)
            editor.edit(EditRequest(frames, matte, PROMPT, settings))
        finally:
            bank.observer = None
        layers = len(captured) // 3
        assert layers == 2 and used
        # conditional and unconditional passes see each source pass: separately, or paired in one batch
        assert sum(key.shape[0] for _, _, key, _, _ in used) == 2 * len(captured)
        per_step = len(used) // 3
        assert [layer for layer, *_ in captured] == list(range(layers)) * 3
        for n, (layer, mode, key, value, bg) in enumerate(used):
            # the same step's source pass, same layer (the passes may run one after another or in lockstep)
            src_layer, k_src, v_src = captured[(n // per_step) * layers + layer]
            assert layer == src_layer
            if mode == "fuse":
                k_bg, v_bg = key[:, bg], value[:, bg]
            else:  # foreground-only: cached background first, then the pass's own tokens
                assert mode == "foreground" and key.shape[1] > bg.numel()
                k_bg, v_bg = key[:, : bg.numel()], value[:, : bg.numel()]
            for row in range(key.shape[0]):
                assert torch.equal(k_bg[row : row + 1], k_src) and torch.equal(v_bg[row : row + 1], v_src)


def test_foreground_only_pass_matches_full_pass_on_foreground_tokens(case):
    _, editor, _, d = case
    fam, pipe, bank = editor.model.family, editor.model.pipe, editor.runtime.bank
    matte = torch.from_numpy(box_matte(9, d.height, d.width, d.height // 4, d.width // 3, d.height // 2, d.width // 3))
    masks = build_token_mask(matte, editor.model.compression)
    assert 0 < masks.foreground_index.numel() < masks.flat.numel()
    bank.background_index = masks.background_index
    passes = Passes(fam, pipe, bank, masks, torch.device("cpu"))
    gen = torch.Generator("cpu").manual_seed(3)
    shape = latent_shape(editor, 9, d.height, d.width)
    z_src, z = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    embeds = fam.encode_prompt(pipe, PROMPT, d.text_length)
    t = fam.stepper(pipe, 4, z).timesteps[1]
    with torch.no_grad():
        fill = passes.source(z_src, t, embeds)
        full = passes.edit("fuse", 1.0, z, t, embeds, fill)
        fg_only = passes.edit("foreground", 1.0, z, t, embeds, fill)
        paired, _ = passes.edit_pair("foreground", 1.0, z, t, embeds, embeds, fill)
    bank.clear()
    region = masks.latent[None, None].expand_as(full)
    assert torch.allclose(full[region], fg_only[region], atol=1e-5, rtol=1e-4)
    assert torch.allclose(paired[region], fg_only[region], atol=1e-5, rtol=1e-4)
    assert torch.equal(fg_only[~region], fill[~region])


def test_source_pass_through_kv_lock_equals_the_model_s_own_forward(case):
    """Capturing K/V changes nothing: KV-Lock's processor reproduces the model's own attention."""
    _, editor, _, d = case
    fam, pipe, bank = editor.model.family, editor.model.pipe, editor.runtime.bank
    matte = torch.from_numpy(box_matte(9, d.height, d.width, 0, 0, d.height // 2, d.width // 2))
    bank.background_index = build_token_mask(matte, editor.model.compression).background_index
    z = torch.randn(latent_shape(editor, 9, d.height, d.width), generator=torch.Generator().manual_seed(4))
    embeds = fam.encode_prompt(pipe, PROMPT, d.text_length)
    t = fam.stepper(pipe, 4, z).timesteps[2]
    with torch.no_grad():
        own = fam.predict(pipe, z, t, embeds)
        with bank.pass_mode("capture"):
            captured = fam.predict(pipe, z, t, embeds)
    bank.clear()
    assert torch.allclose(own, captured, atol=1e-5, rtol=1e-5)


def test_foreground_only_edit_matches_full_edit(case):
    _, editor, _, d = case
    frames = make_clip(9, d.height, d.width, seed=1)
    matte = box_matte(9, d.height, d.width, d.height // 3, d.width // 8, d.height // 3, d.width // 3, drift=2)
    results = [
        editor.edit(EditRequest(frames, matte, PROMPT, EditSettings(alpha_fixed=1.0, steps=4, foreground_only=f)))
        for f in (False, True)
    ]
    assert torch.allclose(results[0].latents[0], results[1].latents[0], atol=1e-4, rtol=1e-4)
    assert np.abs(results[0].frames.astype(int) - results[1].frames.astype(int)).max() <= 1
    assert {r.mode for r in results[1].trace.windows[0].steps} == {"foreground"}


@pytest.mark.parametrize("alpha", [1.0, 0.5])
def test_lockstep_passes_equal_the_passes_one_after_another(case, monkeypatch, alpha):
    """The source pass and the edit passes block by block (one layer of K/V held) give the edit the passes
    give run one after the other, for every family that opens its forward at the blocks."""
    name, editor, _, d = case
    if not hasattr(editor.model.family, "stages"):
        pytest.skip(f"{name} runs its passes one after the other")
    frames = make_clip(9, d.height, d.width, seed=5)
    matte = box_matte(9, d.height, d.width, d.height // 3, d.width // 8, d.height // 3, d.width // 3, drift=2)
    request = EditRequest(frames, matte, PROMPT, EditSettings(alpha_fixed=alpha, steps=3, negative_prompt=NEGATIVE))
    lockstep = editor.edit(request)
    sample = kvlock.editing.window.sample_takes
    monkeypatch.setattr(kvlock.editing.window, "sample_takes", functools.partial(sample, interleave=False))
    sequential = editor.edit(request)
    assert {r.mode for r in lockstep.trace.windows[0].steps} == {"foreground" if alpha == 1 else "fuse"}
    assert torch.equal(lockstep.latents[0], sequential.latents[0])
    assert np.array_equal(lockstep.frames, sequential.frames)


def test_background_bit_exact_at_source_resolution(case):
    editor = case[1]
    frames = make_clip(9, 150, 250, seed=2)
    matte = box_matte(9, 150, 250, 40, 60, 60, 80, drift=3)
    result = editor.edit(EditRequest(frames, matte, PROMPT, EditSettings(steps=3, feather=4)))
    outside = np.stack([feather_matte(m, 4) for m in matte]) == 0
    assert result.frames.shape == frames.shape and result.frames.dtype == frames.dtype
    assert np.array_equal(result.frames[outside], frames[outside])
    assert not np.array_equal(result.frames[~outside], frames[~outside])
    assert {s.mode for s in result.trace.windows[0].steps} <= {"off", "fuse", "foreground"}


def test_latent_lock_returns_background_latents_to_the_source_exactly(case):
    """The stepper's last noise level is zero: background latents end as the source's, bit for bit."""
    _, editor, _, d = case
    fam, pipe = editor.model.family, editor.model.pipe
    frames = make_clip(d.frames, d.height, d.width, seed=8)
    matte = box_matte(d.frames, d.height, d.width, d.height // 3, d.width // 8, d.height // 3, d.width // 3, drift=1)
    result = editor.edit(EditRequest(frames, matte, PROMPT, EditSettings(steps=4, alpha_fixed=0.5)))
    video = torch.from_numpy(frames).permute(3, 0, 1, 2)[None].float() / 255.0 * 2.0 - 1.0
    with torch.no_grad():
        x0 = fam.encode_video(pipe, video)
    masks = build_token_mask(torch.from_numpy(matte), editor.model.compression)
    background = (~masks.latent)[None, None].expand_as(x0)
    assert background.any() and (~background).any()
    assert torch.equal(result.latents[0][background], x0[background])
    assert not torch.allclose(result.latents[0][~background], x0[~background])


def test_families_are_listed_with_their_names(folders):
    listed = {e.name: e for e in list_models([folders])}
    assert {listed[n].family for n in CASES if n.startswith("cogvideox")} == {"cogvideox"}
    assert listed["wan"].family == "wan"
    assert listed["ltx"].family == "ltx" and all(listed[n].status == "ok" for n in CASES)


def test_the_server_lists_a_family_folder_and_runs_an_edit_on_it(folders, tmp_path):
    app = start(tmp_path / "state", model_dirs=[str(folders)])
    try:
        c = client(app)
        models = {m.name: m for m in c.list_models()}
        assert models["ltx"].family == "ltx" and models["ltx"].loadable
        assert models["cogvideox-5b-style"].family == "cogvideox" and models["cogvideox-5b-style"].loadable
        frames = make_clip(9, 96, 96, seed=9)
        matte = (box_matte(9, 96, 96, 24, 24, 48, 40, drift=2) * 255).astype(np.uint8)
        params = Params("a red ball", model="ltx", settings={"steps": 2})
        c.submit(ArrayClip("Source", frames), ArrayClip("Matte", matte), params, job_id="on-ltx")
        wait_for(lambda: states(app)["on-ltx"] == "succeeded", timeout=120)
        trace = json.loads((app.store.folder("on-ltx") / "trace.json").read_text())
        assert trace["model"].endswith("ltx") and trace["windows"][0]["steps"]
        assert {m.name for m in c.list_models() if m.loaded} == {"ltx"}
    finally:
        app.stop(grace=0)

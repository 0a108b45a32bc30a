"""The GPU fast paths held to the reference path on the CPU: paired guidance passes, compiled blocks, offload
modes, the cropped feather and composite; and the memory planner's arithmetic and choices."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kvlock import EditRequest, EditSettings
from kvlock.editing.compositing import feather_matte, support_box
from kvlock.editing.editor import Editor
from kvlock.errors import SettingsError
from kvlock.execution.acceleration import (
    GIB,
    Acceleration,
    MemoryNeed,
    attention_backend_for,
    choose_memory_mode,
    estimate_need,
    transformer_shape,
)
from kvlock.execution.residency import Residency

from ..support.clips import box_matte, make_clip

PROMPT = "a red cube"


def _edit(editor: Editor, settings: EditSettings, **kwargs) -> object:
    frames = make_clip(9, 64, 64, seed=4)
    matte = box_matte(9, 64, 64, 16, 20, 20, 16, drift=1)
    return editor.edit(EditRequest(frames, matte, PROMPT, settings, **kwargs))


def test_paired_guidance_passes_match_separate_passes():
    settings = EditSettings(alpha_fixed=1.0, steps=4)
    paired = _edit(Editor.from_pretrained("tiny-random"), settings)
    separate = _edit(Editor.from_pretrained("tiny-random", acceleration=Acceleration(pair_guidance=False)), settings)
    assert {r.mode for r in paired.trace.windows[0].steps} == {"foreground"}
    assert paired.trace.execution["pair_guidance"] and not separate.trace.execution["pair_guidance"]
    assert torch.allclose(paired.latents[0], separate.latents[0], atol=1e-5, rtol=1e-5)


def test_compiled_blocks_match_eager_in_every_pass_kind():
    """aot_eager traces the blocks exactly as inductor would (graph breaks, guards) without C++ codegen."""
    import torch._dynamo

    eager = Editor.from_pretrained("tiny-random")
    compiled = Editor.from_pretrained("tiny-random", acceleration=Acceleration(compile="aot_eager"))
    try:
        assert compiled.execution["compile"] == "aot_eager"
        assert all(block._compiled_call_impl is not None for block in compiled.model.pipe.transformer.blocks)
        for settings in (
            EditSettings(alpha_fixed=1.0, steps=3),
            EditSettings(alpha_fixed=0.5, steps=3),
            EditSettings(alpha_fixed=1.0, steps=3, source_pass="background", source_refresh=2),
        ):
            a, b = _edit(eager, settings), _edit(compiled, settings)
            assert [r.mode for r in a.trace.windows[0].steps] == [r.mode for r in b.trace.windows[0].steps]
            assert torch.allclose(a.latents[0], b.latents[0], atol=1e-5, rtol=1e-5)
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize("mode", ["model_offload", "sequential_offload"])
def test_offload_modes_give_the_resident_result(mode):
    """On the CPU the weights do not move, but every hook and stage hand-over runs as on a GPU."""
    settings = EditSettings(alpha_fixed=1.0, steps=3)
    reference = _edit(Editor.from_pretrained("tiny-random"), settings)
    editor = Editor.from_pretrained("tiny-random")
    editor.runtime.residency = Residency(editor.model.pipe, torch.device("cpu"), mode)
    editor.runtime.residency.apply()
    result = _edit(editor, settings)
    assert torch.equal(result.latents[0], reference.latents[0])
    assert np.array_equal(result.frames, reference.frames)


def test_cropped_composite_equals_full_frame_composite(editor):
    settings = EditSettings(steps=3, feather=5)
    cropped = _edit(editor, settings)
    full = _edit(editor, settings, return_raw=True)  # full-frame outputs take the whole-frame path
    assert np.array_equal(cropped.frames, full.frames)
    assert set(cropped.trace.stage_seconds) == {"prompts", "encode", "denoise", "decode", "composite"}


def _feather_whole_frame(matte: np.ndarray, feather: int) -> np.ndarray:
    """The definition: grow by ``feather`` (max), soften by a (2·feather+1)² mean, never below the matte."""
    m = torch.from_numpy(matte.astype(np.float32))[None, None]
    if feather > 0:
        k = 2 * feather + 1
        grown = F.max_pool2d(m, k, stride=1, padding=feather)
        blurred = F.avg_pool2d(grown, k, stride=1, padding=feather, count_include_pad=False)
        m = torch.maximum(blurred, m)
    return m[0, 0].numpy()


def test_cropped_separable_feather_matches_its_definition():
    rng = np.random.default_rng(0)
    for trial in range(40):
        h, w = (int(x) for x in rng.integers(4, 90, 2))
        matte = np.zeros((h, w), np.float32)
        if trial % 4:
            top, left = int(rng.integers(0, h)), int(rng.integers(0, w))
            matte[top : top + int(rng.integers(1, 30)), left : left + int(rng.integers(1, 30))] = rng.random()
            matte[int(rng.integers(0, h)), int(rng.integers(0, w))] = 1.0
        for feather in (0, 1, 3, 6):
            got, want = feather_matte(matte, feather), _feather_whole_frame(matte, feather)
            assert np.array_equal(got > 0, want > 0)  # the bit-exact background depends on exactly this
            assert np.abs(got - want).max() <= 1e-5
    assert support_box(np.zeros((3, 3))) is None
    assert support_box(np.pad(np.ones((2, 3)), ((1, 4), (2, 0)))) == (slice(1, 3), slice(2, 5))


def test_memory_estimate_arithmetic(editor):
    pipe = editor.model.pipe
    layers, width, ffn = transformer_shape(pipe.transformer)
    assert ffn == pipe.transformer.config.ffn_dim
    need = estimate_need(pipe, 64, 64, tokens=100, background_fraction=0.5, dtype=torch.bfloat16)
    assert need.kv_cache == 2 * layers * 100 * 0.5 * width * 2  # K and V, every layer, bf16
    lockstep = estimate_need(pipe, 64, 64, tokens=100, background_fraction=0.5, dtype=torch.bfloat16, kv_layers=1)
    assert lockstep.kv_cache == 2 * 1 * 100 * 0.5 * width * 2  # one layer held at a time
    assert need.transformer == sum(p.numel() * p.element_size() for p in pipe.transformer.parameters()) + sum(
        b.numel() * b.element_size() for b in pipe.transformer.buffers()
    )
    assert need.activations > 0 and need.vae_work > 0 and 0 < need.largest_block < need.transformer


def test_memory_mode_is_the_fastest_that_fits():
    need = MemoryNeed(
        text_encoder=11 * GIB,
        transformer=3 * GIB,
        vae=GIB // 2,
        kv_cache=5 * GIB,
        activations=3 * GIB,
        vae_work=8 * GIB,
        largest_block=GIB // 10,
    )
    assert need.for_mode("resident") > need.for_mode("model_offload") > need.for_mode("sequential_offload")
    assert choose_memory_mode(need, 80 * GIB)[0] == "resident"
    assert choose_memory_mode(need, 24 * GIB)[0] == "model_offload"
    mode, reason = choose_memory_mode(need, 12 * GIB)
    assert mode == "sequential_offload" and "12.0 GiB" in reason
    mode, reason = choose_memory_mode(need, 4 * GIB)
    assert mode == "sequential_offload" and "may run out of memory" in reason


def test_acceleration_options_are_validated():
    with pytest.raises(SettingsError, match="memory must be one of"):
        Acceleration(memory="swap").validated()
    with pytest.raises(SettingsError, match="attention must be one of"):
        Acceleration(attention="fast").validated()
    with pytest.raises(SettingsError, match="memory_limit_gb"):
        Acceleration(memory_limit_gb=0).validated()
    with pytest.raises(SettingsError, match="needs a CUDA GPU"):
        attention_backend_for("cudnn", torch.device("cpu"))
    assert attention_backend_for("auto", torch.device("cpu")) is None
    cpu = Editor.from_pretrained("tiny-random", acceleration=Acceleration(memory="sequential_offload"))
    assert cpu.execution["memory"] == "resident"  # nothing to offload to on the CPU, and it says so


def test_compile_cache_is_kept_in_the_given_folder_unless_the_user_chose_one(tmp_path, monkeypatch):
    from kvlock.execution.acceleration import CACHE_VARIABLE, default_compile_cache, use_compile_cache

    monkeypatch.delenv(CACHE_VARIABLE, raising=False)
    folder = tmp_path / "cache" / "compile"
    assert use_compile_cache(folder) == str(folder)
    assert folder.is_dir() and (folder.stat().st_mode & 0o777) == 0o700
    assert __import__("os").environ[CACHE_VARIABLE] == str(folder)  # where inductor looks, from now on
    # a folder the user set in the environment wins over ours
    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path / "theirs"))
    assert use_compile_cache(tmp_path / "ours") == str(tmp_path / "theirs")
    assert not (tmp_path / "ours").exists()
    # the default survives a reboot: the user's cache folder, not /tmp
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_compile_cache() == tmp_path / "xdg" / "kvlock" / "compile"


def test_compile_cache_flag_reaches_the_engine():
    import argparse

    from kvlock_cli.acceleration import acceleration_from_args, add_acceleration_arguments

    parser = argparse.ArgumentParser()
    add_acceleration_arguments(parser, compile_default="auto")
    parser.add_argument("--device", default="cuda")
    assert acceleration_from_args(parser.parse_args(["--compile-cache", "/srv/k"])).compile_cache == "/srv/k"
    assert acceleration_from_args(parser.parse_args(["--compile-cache", "none"])).compile_cache is None
    default = acceleration_from_args(parser.parse_args([])).compile_cache
    assert default is not None and default.endswith("kvlock/compile")

"""Few-step, CFG-free models: a folder's kvlock.json lists a step-distilled model's noise levels and guidance 1;
the engine then runs Euler steps over exactly those levels, no unconditional pass, ω fixed at 1, and the lock's
control windows follow the step count."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import kvlock.sampling.loop
from kvlock import Editor, EditRequest, EditSettings, ModelLoadError
from kvlock.errors import SettingsError
from kvlock.settings import control_windows
from kvlock.world.tiny import TINY_DEFAULTS, build_tiny_wan

from ..support.clips import box_matte, make_clip

SIGMAS = [1.0, 0.75, 0.5, 0.25]


def few_step_folder(root, **extra):
    folder = root / "tiny-4step"
    build_tiny_wan().save_pretrained(folder)
    d = TINY_DEFAULTS
    card = {"height": d.height, "width": d.width, "frames": d.frames, "text_length": d.text_length}
    (folder / "kvlock.json").write_text(json.dumps({**card, "guidance": 1.0, "sigmas": SIGMAS, **extra}))
    return folder


@pytest.fixture(scope="module")
def editor(tmp_path_factory):
    return Editor.from_pretrained(str(few_step_folder(tmp_path_factory.mktemp("models"))))


def test_control_windows_keep_the_defaults_proportions_and_fit_the_steps():
    assert control_windows(50) == (10, 20)
    assert control_windows(4) == (2, 3)
    assert control_windows(8) == (2, 3)
    assert control_windows(30) == (6, 12)
    for steps in range(3, 200):
        window, kappa = control_windows(steps)
        assert 2 <= window < kappa <= steps  # the metric fills at least twice inside the control window


def test_a_cfg_free_step_distilled_model_is_diffusers_euler_sampling(editor):
    """α = 0, no background: the edit is the plain pipeline with an Euler scheduler over the same four levels
    and no guidance (diffusers skips the unconditional pass at guidance 1)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    d = TINY_DEFAULTS
    frames = make_clip(d.frames, d.height, d.width)
    matte = np.ones(frames.shape[:3], np.float32)
    result = editor.edit(EditRequest(frames, matte, "a red cube", EditSettings(method="no_lock", seed=7)))
    steps = result.trace.windows[0].steps
    assert [round(s.sigma, 6) for s in steps] == SIGMAS
    assert {s.omega for s in steps} == {1.0}
    reference = build_tiny_wan()
    scheduler = reference.scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)
    set_timesteps = scheduler.set_timesteps  # WanPipeline asks for a count; the levels are the model's
    scheduler.set_timesteps = lambda count, device=None: set_timesteps(sigmas=SIGMAS, device=device)
    noise = torch.randn(result.latents[0].shape, generator=torch.Generator("cpu").manual_seed(7))
    latents = reference(
        prompt="a red cube",
        latents=noise.clone(),
        num_frames=d.frames,
        height=d.height,
        width=d.width,
        num_inference_steps=4,
        guidance_scale=1.0,
        max_sequence_length=d.text_length,
        output_type="latent",
    ).frames
    assert torch.allclose(result.latents[0], latents, atol=1e-5, rtol=1e-5)


def test_the_lock_controls_alpha_at_four_steps_without_guidance_and_the_trace_says_so(editor, monkeypatch):
    seen = []
    guide = kvlock.sampling.loop.guide

    def watched(v_cond, v_uncond, *args):
        seen.append(v_uncond is None)
        return guide(v_cond, v_uncond, *args)

    monkeypatch.setattr(kvlock.sampling.loop, "guide", watched)
    d = TINY_DEFAULTS
    frames, matte = make_clip(d.frames, d.height, d.width), box_matte(d.frames, d.height, d.width, 16, 16, 40, 40)
    settings = EditSettings(method="kvlock", tau=1e-3, seed=3)
    result = editor.edit(EditRequest(frames, matte, "a red cube", settings))
    steps = result.trace.windows[0].steps
    assert seen == [True] * 4  # no unconditional pass at any step
    assert {s.omega for s in steps} == {1.0}  # ω stays ω0 = 1 even where the metric is high
    # κ = 3 of 4 steps controlled; the metric (W = 2) reads from the second of them on
    assert [s.h is not None for s in steps] == [False, False, True, True]
    assert (result.trace.settings["metric_window"], result.trace.settings["kappa"]) == (2, 3)
    assert "CFG-free" in result.trace.control and "W = 2, κ = 3" in result.trace.control
    assert "last 2 of 4 steps" in result.trace.control
    assert result.trace.schedule_source["kappa"] == "the engine's default for 4 steps"


def test_another_step_count_is_refused_never_silently_changed(editor):
    d = TINY_DEFAULTS
    frames = make_clip(d.frames, d.height, d.width)
    with pytest.raises(SettingsError, match="step-distilled for 4 steps"):
        editor.edit(EditRequest(frames, np.ones(frames.shape[:3], np.float32), "a red cube", EditSettings(steps=10)))


@pytest.mark.parametrize(
    "sigmas,steps,message",
    [
        ([0.5, 0.75], None, "falling"),
        ([1.0, 0.0], None, "falling within"),
        ([1.5, 0.5], None, "falling within"),
        ("fast", None, "list"),
        ([1.0, 0.5], 3, "steps is 3 but sigmas lists 2"),
    ],
)
def test_a_bad_list_of_noise_levels_is_refused_when_the_model_loads(tmp_path, sigmas, steps, message):
    extra = {"sigmas": sigmas} if steps is None else {"sigmas": sigmas, "steps": steps}
    with pytest.raises(ModelLoadError, match=message):
        Editor.from_pretrained(str(few_step_folder(tmp_path, **extra)))

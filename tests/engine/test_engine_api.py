"""The Editor API: bad input fails before model work, loading from folders, progress, cancel, strength, trace."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from kvlock import (
    EditCancelled,
    Editor,
    EditRequest,
    EditSettings,
    InvalidRequest,
    MatteError,
    ModelLoadError,
    SettingsError,
    UnsupportedDeviceError,
)
from kvlock.progress import StepProgress
from kvlock.settings import DEFAULT_TAU
from kvlock.world.tiny import build_tiny_wan

from ..support.clips import box_matte, make_clip

PROMPT = "a blue sphere"


@pytest.fixture()
def clip():
    return make_clip(9, 64, 64), box_matte(9, 64, 64, 16, 16, 24, 24)


@pytest.fixture()
def no_model_work(editor, monkeypatch):
    """Fail the test if anything reaches the VAE or the transformer."""

    def forbidden(*args, **kwargs):
        raise AssertionError("model work started before validation finished")

    monkeypatch.setattr(editor.model.family, "encode_video", forbidden)
    monkeypatch.setattr(editor.model.family, "encode_prompt", forbidden)
    return editor


@pytest.mark.parametrize(
    ("mutate", "error", "words"),
    [
        (lambda f, m: (f, np.zeros_like(m)), MatteError, "empty"),
        (lambda f, m: (f, m[:5]), MatteError, "5 frames"),
        (lambda f, m: (f, m[:, :32]), MatteError, "render the matte"),
        (lambda f, m: (f, np.where(m > 0, np.nan, 0).astype(np.float32)), MatteError, "NaN"),
        (lambda f, m: (f, m * 3.0), MatteError, "[0, 1]"),
        (lambda f, m: (f.astype(np.float32) / 255 * np.float32(np.nan), m), InvalidRequest, "NaN"),
        (lambda f, m: (f.astype(np.float32), m), InvalidRequest, "[0, 1]"),
        (lambda f, m: (f.astype(np.int64), m), InvalidRequest, "uint8"),
        (lambda f, m: (f[..., :2], m), InvalidRequest, "(T, H, W, 3)"),
    ],
)
def test_bad_pixels_fail_before_model_work(no_model_work, clip, mutate, error, words):
    frames, matte = mutate(*clip)
    with pytest.raises(error) as info:
        no_model_work.edit(EditRequest(frames, matte, PROMPT))
    assert words in str(info.value)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"steps": 0}, "steps"),
        ({"strength": 0.0}, "strength"),
        ({"tau": 0.0}, "tau"),
        ({"b": 0.5}, "b must be"),
        ({"method": "fixed_alpha=lots"}, "fixed_alpha"),
        ({"method": "fixed_alpha=1.5"}, "fixed alpha"),
        ({"method": "teleport"}, "unknown method"),
        ({"geometry": "stretch"}, "geometry"),
        ({"guidance": float("nan")}, "finite"),
        ({"steps": 2.5}, "whole number"),
        ({"feather": True}, "feather"),
    ],
)
def test_bad_settings_are_refused_where_they_are_made_so_no_edit_ever_sees_them(fields, words):
    with pytest.raises(SettingsError) as info:
        EditSettings(**fields)
    assert words in str(info.value)


def test_empty_prompt_fails_before_model_work(no_model_work, clip):
    with pytest.raises(InvalidRequest, match="prompt is empty"):
        no_model_work.edit(EditRequest(*clip, "  "))


def test_single_still_matte_is_repeated_with_a_warning(editor, clip):
    frames, matte = clip
    result = editor.edit(EditRequest(frames, matte[0], PROMPT, EditSettings(steps=2)))
    assert any("repeated it for every frame" in w for w in result.warnings)
    assert result.frames.shape == frames.shape


def test_unsupported_device_and_dtype_are_refused():
    with pytest.raises(UnsupportedDeviceError):
        Editor.from_pretrained("tiny", device="cpu", dtype=torch.float16)
    with pytest.raises(UnsupportedDeviceError):
        Editor.from_pretrained("tiny", dtype="int8")
    with pytest.raises(UnsupportedDeviceError):
        Editor.from_pretrained("tiny", device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UnsupportedDeviceError, match="no CUDA GPU"):
            Editor.from_pretrained("tiny", device="cuda")


def test_missing_or_wrong_model_folder_names_what_was_expected(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        Editor.from_pretrained(str(tmp_path / "nowhere"))
    with pytest.raises(ModelLoadError, match=r"model_index\.json"):
        Editor.from_pretrained(str(tmp_path))
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ModelLoadError, match="WanPipeline"):
        Editor.from_pretrained(str(tmp_path))
    (tmp_path / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "WanPipeline",
                "vae": ["diffusers", "AutoencoderKLWan"],
                "transformer": ["diffusers", "WanTransformer3DModel"],
            }
        )
    )
    with pytest.raises(ModelLoadError, match="missing component folder"):
        Editor.from_pretrained(str(tmp_path))


def test_loading_a_saved_folder_gives_the_same_edit(editor, clip, tmp_path):
    build_tiny_wan().save_pretrained(tmp_path / "tiny-wan")
    (tmp_path / "tiny-wan" / "kvlock.json").write_text(
        json.dumps({"height": 64, "width": 64, "frames": 17, "steps": 12, "text_length": 64})
    )
    loaded = Editor.from_pretrained(str(tmp_path / "tiny-wan"))
    settings = EditSettings(steps=3, seed=4)
    a = editor.edit(EditRequest(*clip, PROMPT, settings))
    b = loaded.edit(EditRequest(*clip, PROMPT, settings))
    # from_pretrained keeps the rotary tables in float32 where the in-memory build has float64: the same
    # model up to rounding, not bit for bit
    assert torch.allclose(a.latents[0], b.latents[0], atol=1e-4)
    # The random VAE's RMS norms divide by near-zero feature norms, so a 1e-6 latent difference can move a
    # decoded pixel by tens of levels; the decoders are compared on one latent instead of on the two edits.
    with torch.no_grad():
        same = [e.model.family.decode_latents(e.model.pipe, a.latents[0]) for e in (editor, loaded)]
    assert torch.allclose(same[0], same[1], atol=1e-5)


def test_progress_reports_every_step_and_cancel_stops_between_steps(editor, clip):
    events = []
    editor.edit(EditRequest(*clip, PROMPT, EditSettings(steps=5)), progress=events.append)
    assert [e.step for e in events] == [0, 1, 2, 3, 4]
    assert events[-1].eta_seconds == pytest.approx(0.0, abs=1e-9)
    assert all(isinstance(e, StepProgress) and not e.preview_png for e in events)  # previews only when asked
    assert {"sigma", "h", "alpha", "omega", "s_star", "seconds"} <= events[0].figures().keys()

    cancel = threading.Event()

    def stop_after_two(event):
        if event.step == 1:
            cancel.set()

    with pytest.raises(EditCancelled) as info:
        editor.edit(EditRequest(*clip, PROMPT, EditSettings(steps=5)), progress=stop_after_two, cancel=cancel)
    assert info.value.step == 2
    assert not editor.runtime.bank.keys  # nothing cached survives a cancelled job
    assert editor.edit(EditRequest(*clip, PROMPT, EditSettings(steps=2))).frames.shape == clip[0].shape


def test_strength_starts_from_the_noised_source(editor, clip):
    result = editor.edit(EditRequest(*clip, PROMPT, EditSettings(steps=8, strength=0.5)))
    steps = result.trace.windows[0].steps
    assert len(steps) == 4 and steps[0].sigma < 0.9


def test_baselines_change_only_their_knob(editor, clip):
    def run(method, **knobs):
        return editor.edit(EditRequest(*clip, PROMPT, EditSettings(steps=4, kappa=2, method=method, **knobs)))

    no_lock = run("no_lock").trace.windows[0].steps
    assert {s.alpha for s in no_lock} == {0.0} and {s.mode for s in no_lock} == {"off"}
    fixed = run("fixed_alpha=0.5").trace.windows[0].steps
    assert {s.alpha for s in fixed} == {0.5} and {s.mode for s in fixed} == {"fuse"}
    static = run("static_cfg").trace.windows[0].steps
    assert {s.omega for s in static} == {5.0} and {s.s_star for s in static} == {1.0}
    dynamic = run("kvlock", alpha_early=0.7).trace.windows[0].steps
    assert [s.alpha for s in dynamic[:2]] == [0.7, 0.7]  # α_early before the last κ steps
    assert all(s.omega >= 5.0 for s in dynamic)


def test_own_source_pass_for_uncond_runs_a_second_source_pass(editor, clip):
    sources = []
    bank = editor.runtime.bank
    bank.observer = lambda layer, mode, k, v: sources.append(mode) if mode == "capture" and layer == 0 else None
    try:
        editor.edit(EditRequest(*clip, PROMPT, EditSettings(steps=2, alpha_fixed=1.0, uncond_source="own")))
    finally:
        editor.runtime.bank.observer = None
    assert len(sources) == 4


def test_trace_serialises_and_plots(editor, clip, tmp_path):
    result = editor.edit(EditRequest(*clip, PROMPT, EditSettings(steps=3)))
    data = json.loads(result.trace.to_json())
    # tiny-random was never calibrated: the documented default, and the trace says so
    assert data["settings"]["tau"] == DEFAULT_TAU and "never calibrated" in data["tau_source"]
    assert len(data["windows"][0]["steps"]) == 3
    assert set(data["windows"][0]["steps"][0]) >= {"sigma", "h", "alpha", "omega", "s_star", "seconds"}
    png = result.trace.plot(tmp_path / "trace.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_region_output_is_straight_rgba_with_feathered_alpha(editor, clip):
    frames, matte = clip
    result = editor.edit(EditRequest(frames, matte, PROMPT, EditSettings(steps=2), return_region=True))
    region = result.region
    assert region.shape == (*frames.shape[:3], 4)
    assert (region[..., 3][matte > 0] == 255).all() and (region[..., 3][0, 0, 0] == 0)

"""What the 2025–26 checkpoints add beyond the properties every family holds (tests/engine/test_families.py):
Wan2.2 A14B's experts switch where diffusers switches them and take their own guidance; the memory plan and
model offload hold one expert at a time; and a folder of Wan2.2 or HunyuanVideo 1.5 in the wrong shape is
named for what it is, with the command that fetches the right one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kvlock import Editor, EditRequest, EditSettings
from kvlock.editing.job import guidance_per_expert
from kvlock.errors import SettingsError
from kvlock.execution.acceleration import estimate_need
from kvlock.execution.residency import Residency
from kvlock.families.base import ModelDefaults
from kvlock.world.tiny_families import TINY_A14B_DEFAULTS, build_tiny_wan22_a14b

from ..support.clips import make_clip

KVLOCK = [str(Path(sys.executable).with_name("kvlock"))]


@pytest.fixture(scope="module")
def a14b(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("a14b") / "Wan2.2-T2V-A14B-Diffusers"
    build_tiny_wan22_a14b().save_pretrained(folder)
    (folder / "kvlock.json").write_text(json.dumps({"height": 64, "width": 64, "frames": 9, "text_length": 64}))
    return folder


def calls_per_step(pipe, run) -> list[str]:
    """Which of the pipeline's transformers ran, call by call (forward hooks: the model's code untouched)."""
    seen = []
    hooks = [
        getattr(pipe, name).register_forward_pre_hook(lambda *_, name=name: seen.append(name))
        for name in ("transformer", "transformer_2")
    ]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def test_the_experts_take_turns_at_the_step_diffusers_switches_them(a14b):
    steps, frames = 12, make_clip(9, 64, 64)
    reference = build_tiny_wan22_a14b()
    diffusers_calls = calls_per_step(
        reference,
        lambda: reference(
            prompt="a red cube",
            num_frames=9,
            height=64,
            width=64,
            num_inference_steps=steps,
            max_sequence_length=64,
            output_type="latent",
        ),
    )
    editor = Editor.from_pretrained(str(a14b))
    matte = torch.ones(9, 64, 64).numpy()  # every token edited: plain passes, one pair per step as diffusers runs
    engine_calls = calls_per_step(
        editor.model.pipe,
        lambda: editor.edit(EditRequest(frames, matte, "a red cube", EditSettings(steps=steps, method="no_lock"))),
    )
    assert engine_calls == diffusers_calls and len(diffusers_calls) == 2 * steps
    assert {"transformer", "transformer_2"} == set(diffusers_calls)  # the switch lies inside the schedule


def test_each_expert_guides_with_its_own_scale_and_the_trace_says_which_ran(a14b):
    editor = Editor.from_pretrained(str(a14b))
    matte = torch.zeros(9, 64, 64)
    matte[:, 16:48, 16:40] = 1
    settings = EditSettings(steps=8, method="static_cfg", alpha_fixed=0.0)
    steps = editor.edit(EditRequest(make_clip(9, 64, 64), matte.numpy(), "x", settings)).trace.windows[0].steps
    experts = [s.expert for s in steps]
    assert experts == sorted(experts) and set(experts) == {0, 1}  # high noise first, one hand-over
    assert {s.omega for s in steps if s.expert == 0} == {TINY_A14B_DEFAULTS.guidance}
    assert {s.omega for s in steps if s.expert == 1} == {TINY_A14B_DEFAULTS.guidance_2}


def test_the_low_noise_guidance_follows_the_request_then_diffusers_rule_then_the_model():
    model = ModelDefaults(height=8, width=8, frames=1, guidance=4.0, guidance_2=3.0)
    assert guidance_per_expert(EditSettings(), model, 2) == (4.0, 3.0)
    assert guidance_per_expert(EditSettings(guidance=6.0), model, 2) == (6.0, 6.0)  # as WanPipeline: the same
    assert guidance_per_expert(EditSettings(guidance=6.0, guidance_2=2.0), model, 2) == (6.0, 2.0)
    assert guidance_per_expert(EditSettings(), model, 1) == (4.0,)
    with pytest.raises(SettingsError, match="one transformer"):  # never silently ignored
        guidance_per_expert(EditSettings(guidance_2=2.0), model, 1)


def test_memory_plan_counts_both_experts_resident_and_one_under_model_offload():
    pipe = build_tiny_wan22_a14b()
    experts = [pipe.transformer, pipe.transformer_2]
    both = estimate_need(pipe, 64, 64, 64, 0.9, torch.float32, 1, experts)
    one = estimate_need(pipe, 64, 64, 64, 0.9, torch.float32, 1, experts[:1])
    size = sum(p.numel() * p.element_size() for p in pipe.transformer_2.parameters())
    assert both.for_mode("resident") - one.for_mode("resident") >= size
    assert both.for_mode("model_offload") == one.for_mode("model_offload")


def test_model_offload_holds_one_expert_on_the_device_and_swaps_once_per_hand_over(monkeypatch):
    pipe = build_tiny_wan22_a14b()
    device = torch.device("cpu")  # the only device here: which expert is sent where is what is checked
    moves = []
    for name in ("transformer", "transformer_2"):
        module = getattr(pipe, name)
        monkeypatch.setattr(module, "to", lambda target, name=name: moves.append((name, str(target))))
    residency = Residency(pipe, device, "model_offload", ("transformer", "transformer_2"))
    residency.apply()
    moves.clear()
    with residency.hold("transformer"):
        assert moves == [("transformer", "cpu")]  # the active expert to the device, the other left on the host
        moves.clear()
        residency.use_expert(1)
        assert moves == [("transformer", "cpu"), ("transformer_2", "cpu")]  # off, then on: one swap
        residency.use_expert(1)
    assert residency.swaps == 1 and len(moves) == 2


def _status(tmp_path: Path, folder: Path) -> str:
    env = {**os.environ, "KVLOCK_CONFIG": str(tmp_path / "none.toml")}
    done = subprocess.run(
        [*KVLOCK, "models", "--model-dir", str(folder), "--json"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return " | ".join(e["status"] for e in json.loads(done.stdout) if e["location"] != "embedded")


def test_folders_of_the_wrong_shape_are_named_with_the_command_that_fetches_the_right_one(tmp_path, a14b):
    high_low = tmp_path / "Wan2.2-T2V-A14B"
    for part in ("high_noise_model", "low_noise_model"):
        (high_low / part).mkdir(parents=True)
        (high_low / part / "config.json").write_text(json.dumps({"_class_name": "WanModel", "model_type": "t2v"}))
    status = _status(tmp_path, high_low)
    assert "original Wan2.2 A14B release layout" in status
    assert "hf download Wan-AI/Wan2.2-T2V-A14B-Diffusers" in status
    ti2v = tmp_path / "Wan2.2-TI2V-5B"
    ti2v.mkdir()
    (ti2v / "Wan2.2_VAE.pth").write_bytes(b"\0")
    assert "hf download Wan-AI/Wan2.2-TI2V-5B-Diffusers" in _status(tmp_path, ti2v)
    hunyuan = tmp_path / "HunyuanVideo-1.5"
    (hunyuan / "transformer" / "480p_t2v").mkdir(parents=True)
    (hunyuan / "upsampler").mkdir()
    assert "hf download hunyuanvideo-community/HunyuanVideo-1.5-Diffusers-480p_t2v" in _status(tmp_path, hunyuan)
    no_second = tmp_path / "no-second"
    (no_second).mkdir()
    for entry in a14b.iterdir():
        if entry.name != "transformer_2":
            target = no_second / entry.name
            target.symlink_to(entry, target_is_directory=entry.is_dir())
    status = _status(tmp_path, no_second)
    assert "missing component folder transformer_2/" in status
    assert "hf download Wan-AI/Wan2.2-T2V-A14B-Diffusers" in status
    image = tmp_path / "Wan2.2-I2V-A14B-Diffusers"
    image.mkdir()
    (image / "model_index.json").write_text(json.dumps({"_class_name": "WanImageToVideoPipeline"}))
    status = _status(tmp_path, image)
    assert "image-to-video" in status and "hf download Wan-AI/Wan2.2-T2V-A14B-Diffusers" in status
    assert _status(tmp_path, a14b) == "ok"

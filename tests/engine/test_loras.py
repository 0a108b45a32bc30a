"""LoRAs through the engine: the same output as diffusers' own pipeline with the same LoRA, the background still
bit-exact, bad LoRAs refused before any step, LoRAs switched between edits on one loaded model (and, compiled,
hotswapped without a recompilation), and a LoRA's kvlock.json laid over the model's defaults."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

from kvlock import Editor, EditRequest, EditSettings
from kvlock.editing.compositing import feather_matte
from kvlock.errors import LoraError, LoraUnusableError, SettingsError
from kvlock.execution.acceleration import Acceleration
from kvlock.loading.lora_catalog import LoraCatalog
from kvlock.world.tiny import TINY_DEFAULTS, build_tiny_wan
from kvlock.world.tiny_families import TINY_A14B_DEFAULTS, build_tiny_wan22_a14b

from ..support.clips import box_matte, make_clip
from ..support.loras import save_expert_lora, save_lora, write_safetensors_header

PROMPT, NEGATIVE = "a red cube", "blurry"
D = TINY_DEFAULTS


@pytest.fixture(scope="module")
def lora_root(tmp_path_factory):
    """A tiny Wan model folder, and a folder of LoRAs for it: two good ones and one of each bad kind."""
    root = tmp_path_factory.mktemp("loras")
    build_tiny_wan().save_pretrained(root / "wan")
    (root / "wan" / "kvlock.json").write_text(json.dumps(asdict(D)))
    loras = root / "loras"
    transformer = build_tiny_wan().transformer
    save_lora(transformer, loras, "style", rank=4, seed=1, alpha=8)
    save_lora(transformer, loras, "other", rank=2, seed=3)
    save_lora(wide_wan_transformer(), loras, "wide", rank=4, seed=5)  # made for a wider Wan
    # not a LoRA: a full checkpoint's weights
    write_safetensors_header(loras / "full.safetensors", {"blocks.0.attn1.to_q.weight": ("F32", [24, 24])})
    # A and B that disagree on the rank
    write_safetensors_header(
        loras / "badrank.safetensors",
        {
            "transformer.blocks.0.attn1.to_q.lora_A.weight": ("F32", [4, 24]),
            "transformer.blocks.0.attn1.to_q.lora_B.weight": ("F32", [24, 3]),
        },
    )
    (loras / "pickled.safetensors").write_bytes(b"PK\x03\x04" + bytes(64))  # a .pt zip under a safetensors name
    return root


def wide_wan_transformer():
    """A Wan transformer wider than the tiny one: the same layer names, other sizes."""
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=32,
        ffn_dim=48,
        num_layers=2,
        rope_max_seq_len=32,
    )


@pytest.fixture(scope="module")
def catalog(lora_root):
    return LoraCatalog((str(lora_root / "loras"),))


@pytest.fixture(scope="module")
def editor(lora_root, catalog):
    return Editor.from_pretrained(str(lora_root / "wan"), loras=catalog)


def full_matte_edit(editor, loras, steps=3):
    frames = make_clip(D.frames, D.height, D.width)
    matte = np.ones(frames.shape[:3], np.float32)
    settings = EditSettings(
        alpha_fixed=0.0, guidance_form="static", steps=steps, seed=7, negative_prompt=NEGATIVE, loras=loras
    )
    return editor.edit(EditRequest(frames, matte, PROMPT, settings))


def diffusers_latents(pipe, shape, steps=3, d=D, **extra):
    noise = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(7))
    return pipe(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        num_frames=d.frames,
        height=d.height,
        width=d.width,
        num_inference_steps=steps,
        guidance_scale=d.guidance,
        max_sequence_length=d.text_length,
        latents=noise,
        output_type="latent",
        **extra,
    ).frames


def test_a_lora_changes_the_edit_exactly_as_diffusers_pipeline_with_it(editor, lora_root):
    """α = 0, static guidance, a full matte: the engine's edit is WanPipeline's generation with the same LoRA
    loaded by diffusers itself at the same weight — and far from the generation without it."""
    result = full_matte_edit(editor, ("style:0.7",))
    reference = build_tiny_wan()
    reference.load_lora_weights(str(lora_root / "loras"), weight_name="style.safetensors", adapter_name="style")
    reference.set_adapters(["style"], [0.7])
    with_lora = diffusers_latents(reference, result.latents[0].shape)
    assert torch.allclose(result.latents[0], with_lora, atol=1e-5, rtol=1e-5)
    plain = diffusers_latents(build_tiny_wan(), result.latents[0].shape)
    assert (result.latents[0] - plain).abs().max() > 0.1  # the LoRA acts
    assert result.trace.loras[0]["name"] == "style" and result.trace.loras[0]["weight"] == 0.7
    assert result.trace.settings["loras"] == [{"name": "style", "weight": 0.7}]


def test_two_loras_with_weights_equal_diffusers_set_adapters(editor, lora_root):
    result = full_matte_edit(editor, ("style:0.5", "other:-1.5"))
    reference = build_tiny_wan()
    for name in ("style", "other"):
        reference.load_lora_weights(str(lora_root / "loras"), weight_name=f"{name}.safetensors", adapter_name=name)
    reference.set_adapters(["style", "other"], [0.5, -1.5])
    assert torch.allclose(result.latents[0], diffusers_latents(reference, result.latents[0].shape), atol=1e-5)
    assert [lora["name"] for lora in result.trace.loras] == ["style", "other"]


def test_background_outside_the_matte_stays_bit_exact_with_a_lora(editor):
    frames = make_clip(9, 80, 112, seed=2)
    matte = box_matte(9, 80, 112, 20, 30, 30, 40, drift=2)
    settings = EditSettings(steps=3, feather=4, alpha_fixed=0.5, loras=("style",))
    result = editor.edit(EditRequest(frames, matte, PROMPT, settings))
    outside = np.stack([feather_matte(m, 4) for m in matte]) == 0
    assert np.array_equal(result.frames[outside], frames[outside])
    assert not np.array_equal(result.frames[~outside], frames[~outside])


def test_switching_loras_between_edits_keeps_the_base_model(lora_root, catalog):
    """One editor, LoRAs switched edit after edit: the pipeline and the base weights are the same objects
    throughout, a LoRA once loaded is not read again, and an edit without LoRAs is the plain model's, bit for bit."""
    editor = Editor.from_pretrained(str(lora_root / "wan"), loras=catalog)
    pipe, weight = editor.model.pipe, editor.model.pipe.transformer.blocks[0].attn1.to_q.weight
    plain = full_matte_edit(editor, ())
    style = full_matte_edit(editor, ("style",))
    full_matte_edit(editor, ("other",))
    without = full_matte_edit(editor, ())
    again = full_matte_edit(editor, ("style",))
    assert editor.model.pipe is pipe
    base = editor.model.pipe.transformer.blocks[0].attn1.to_q.base_layer.weight
    assert base is weight and torch.equal(base, weight)  # the base weights were never replaced nor changed
    assert editor.runtime.loras.loads == 2  # style and other, once each
    assert again.trace.execution["lora_switch"]["loaded"] == []
    assert torch.equal(without.latents[0], plain.latents[0])
    assert torch.equal(again.latents[0], style.latents[0])


def test_fused_loras_give_the_unfused_edit(lora_root, catalog):
    fused = Editor.from_pretrained(str(lora_root / "wan"), loras=catalog, acceleration=Acceleration(lora_mode="fused"))
    unfused = Editor.from_pretrained(str(lora_root / "wan"), loras=catalog)
    a, b = full_matte_edit(fused, ("style:0.7",)), full_matte_edit(unfused, ("style:0.7",))
    assert torch.allclose(a.latents[0], b.latents[0], atol=1e-4)
    assert a.trace.execution["lora_switch"]["mode"] == "fused"
    plain_fused, plain = full_matte_edit(fused, ()), full_matte_edit(unfused, ())
    assert torch.allclose(plain_fused.latents[0], plain.latents[0], atol=1e-4)  # unfused again after the LoRA


def test_hotswapped_loras_never_recompile_the_compiled_blocks(lora_root, catalog):
    """Compiled with inductor on the CPU: after the first edit, switching LoRA, dropping it and coming back
    runs the graphs already compiled (dynamo's counters do not move) and gives the unfused edits."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    compiled = Editor.from_pretrained(
        str(lora_root / "wan"), loras=catalog, acceleration=Acceleration(compile="inductor", lora_rank=8)
    )
    assert compiled.execution["loras"] == "hotswap"
    first = full_matte_edit(compiled, ("style:0.7",), steps=2)
    graphs, frames = counters["stats"]["unique_graphs"], counters["frames"]["ok"]
    assert graphs > 0
    later = [full_matte_edit(compiled, loras, steps=2) for loras in (("other",), (), ("style:0.7",), ("other:2",))]
    assert counters["stats"]["unique_graphs"] == graphs and counters["frames"]["ok"] == frames
    assert sum(counters["recompiles"].values()) == 0
    reference = Editor.from_pretrained(str(lora_root / "wan"), loras=catalog)
    asked = [("style:0.7",), ("other",), (), ("style:0.7",), ("other:2",)]
    for result, loras in zip([first, *later], asked, strict=True):
        expected = full_matte_edit(reference, loras, steps=2)
        assert torch.allclose(result.latents[0], expected.latents[0], atol=1e-4), loras
    assert compiled.runtime.loras.loads == 4  # style, other, style, other (one slot): files read, nothing compiled


def test_hotswap_refuses_a_lora_above_its_rank_before_the_edit(lora_root, catalog):
    editor = Editor.from_pretrained(
        str(lora_root / "wan"), loras=catalog, acceleration=Acceleration(lora_mode="hotswap", lora_rank=2)
    )
    with pytest.raises(LoraUnusableError, match=r"rank 4.*up to 2.*--lora-rank"):
        full_matte_edit(editor, ("style",))
    with pytest.raises(LoraUnusableError, match=r"holds 1 at a time.*--lora-slots"):
        full_matte_edit(editor, ("other", "style"))
    assert full_matte_edit(editor, ("other",)).trace.execution["lora_switch"]["loaded"] == ["other"]


@pytest.mark.parametrize(
    ("name", "kind", "message"),
    [
        ("missing", LoraError, "no LoRA named 'missing'.*other, style"),
        ("full", LoraUnusableError, "not a LoRA.*full checkpoint"),
        ("wide", LoraUnusableError, "other sizes than the model's.*32×32.*another base model"),
        ("badrank", LoraUnusableError, "disagree on the rank \\(4 and 3\\)"),
        ("pickled", LoraUnusableError, "not a safetensors file.*zip"),
    ],
)
def test_bad_loras_are_refused_before_any_step(editor, name, kind, message):
    steps = []
    frames = make_clip(9, 64, 64)
    with pytest.raises(kind, match=message) as refused:
        editor.edit(
            EditRequest(frames, box_matte(9, 64, 64, 8, 8, 20, 20), PROMPT, EditSettings(loras=(name,))),
            progress=steps.append,
        )
    assert not steps
    assert kind is LoraError or isinstance(refused.value, LoraUnusableError)


def test_the_catalog_lists_each_lora_with_its_rank_and_what_is_wrong(catalog):
    listed = {e.name: e for e in catalog.entries()}
    assert listed["style"].ok and listed["style"].rank == 4 and listed["style"].family == "wan"
    assert "width 24" in listed["style"].base and listed["wide"].ok  # fits some Wan: only a model tells
    assert not listed["full"].ok and "not a LoRA" in listed["full"].status
    assert not listed["pickled"].ok and listed["badrank"].ok  # the rank is judged against a model


def test_a_loras_kvlock_json_sets_the_schedule_under_the_request(lora_root, tmp_path):
    """A step-distilled LoRA's file says 2 steps at guidance 1 and a short metric window: an edit without those
    settings takes them (no unconditional pass at ω0 1, static form); a request's own steps still win."""
    folder = tmp_path / "distilled"
    save_lora(build_tiny_wan().transformer, folder, "fast", rank=2, seed=9)
    (folder / "fast.kvlock.json").write_text(
        json.dumps({"steps": 2, "guidance": 1.0, "schedule": {"metric_window": 2, "kappa": 2}, "base": "tiny wan"})
    )
    save_lora(build_tiny_wan().transformer, folder, "slow", rank=2, seed=10)
    (folder / "slow.kvlock.json").write_text(json.dumps({"steps": 4}))
    editor = Editor.from_pretrained(str(lora_root / "wan"), loras=LoraCatalog((str(folder),)))
    frames, matte = make_clip(9, 64, 64), box_matte(9, 64, 64, 8, 8, 24, 24)
    result = editor.edit(EditRequest(frames, matte, PROMPT, EditSettings(loras=("fast",))))
    assert len(result.trace.windows[0].steps) == 2
    assert {s.omega for s in result.trace.windows[0].steps} == {1.0}
    assert result.trace.settings["metric_window"] == 2 and result.trace.settings["kappa"] == 2
    assert "LoRA fast's kvlock.json" in result.trace.schedule_source["metric_window"]
    told = editor.edit(EditRequest(frames, matte, PROMPT, EditSettings(steps=3, loras=("fast",))))
    assert len(told.trace.windows[0].steps) == 3
    with pytest.raises(LoraError, match="fast and slow set steps differently"):
        editor.edit(EditRequest(frames, matte, PROMPT, EditSettings(loras=("fast", "slow"))))
    (folder / "slow.kvlock.json").write_text(json.dumps({"height": 512}))
    with pytest.raises(LoraUnusableError, match="height belong to the base model"):
        editor.edit(EditRequest(frames, matte, PROMPT, EditSettings(loras=("slow",))))


def test_a_step_distilled_loras_noise_levels_are_the_steps_it_runs(lora_root, tmp_path):
    """A LoRA distilled to land on listed noise levels carries them in its kvlock.json: the edit runs exactly
    those levels as Euler steps, refuses another count, and a bad list is refused before any step."""
    folder = tmp_path / "distilled"
    save_lora(build_tiny_wan().transformer, folder, "euler", rank=2, seed=11)
    (folder / "euler.kvlock.json").write_text(json.dumps({"sigmas": [1.0, 0.6, 0.3], "guidance": 1.0}))
    save_lora(build_tiny_wan().transformer, folder, "rising", rank=2, seed=12)
    (folder / "rising.kvlock.json").write_text(json.dumps({"sigmas": [0.3, 0.6]}))
    editor = Editor.from_pretrained(str(lora_root / "wan"), loras=LoraCatalog((str(folder),)))
    frames, matte = make_clip(9, 64, 64), box_matte(9, 64, 64, 8, 8, 24, 24)
    result = editor.edit(EditRequest(frames, matte, PROMPT, EditSettings(strength=1.0, loras=("euler",))))
    assert [round(s.sigma, 6) for s in result.trace.windows[0].steps] == [1.0, 0.6, 0.3]
    assert "CFG-free" in result.trace.control
    with pytest.raises(SettingsError, match="step-distilled for 3 steps"):
        editor.edit(EditRequest(frames, matte, PROMPT, EditSettings(steps=5, loras=("euler",))))
    with pytest.raises(LoraUnusableError, match="sigmas must be a list"):
        editor.edit(EditRequest(frames, matte, PROMPT, EditSettings(loras=("rising",))))


def test_a_two_expert_lora_goes_into_both_experts_as_diffusers_loads_it(tmp_path):
    """Wan2.2 A14B: the high-noise file into ``transformer``, the low-noise one into ``transformer_2``
    (``load_into_transformer_2``), the edit equal to WanPipeline's with the same LoRA loaded the same way."""
    d = TINY_A14B_DEFAULTS
    build_tiny_wan22_a14b().save_pretrained(tmp_path / "a14b")
    (tmp_path / "a14b" / "kvlock.json").write_text(json.dumps(asdict(d)))
    lora = save_expert_lora(build_tiny_wan22_a14b(), tmp_path / "loras" / "both", rank=4, seed=2)
    editor = Editor.from_pretrained(str(tmp_path / "a14b"), loras=LoraCatalog((str(tmp_path / "loras"),)))
    frames = make_clip(d.frames, d.height, d.width)
    settings = EditSettings(alpha_fixed=0.0, guidance_form="static", steps=4, seed=7, negative_prompt=NEGATIVE)
    matte = np.ones(frames.shape[:3], np.float32)
    result = editor.edit(EditRequest(frames, matte, PROMPT, EditSettings(**asdict(settings) | {"loras": ("both",)})))
    assert result.trace.loras[0]["experts"] == [0, 1]
    reference = build_tiny_wan22_a14b()
    reference.load_lora_weights(str(lora), weight_name="high_noise_model.safetensors", adapter_name="both")
    reference.load_lora_weights(
        str(lora), weight_name="low_noise_model.safetensors", adapter_name="both", load_into_transformer_2=True
    )
    expected = diffusers_latents(reference, result.latents[0].shape, steps=4, d=d, guidance_scale_2=d.guidance_2)
    assert torch.allclose(result.latents[0], expected, atol=1e-5, rtol=1e-5)
    plain = diffusers_latents(
        build_tiny_wan22_a14b(), result.latents[0].shape, steps=4, d=d, guidance_scale_2=d.guidance_2
    )
    assert (result.latents[0] - plain).abs().max() > 0.1

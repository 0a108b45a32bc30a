"""The sampler's formulas, each observed where it acts inside the loop (tiny Wan, CPU, float32).

The whole-edit exactness tests only see the final composite; these recompute, from the model's own passes,
what every formula of docs/design.md §2.3 must have produced at the step where it applies — the guidance
combination, the latent lock after every step, the K/V fusion inside a pass, the metric's input, window
and scale, and the control law that turns h into α and ω — so a wrong formula fails here by name.
"""

from __future__ import annotations

import math
import threading

import pytest
import torch

from kvlock.errors import EditCancelled
from kvlock.lock.guidance import optimal_scale
from kvlock.lock.kv_bank import fuse_background
from kvlock.lock.metric import latent_scale, level_variance, window_variance
from kvlock.sampling.loop import StepDone, sample_kvlock
from kvlock.sampling.passes import Passes
from kvlock.settings import EditSettings, resolve_schedule

from ..support.clips import window_job


@pytest.fixture(scope="module")
def job(editor):
    """A window's inputs as the editor would build them: source latents, one noise tensor, masks, prompts."""
    return window_job(editor, 11, 3, EditSettings(source_prompt="a grey box", negative_prompt="blurry"))


def _run(editor, job, settings: EditSettings, steps: int, omega0: float = 5.0, stop_after: int | None = None):
    """Run the loop, keeping the latents that enter every step and every step's record."""
    fam, pipe, x0, noise, masks, prompts = job
    seen: list[dict] = []
    cancel = threading.Event()

    def record(info: StepDone) -> None:
        seen.append({"latents": info.latents.clone(), "record": info.record})
        if stop_after is not None and len(seen) >= stop_after:
            cancel.set()

    try:
        with torch.no_grad():
            sample_kvlock(
                fam,
                pipe,
                editor.runtime.bank,
                x0,
                noise,
                masks,
                prompts,
                resolve_schedule(settings),
                steps=steps,
                omega0=omega0,
                callback=record,
                cancel=cancel,
            )
    except EditCancelled:
        pass
    return seen


def _start(fam, pipe, x0, noise, masks, steps):
    stepper = fam.stepper(pipe, steps, x0)
    stepper.begin(0)
    soft = masks.soft[None, None]
    z0 = soft * noise + (1 - soft) * stepper.noised(x0, noise, 0)
    return stepper, soft, z0


def test_one_step_applies_cfg_zero_star_to_the_two_passes_then_the_lock(editor, job):
    fam, pipe, x0, noise, masks, prompts = job
    settings = EditSettings(alpha_fixed=0.0, b=1.0, kappa=0)  # α = 0: no source pass, ω = ω0
    seen = _run(editor, job, settings, steps=4, stop_after=1)
    stepper, soft, z0 = _start(fam, pipe, x0, noise, masks, 4)
    t = stepper.timesteps[0]
    with torch.no_grad():
        v_c = fam.predict(pipe, z0, t, prompts.cond).float()
        v_u = fam.predict(pipe, z0, t, prompts.uncond).float()
    region = masks.latent[None, None]
    s = optimal_scale(v_c, v_u, region, 1e-8)
    v = s * v_u + 5.0 * (v_c - s * v_u)
    expected = soft * stepper.step(v, 0, z0) + (1 - soft) * stepper.noised(x0, noise, 1)
    assert seen[0]["record"].s_star == pytest.approx(s, rel=1e-6)
    torch.testing.assert_close(seen[0]["latents"], expected, rtol=1e-5, atol=1e-5)


def test_latent_lock_resets_the_background_after_every_step(editor, job):
    fam, pipe, x0, noise, masks, _ = job
    seen = _run(editor, job, EditSettings(alpha_fixed=0.5), steps=5)
    stepper = fam.stepper(pipe, 5, x0)
    background = (masks.soft == 0)[None, None].expand_as(x0)
    assert background.any() and len(seen) == 5
    for i, step in enumerate(seen):
        assert torch.equal(step["latents"][background], stepper.noised(x0, noise, i + 1)[background]), i


def test_fused_pass_mixes_alpha_of_the_source_kv_with_one_minus_alpha_of_its_own(editor, job):
    """Inside a real pass at layer 1 (layer 0's background K/V are the source's already: same latents)."""
    fam, pipe, x0, noise, masks, prompts = job
    bank = editor.runtime.bank
    stepper, _, z0 = _start(fam, pipe, x0, noise, masks, 4)
    t = stepper.timesteps[0]
    passes = Passes(fam, pipe, bank, masks)
    bank.background_index = masks.background_index
    keys: dict[str, torch.Tensor] = {}

    def observe(layer, mode, key, value):
        if layer == 1:
            keys[mode] = key.clone()

    bank.observer = observe
    try:
        with torch.no_grad():
            passes.source(stepper.noised(x0, noise, 0), t, prompts.source)
            source_background = bank.keys[1].clone()
            passes.edit("fuse", 0.0, z0, t, prompts.cond, None)
            own = keys["fuse"]
            passes.edit("fuse", 0.25, z0, t, prompts.cond, None)
            fused = keys["fuse"]
    finally:
        bank.observer = None
        bank.clear()
    bg = masks.background_index
    assert not torch.allclose(own[:, bg], source_background)  # the prompt changed layer 1's background K
    torch.testing.assert_close(fused[:, bg], 0.25 * source_background + 0.75 * own[:, bg])
    fg = masks.foreground_index
    assert torch.equal(fused[:, fg], own[:, fg])  # foreground tokens keep their own K


def test_fuse_background_weights_source_by_alpha():
    edit = torch.zeros(1, 4, 2)
    source = torch.ones(1, 2, 2)
    fused = fuse_background(edit, source, torch.tensor([1, 3]), 0.25)
    assert torch.equal(fused[0, :, 0], torch.tensor([0.0, 0.25, 0.0, 0.25]))


def test_metric_is_the_windowed_variance_of_the_conditional_clean_estimate_from_control_start(editor, job):
    """With α = 0 every pass is the model's own: recompute v_c at each step's latents, x̂0 = z − σ·v_c; h is the
    windowed variance of x̂0 over the source latents' variance and the window's noise levels' variance."""
    fam, pipe, x0, noise, masks, prompts = job
    steps, kappa, window = 7, 5, 3
    settings = EditSettings(alpha_fixed=0.0, kappa=kappa, metric_window=window, tau=1.0)
    seen = _run(editor, job, settings, steps=steps)
    stepper, _, z = _start(fam, pipe, x0, noise, masks, steps)
    fg = masks.latent[None, None].expand_as(x0)
    history: list[torch.Tensor] = []
    levels: list[float] = []
    for i in range(steps):
        with torch.no_grad():
            v_c = fam.predict(pipe, z, stepper.timesteps[i], prompts.cond).float()
        h = seen[i]["record"].h
        if i < steps - kappa:
            assert h is None, i  # before the control window nothing is measured
        else:
            history.append((z - stepper.levels[i] * v_c)[fg])
            levels.append(stepper.levels[i])
            expected = window_variance(history[-window:])
            spread = level_variance(levels[-window:])  # a rate per unit of noise removed, not a distance
            expected = None if expected is None else expected / (latent_scale(x0) * spread)
            assert (h is None) == (expected is None) and (h is None or h == pytest.approx(expected, rel=1e-5)), i
        z = seen[i]["latents"]


def test_control_turns_the_previous_full_window_h_into_alpha_and_omega(editor, job):
    steps, kappa, window, tau = 8, 6, 3, 1e-3
    settings = EditSettings(kappa=kappa, metric_window=window, tau=tau, alpha_early=0.5, b=3.0)
    records = [s["record"] for s in _run(editor, job, settings, steps=steps)]
    first_full = steps - kappa + window - 1  # the step whose h first covers W samples
    for i, r in enumerate(records):
        if i <= first_full:
            assert (r.alpha, r.omega) == (0.5, 5.0), i  # before the window is full: α_early, ω0
        else:
            ratio = min(1.0, records[i - 1].h / tau)
            assert r.alpha == pytest.approx(ratio) and r.omega == pytest.approx(5.0 * (1 + 2.0 * ratio)), i
    assert any(not math.isclose(r.alpha, 0.5) for r in records)


def test_no_lock_is_plain_regeneration_with_classic_guidance():
    s = resolve_schedule(EditSettings(method="no_lock"))
    assert s.alpha_fixed == 0.0 and s.guidance_form == "static"
    assert resolve_schedule(EditSettings(method="fixed_alpha=0")).guidance_form == "kvlock"

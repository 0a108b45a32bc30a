"""The maths on hand-made inputs: α and ω schedules, the windowed metric, CFG-Zero*."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from kvlock.lock.guidance import cfg_zero_star, classic_cfg, optimal_scale
from kvlock.lock.metric import HallucinationMeter, latent_scale, window_variance
from kvlock.lock.schedules import control_at, fusion_ratio, guidance_scale, guidance_scale_paper

KW = dict(kappa=3, tau=0.01, omega0=5.0, b=2.0, alpha_min=0.0, alpha_early=0.5)


def test_fusion_ratio_clamps_between_alpha_min_and_one():
    assert fusion_ratio(0.0, 0.01) == 0.0
    assert fusion_ratio(0.005, 0.01) == pytest.approx(0.5)
    assert fusion_ratio(0.5, 0.01) == 1.0
    assert fusion_ratio(0.001, 0.01, alpha_min=0.3) == pytest.approx(0.3)


def test_guidance_never_below_omega0_and_caps_at_b_omega0():
    assert guidance_scale(0.0, 0.01, 5.0, 2.0) == 5.0
    assert guidance_scale(0.005, 0.01, 5.0, 2.0) == pytest.approx(7.5)
    assert guidance_scale(1.0, 0.01, 5.0, 2.0) == pytest.approx(10.0)


def test_paper_form_drops_to_zero_when_calm_and_caps_at_b():
    assert guidance_scale_paper(0.0, 0.01, 5.0, 2.0) == 0.0
    assert guidance_scale_paper(0.005, 0.01, 5.0, 2.0) == pytest.approx(2.5)
    assert guidance_scale_paper(1.0, 0.01, 5.0, 2.0) == pytest.approx(10.0)


def test_control_uses_early_values_before_the_last_kappa_steps():
    early = control_at(0, 10, 1.0, **KW)
    assert (early.alpha, early.omega, early.active) == (0.5, 5.0, False)
    late = control_at(7, 10, 0.004, **KW)
    assert late.active and late.alpha == pytest.approx(0.4) and late.omega == pytest.approx(7.0)
    assert control_at(7, 10, 0.004, guidance_form="static", **KW).omega == 5.0
    assert control_at(7, 10, 0.004, guidance_form="paper", **KW).omega == pytest.approx(2.0)
    assert control_at(7, 10, 0.004, alpha_fixed=1.0, **KW).alpha == 1.0
    assert control_at(0, 10, 0.004, alpha_fixed=0.25, **KW).alpha == 0.25


def test_window_variance_matches_hand_computation():
    # two elements over three steps: [1, 2, 3] has variance 2/3, [5, 5, 5] has 0 → mean 1/3
    samples = [torch.tensor([1.0, 5.0]), torch.tensor([2.0, 5.0]), torch.tensor([3.0, 5.0])]
    assert window_variance(samples) == pytest.approx(1.0 / 3.0)
    assert window_variance(samples[:1]) is None  # one sample says nothing: not "calm"


def test_meter_is_relative_to_the_source_scale_and_knows_when_its_window_is_full():
    fg = torch.tensor([True, False])
    meter = HallucinationMeter(window=3, foreground=fg, scale=4.0)
    assert meter.update(torch.tensor([0.0, 9.0]), 1.0) is None and not meter.full
    # var of x̂0 [0, 2] is 1, var of σ [1, 0.5] is 1/16, over scale 4: 1 / (4 / 16) = 4
    assert meter.update(torch.tensor([2.0, 9.0]), 0.5) == pytest.approx(4.0)
    assert not meter.full
    meter.update(torch.tensor([4.0, 9.0]), 0.25)
    assert meter.full
    meter.reset()
    assert meter.value is None and not meter.full
    # scaling the latents scales the variance and the scale alike: h is unchanged
    a = HallucinationMeter(2, fg, latent_scale(torch.tensor([1.0, 3.0])))
    b = HallucinationMeter(2, fg, latent_scale(torch.tensor([10.0, 30.0])))
    for x, sigma in (([1.0, 0.0], 0.6), ([2.0, 0.0], 0.4)):
        ha, hb = a.update(torch.tensor(x), sigma), b.update(torch.tensor(x) * 10, sigma)
    assert ha == pytest.approx(hb)


@pytest.mark.parametrize("steps,window", [(50, 10), (20, 4), (8, 2), (4, 2), (4, 3)])
def test_h_is_the_same_rate_at_any_step_count_and_window(steps, window):
    """A clean estimate that moves by b per unit of noise removed reads h = b² (over the source scale),
    whether the sampler takes 50 steps or 4: one τ serves every step count, distilled models included."""
    fg = torch.ones(3, dtype=torch.bool)
    meter = HallucinationMeter(window=window, foreground=fg, scale=2.0)
    b = torch.tensor([0.3, -0.2, 0.5])
    levels = torch.linspace(1.0, 0.0, steps + 1)[:-1] ** 2  # uneven spacing, as shifted schedules have
    for sigma in levels.tolist():
        h = meter.update(1.0 + b * sigma, sigma)
    assert h == pytest.approx(float((b**2).mean()) / 2.0, rel=1e-5)


def test_control_keeps_early_values_until_the_metric_window_is_full():
    waiting = control_at(8, 10, 0.004, ready=False, **KW)
    assert waiting.active and (waiting.alpha, waiting.omega) == (0.5, 5.0)
    unmeasured = control_at(8, 10, None, **KW)
    assert (unmeasured.alpha, unmeasured.omega) == (0.5, 5.0)
    assert control_at(8, 10, 0.004, ready=True, **KW).alpha == pytest.approx(0.4)


def test_meter_forgets_beyond_its_window_and_ignores_background():
    fg = torch.tensor([True, False])
    meter = HallucinationMeter(window=2, foreground=fg)
    assert meter.update(torch.tensor([0.0, 100.0]), 0.75) is None
    # var of [0, 2] is 1 over var of σ [0.75, 0.25], 1/16
    assert meter.update(torch.tensor([2.0, -100.0]), 0.25) == pytest.approx(16.0)
    assert meter.update(torch.tensor([2.0, 7.0]), 0.0) == 0.0  # window now [2, 2]


def test_meter_on_a_converging_trajectory_decreases():
    fg = torch.ones(4, dtype=torch.bool)
    meter = HallucinationMeter(window=3, foreground=fg)
    values = [meter.update(torch.full((4,), 1.0 / (k + 1) ** 2), 1.0 - k / 10) for k in range(10)][1:]
    assert all(b < a for a, b in itertools.pairwise(values[2:]))


def test_cfg_zero_star_reduces_to_classic_cfg_when_s_is_one():
    vc, vu = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    assert torch.allclose(cfg_zero_star(vc, vu, 5.0, 1.0), classic_cfg(vc, vu, 5.0))


def test_optimal_scale_is_the_projection_coefficient_over_the_region():
    vu = torch.tensor([1.0, 0.0, 3.0])
    vc = torch.tensor([2.0, 9.0, 0.0])
    assert optimal_scale(vc, vu, delta=0.0) == pytest.approx(2.0 / 10.0)
    region = torch.tensor([True, True, False])
    assert optimal_scale(vc, vu, region, delta=0.0) == pytest.approx(2.0)
    assert math.isfinite(optimal_scale(vc, torch.zeros(3)))

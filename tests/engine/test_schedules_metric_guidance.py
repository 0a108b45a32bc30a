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
    assert meter.update(torch.tensor([0.0, 9.0])) is None and not meter.full
    assert meter.update(torch.tensor([2.0, 9.0])) == pytest.approx(1.0 / 4.0)  # var of [0, 2] over scale 4
    assert not meter.full
    meter.update(torch.tensor([4.0, 9.0]))
    assert meter.full
    meter.reset()
    assert meter.value is None and not meter.full
    # scaling the latents scales the variance and the scale alike: h is unchanged
    a = HallucinationMeter(2, fg, latent_scale(torch.tensor([1.0, 3.0])))
    b = HallucinationMeter(2, fg, latent_scale(torch.tensor([10.0, 30.0])))
    for x in ([1.0, 0.0], [2.0, 0.0]):
        ha, hb = a.update(torch.tensor(x)), b.update(torch.tensor(x) * 10)
    assert ha == pytest.approx(hb)


def test_control_keeps_early_values_until_the_metric_window_is_full():
    waiting = control_at(8, 10, 0.004, ready=False, **KW)
    assert waiting.active and (waiting.alpha, waiting.omega) == (0.5, 5.0)
    unmeasured = control_at(8, 10, None, **KW)
    assert (unmeasured.alpha, unmeasured.omega) == (0.5, 5.0)
    assert control_at(8, 10, 0.004, ready=True, **KW).alpha == pytest.approx(0.4)


def test_meter_forgets_beyond_its_window_and_ignores_background():
    fg = torch.tensor([True, False])
    meter = HallucinationMeter(window=2, foreground=fg)
    assert meter.update(torch.tensor([0.0, 100.0])) is None
    assert meter.update(torch.tensor([2.0, -100.0])) == pytest.approx(1.0)  # var of [0, 2]
    assert meter.update(torch.tensor([2.0, 7.0])) == 0.0  # window now [2, 2]


def test_meter_on_a_converging_trajectory_decreases():
    fg = torch.ones(4, dtype=torch.bool)
    meter = HallucinationMeter(window=3, foreground=fg)
    values = [meter.update(torch.full((4,), 1.0 / (k + 1) ** 2)) for k in range(10)][1:]
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

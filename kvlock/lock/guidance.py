"""Classifier-free guidance: the classic form and CFG-Zero* (arXiv 2503.18886).

CFG-Zero* rescales the unconditional velocity by the projection coefficient
s* = ⟨v_c, v_u⟩ / (‖v_u‖² + δ), then v = s*·v_u + ω·(v_c − s*·v_u). Here s* is computed over the
edited region only: the background is reset to the source after every step, so its velocity must not
pull the foreground's guidance (and the foreground-only passes never compute it).
"""

from __future__ import annotations

import torch


def classic_cfg(v_cond: torch.Tensor, v_uncond: torch.Tensor, omega: float) -> torch.Tensor:
    """v = v_u + ω·(v_c − v_u), exactly as diffusers' pipelines combine the two passes."""
    return v_uncond + omega * (v_cond - v_uncond)


def optimal_scale(
    v_cond: torch.Tensor, v_uncond: torch.Tensor, region: torch.Tensor | None = None, delta: float = 1e-8
) -> float:
    """s* = ⟨v_c, v_u⟩ / (‖v_u‖² + δ) over ``region`` (a boolean mask broadcastable to v), or all of v."""
    if region is not None:
        region = region.expand_as(v_cond)
        v_cond, v_uncond = v_cond[region], v_uncond[region]
    vc, vu = v_cond.double().flatten(), v_uncond.double().flatten()
    return float(torch.dot(vc, vu) / (torch.dot(vu, vu) + delta))


def cfg_zero_star(v_cond: torch.Tensor, v_uncond: torch.Tensor, omega: float, s_star: float) -> torch.Tensor:
    """v = s*·v_u + ω·(v_c − s*·v_u) (CFG-Zero*, Eq. 6)."""
    scaled = s_star * v_uncond
    return scaled + omega * (v_cond - scaled)

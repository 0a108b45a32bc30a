"""What one denoising step runs, decided from plain facts before any pass runs (docs/design.md §2.3).

The loop asks :func:`plan_step` and then runs the plan; the decision is a pure function of scalars, so every
combination — α = 0, 0 < α < 1, α = 1 with and without a foreground layout, paired guidance, lockstep passes,
a reused or background-only source pass, an unconditional pass with its own source — is testable on its own.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PassCapabilities:
    """What this window's passes can do, fixed for the whole window.

    ``foreground``: a foreground-only pass can be laid out. ``pairable``: the foreground tokens fit twice in
    one full pass, so the two guidance passes may run as one batch without more activation memory than a
    plain step. ``lockstep``: the family opens its forward at the blocks and every token is on this device,
    so a source pass and its edit passes can run block by block. ``background_pass``: a source pass over the
    background tokens alone can run here.
    """

    foreground: bool
    pairable: bool
    lockstep: bool
    background_pass: bool


@dataclass(frozen=True)
class StepPlan:
    """One step's passes.

    ``mode``: how the edit passes see the source's K/V — ``off`` (plain passes), ``fuse`` (full passes with
    the background K/V fused) or ``foreground`` (foreground tokens only over the cached background).
    ``source``: where this step's background K/V come from — "" (none needed), "full", "background" (a
    source pass over the background alone) or "reused" (the last source pass's). ``lockstep``: the source
    pass and the edit passes run block by block. ``paired``: conditional and unconditional passes in one
    batch. ``uncond``: an unconditional pass runs at all. ``own_uncond_source``: it gets its own source pass
    (with the negative prompt).
    """

    mode: str
    source: str
    lockstep: bool
    paired: bool
    uncond: bool
    own_uncond_source: bool


def edit_mode(alpha: float, has_background: bool, foreground_only: bool) -> str:
    """Which kind of edit pass a step needs (docs/design.md §2, "why it is fast")."""
    if alpha <= 0.0 or not has_background:
        return "off"
    if alpha >= 1.0 and foreground_only:
        return "foreground"
    return "fuse"


def plan_step(
    alpha: float,
    *,
    has_background: bool,
    can: PassCapabilities,
    foreground_only: bool,
    uncond: bool,
    pair_guidance: bool,
    own_uncond_source: bool,
    source_pass: str,
    source_refresh: int,
    since_source: int | None,
    interleave: bool = True,
) -> StepPlan:
    """The passes of a step at fusion ratio ``alpha``.

    ``since_source`` is how many steps ago the bank's K/V were captured by a source pass that can be reused
    (None: none can). With ``source_refresh`` = N they serve up to N − 1 later steps. Lockstep stands aside
    for anything that needs the bank beyond this step (reuse, the background-only pass, a second source
    pass for the unconditional prompt).
    """
    mode = edit_mode(alpha, has_background, foreground_only and can.foreground)
    if mode == "off":
        return StepPlan("off", "", False, False, uncond, False)
    own = uncond and own_uncond_source
    background = source_pass == "background" and can.background_pass
    lockstep = interleave and can.lockstep and source_refresh == 1 and not background and not own
    paired = uncond and pair_guidance and not own and mode == "foreground" and can.pairable
    reuse = since_source is not None and since_source < source_refresh
    source = "reused" if reuse and not lockstep else "background" if background else "full"
    return StepPlan(mode, source, lockstep, paired, uncond, own)

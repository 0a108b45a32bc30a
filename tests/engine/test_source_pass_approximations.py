"""The two source-pass approximations (speed options, off by default), each observed where it acts.

``source_pass="background"`` must give background K/V that depend on the background alone (the old
subject's tokens never enter the pass) and equal a forward over exactly those tokens; ``source_refresh``
must run the source pass only every N-th locked step and hand the edit passes the K/V of the last one.
The defaults must stay the exact method: one full source pass per locked step.
"""

from __future__ import annotations

import pytest
import torch

from kvlock.errors import SettingsError
from kvlock.sampling.loop import sample_kvlock
from kvlock.sampling.passes import Passes
from kvlock.settings import EditSettings, resolve_schedule

from ..support.clips import window_job


@pytest.fixture(scope="module")
def job(editor):
    return window_job(editor, 5, 9, EditSettings(source_prompt="a grey box"))


def _captures(editor, job, settings: EditSettings, steps: int = 6):
    """Run the loop; return the records and, per source pass, (mode, layer-1 K) as the bank stored it."""
    fam, pipe, x0, noise, masks, prompts = job
    stored: list[tuple[str, torch.Tensor]] = []
    bank = editor.runtime.bank

    def observe(layer, mode, key, value):
        if layer == 1 and mode in ("capture", "capture_own"):
            stored.append((mode, bank.keys[1].clone()))

    bank.observer = observe
    try:
        with torch.no_grad():
            z, records = sample_kvlock(
                fam, pipe, bank, x0, noise, masks, prompts, resolve_schedule(settings), steps=steps, omega0=5.0
            )
    finally:
        bank.observer = None
    return z, records, stored


def test_defaults_are_the_exact_method_one_full_source_pass_per_locked_step(editor, job):
    assert EditSettings().source_pass == "full" and EditSettings().source_refresh == 1
    _, records, stored = _captures(editor, job, EditSettings(alpha_fixed=1.0))
    assert [r.source for r in records] == ["full"] * 6
    assert [m for m, _ in stored] == ["capture"] * 6


def test_refresh_runs_the_source_pass_every_nth_locked_step_and_reuses_its_kv(editor, job):
    fam, pipe, x0, noise, masks, prompts = job
    exact, _, _ = _captures(editor, job, EditSettings(alpha_fixed=1.0))
    z, records, stored = _captures(editor, job, EditSettings(alpha_fixed=1.0, source_refresh=3), steps=6)
    assert [r.source for r in records] == ["full", "reused", "reused", "full", "reused", "reused"]
    assert len(stored) == 2
    assert not torch.allclose(z, exact)  # reusing stale K/V is an approximation: it must change the result

    # the reused step's edit pass attends over the K/V of step 0's source pass, not of its own step
    stepper = fam.stepper(pipe, 6, x0)
    step0 = stepper.noised(x0, noise, 0)
    passes = Passes(fam, pipe, editor.runtime.bank, masks)
    editor.runtime.bank.background_index = masks.background_index
    with torch.no_grad():
        passes.source(step0, stepper.timesteps[0], prompts.source)
    torch.testing.assert_close(stored[0][1], editor.runtime.bank.keys[1])
    editor.runtime.bank.clear()


def test_refresh_is_refused_with_an_own_unconditional_source():
    with pytest.raises(SettingsError, match="source_refresh"):
        resolve_schedule(EditSettings(source_refresh=2, uncond_source="own"))
    with pytest.raises(SettingsError, match="source_pass"):
        resolve_schedule(EditSettings(source_pass="half"))


def test_background_source_pass_sees_only_the_background(editor, job):
    """Its K/V equal a forward over the background tokens alone, and no change to the subject moves them."""
    fam, pipe, x0, noise, masks, prompts = job
    settings = EditSettings(alpha_fixed=1.0, source_pass="background")
    _, records, stored = _captures(editor, job, settings, steps=2)
    assert [r.source for r in records] == ["background", "background"]
    assert [m for m, _ in stored] == ["capture_own"] * 2
    bg = masks.background_index
    assert stored[0][1].shape[1] == bg.numel()

    # a full source pass's background K at layer 1 has attended to the subject: it differs
    stepper = fam.stepper(pipe, 2, x0)
    passes = Passes(fam, pipe, editor.runtime.bank, masks)
    editor.runtime.bank.background_index = bg
    t = stepper.timesteps[0]
    with torch.no_grad():
        passes.source(stepper.noised(x0, noise, 0), t, prompts.source)
        full = editor.runtime.bank.keys[1].clone()
        passes.source(stepper.noised(x0, noise, 0), t, prompts.source, background=True)
        own = editor.runtime.bank.keys[1].clone()
        # a different subject in the source: the background-only pass does not move, the full one does
        region = masks.latent[None, None].expand_as(x0)
        other = torch.where(region, torch.randn_like(x0) * 3.0, x0)
        passes.source(stepper.noised(other, noise, 0), t, prompts.source, background=True)
        own_other = editor.runtime.bank.keys[1].clone()
        passes.source(stepper.noised(other, noise, 0), t, prompts.source)
        full_other = editor.runtime.bank.keys[1].clone()
    editor.runtime.bank.clear()
    torch.testing.assert_close(stored[0][1], own)
    assert not torch.allclose(full, own)
    torch.testing.assert_close(own_other, own)
    assert not torch.allclose(full_other, full)


def test_background_source_pass_keeps_the_background_exact(editor, job):
    """Only K/V change: the latent lock still returns the noised source on every background latent."""
    x0, masks = job[2], job[4]
    z, _, _ = _captures(editor, job, EditSettings(alpha_fixed=1.0, source_pass="background"), steps=3)
    background = (masks.soft == 0)[None, None].expand_as(x0)
    assert torch.equal(z[background], x0[background])

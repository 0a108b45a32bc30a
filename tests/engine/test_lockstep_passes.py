"""The source pass and the edit passes run block by block in lockstep (``Passes.interleaved``): the same
numbers as running them one after the other, with the K/V bank holding one layer instead of all of them
(tiny Wan, CPU, float32)."""

from __future__ import annotations

import pytest
import torch

from kvlock.lock.kv_bank import KVBank
from kvlock.sampling.loop import sample_kvlock
from kvlock.settings import EditSettings, resolve_schedule

from ..support.clips import window_job


@pytest.fixture(scope="module")
def job(editor):
    return window_job(editor, 13, 5, EditSettings(source_prompt="a grey box", negative_prompt="blurry"))


def _sample(editor, job, settings: EditSettings, interleave: bool, omega0: float = 5.0):
    """Final latents, per-step (h, α, mode, source) and the most layers the bank ever held."""
    fam, pipe, x0, noise, masks, prompts = job
    bank = editor.runtime.bank
    held = [0]
    store = KVBank.store

    def counting(self, layer, key, value):
        store(self, layer, key, value)
        held[0] = max(held[0], len(self.keys))

    KVBank.store = counting
    try:
        with torch.no_grad():
            z, records = sample_kvlock(
                fam,
                pipe,
                bank,
                x0,
                noise,
                masks,
                prompts,
                resolve_schedule(settings),
                steps=4,
                omega0=omega0,
                interleave=interleave,
            )
    finally:
        KVBank.store = store
    return z, [(r.h, r.alpha, r.mode, r.source) for r in records], held[0]


@pytest.mark.parametrize(
    ("settings", "omega0", "mode"),
    [
        (EditSettings(alpha_fixed=1.0), 5.0, "foreground"),  # guidance passes paired in one batch
        (EditSettings(alpha_fixed=0.5, kappa=2), 5.0, "fuse"),  # full passes, conditional then unconditional
        (EditSettings(alpha_fixed=1.0, guidance_form="static"), 1.0, "foreground"),  # no unconditional pass
        (EditSettings(alpha_fixed=1.0, foreground_only=False), 5.0, "fuse"),
    ],
)
def test_lockstep_passes_give_the_same_edit_with_one_layer_of_kv_held(editor, job, settings, omega0, mode):
    blocks = len(editor.model.pipe.transformer.blocks)
    assert blocks > 1
    z_seq, steps_seq, held_seq = _sample(editor, job, settings, interleave=False, omega0=omega0)
    z_lock, steps_lock, held_lock = _sample(editor, job, settings, interleave=True, omega0=omega0)
    assert {m for _, _, m, _ in steps_lock} == {mode}
    assert torch.equal(z_lock, z_seq)
    assert steps_lock == steps_seq
    assert held_seq == blocks and held_lock == 1
    assert not editor.runtime.bank.keys  # nothing left behind for the next edit


def test_reusing_the_source_pass_keeps_the_whole_bank(editor, job):
    """source_refresh > 1 reads one step's K/V again on the next: the passes then run one after the other."""
    settings = EditSettings(alpha_fixed=1.0, source_refresh=2)
    z_seq, steps_seq, _ = _sample(editor, job, settings, interleave=False)
    z_lock, steps_lock, held = _sample(editor, job, settings, interleave=True)
    assert torch.equal(z_lock, z_seq) and steps_lock == steps_seq
    assert [s for *_, s in steps_lock] == ["full", "reused", "full", "reused"]
    assert held == len(editor.model.pipe.transformer.blocks)

"""Takes: one job, N versions that differ in their noise inside the matte only (tiny Wan, CPU, float32).

Take 1 is the one-take edit; every take is the source outside the feathered matte; the takes share the
plate's encode, the prompts, the reconstruction's decode and each step's source pass; run together or one
after another they are the same; a cancel keeps the takes already handed over."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import kvlock.editing.editor
from kvlock import EditRequest, EditSettings
from kvlock.editing.compositing import feather_matte
from kvlock.errors import EditCancelled, SettingsError
from kvlock.lock.kv_bank import KVBank
from kvlock.lock.noise import take_noise
from kvlock.progress import StepProgress
from kvlock.sampling.loop import sample_takes
from kvlock.settings import resolve_schedule

from ..support.clips import box_matte, make_clip, window_job

PROMPT = "a red cube"


@pytest.fixture(scope="module")
def shot():
    return make_clip(9, 64, 96, seed=21), box_matte(9, 64, 96, 18, 30, 22, 26, drift=1)


def _outside(matte: np.ndarray, feather: int) -> np.ndarray:
    return np.stack([feather_matte(m, feather) for m in matte]) == 0


def test_take_one_is_the_one_take_edit_and_every_take_is_the_source_outside_the_matte(editor, shot):
    frames, matte = shot
    settings = EditSettings(steps=3, seed=7, alpha_fixed=0.5)
    one = editor.edit(EditRequest(frames, matte, PROMPT, settings))
    handed: list[int] = []
    takes = editor.edit_takes(
        EditRequest(frames, matte, PROMPT, EditSettings(steps=3, seed=7, alpha_fixed=0.5, takes=3)),
        finished=lambda result: handed.append(result.take),
    )
    assert handed == [1, 2, 3] and [t.take for t in takes] == [1, 2, 3]
    assert [t.trace.takes for t in takes] == [3, 3, 3]
    assert takes[0].trace.execution["takes"]["run"].startswith("together")
    assert np.array_equal(takes[0].frames, one.frames)
    assert torch.equal(takes[0].latents[0], one.latents[0])
    outside = _outside(matte, settings.feather)
    for take in takes:
        assert np.array_equal(take.frames[outside], frames[outside])
    for a, b in ((0, 1), (0, 2), (1, 2)):  # other versions of the subject
        assert not np.array_equal(takes[a].frames[~outside], takes[b].frames[~outside])


def test_the_takes_latents_agree_outside_the_subject_at_every_step(editor):
    """Every take's background is locked to the same noised source at every step (take_noise)."""
    settings = EditSettings(alpha_fixed=0.5, kappa=2)
    fam, pipe, x0, noise, masks, prompts = window_job(editor, 31, 4, settings)
    inside = masks.latent[None, None]
    others = [take_noise(noise, torch.randn(x0.shape, generator=torch.Generator().manual_seed(k)), inside)
              for k in (1, 2)]  # fmt: skip
    seen: dict[int, list[torch.Tensor]] = {0: [], 1: [], 2: []}
    with torch.no_grad():
        outs = sample_takes(
            fam,
            pipe,
            editor.runtime.bank,
            x0,
            [noise, *others],
            masks,
            prompts,
            resolve_schedule(settings),
            steps=4,
            omega0=5.0,
            callback=lambda done: seen[done.take].append(done.latents.clone()),
        )
    background = (~masks.latent)[None, None].expand_as(x0)
    for step in range(4):
        for k in (1, 2):
            assert torch.equal(seen[k][step][background], seen[0][step][background])
        assert not torch.equal(seen[1][step][~background], seen[0][step][~background])
    assert [len(records) for _, records in outs] == [4, 4, 4]


@pytest.mark.parametrize("interleave", [True, False])
def test_one_source_pass_per_step_serves_every_take(editor, interleave):
    """Three takes at α = 1 capture the source's K/V once per layer per step, as one take does."""
    settings = EditSettings(alpha_fixed=1.0)
    fam, pipe, x0, noise, masks, prompts = window_job(editor, 32, 5, settings)
    layers = len(pipe.transformer.blocks)
    captures = [0]
    store = KVBank.store

    def counting(self, layer, key, value):
        captures[0] += 1
        store(self, layer, key, value)

    inside = masks.latent[None, None]
    noises = [noise] + [take_noise(noise, torch.randn_like(noise), inside) for _ in range(2)]
    KVBank.store = counting
    try:
        with torch.no_grad():
            outs = sample_takes(
                fam,
                pipe,
                editor.runtime.bank,
                x0,
                noises,
                masks,
                prompts,
                resolve_schedule(settings),
                steps=3,
                omega0=5.0,
                interleave=interleave,
            )
    finally:
        KVBank.store = store
    assert captures[0] == 3 * layers
    assert {r.mode for _, records in outs for r in records} == {"foreground"}
    assert not torch.equal(outs[0][0], outs[1][0])


def test_takes_run_one_after_another_are_the_takes_run_together(editor, shot, monkeypatch):
    frames, matte = shot
    request = EditRequest(frames, matte, PROMPT, EditSettings(steps=3, seed=3, alpha_fixed=1.0, takes=2))
    together = editor.edit_takes(request)
    monkeypatch.setattr(kvlock.editing.editor, "takes_together", lambda rt, job: (False, "one after another"))
    in_turn = editor.edit_takes(request)
    assert in_turn[0].trace.execution["takes"]["run"] == "one after another"
    for a, b in zip(together, in_turn, strict=True):
        assert np.array_equal(a.frames, b.frames)


def test_a_cancel_keeps_the_takes_handed_over_before_it(editor, shot):
    frames, matte = shot
    request = EditRequest(frames, matte, PROMPT, EditSettings(steps=2, takes=3))
    cancel, handed = threading.Event(), []

    def finished(result):
        handed.append(result)
        cancel.set()  # the editor asks to stop while take 1 is being saved

    with pytest.raises(EditCancelled) as stop:
        editor.edit_takes(request, cancel=cancel, finished=finished)
    assert stop.value.kept == 1 and [r.take for r in handed] == [1]
    assert "take 1 was finished and kept" in str(stop.value)


def test_a_cancel_while_the_takes_denoise_keeps_none(editor, shot):
    frames, matte = shot
    cancel, handed = threading.Event(), []

    def progress(p: StepProgress):
        if p.step == 0 and p.take == 1:
            cancel.set()

    with pytest.raises(EditCancelled) as stop:
        editor.edit_takes(
            EditRequest(frames, matte, PROMPT, EditSettings(steps=3, takes=2)),
            progress=progress,
            cancel=cancel,
            finished=handed.append,
        )
    assert stop.value.kept == 0 and stop.value.step == 1 and handed == []


def test_progress_reports_each_take_s_steps(editor, shot):
    frames, matte = shot
    seen: list[StepProgress] = []
    editor.edit_takes(EditRequest(frames, matte, PROMPT, EditSettings(steps=2, takes=2)), progress=seen.append)
    assert [(p.take, p.step) for p in seen] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert {p.takes for p in seen} == {2} and not any(p.in_turn for p in seen)
    assert seen[-1].fraction == 1.0


def test_a_long_clip_runs_its_takes_one_after_another(editor):
    frames = make_clip(29, 48, 64, seed=22)
    matte = box_matte(29, 48, 64, 12, 16, 20, 20, drift=1)
    seen: list[StepProgress] = []
    one = editor.edit(EditRequest(frames, matte, PROMPT, EditSettings(steps=2, window_overlap=5)))
    takes = editor.edit_takes(
        EditRequest(frames, matte, PROMPT, EditSettings(steps=2, window_overlap=5, takes=2)), progress=seen.append
    )
    assert takes[0].trace.execution["takes"]["run"].startswith("one after another")
    assert np.array_equal(takes[0].frames, one.frames)
    outside = _outside(matte, 4)
    assert np.array_equal(takes[1].frames[outside], frames[outside])
    assert not np.array_equal(takes[1].frames, takes[0].frames)
    assert all(p.in_turn for p in seen) and [p.take for p in seen] == [0] * 4 + [1] * 4
    assert seen[3].fraction == pytest.approx(0.5) and seen[-1].fraction == 1.0


def test_several_takes_ask_for_edit_takes_and_are_bounded(editor, shot):
    frames, matte = shot
    with pytest.raises(SettingsError, match="edit_takes"):
        editor.edit(EditRequest(frames, matte, PROMPT, EditSettings(takes=2)))
    with pytest.raises(SettingsError, match=r"takes must be in \[1, 16\]"):
        EditSettings(takes=17)

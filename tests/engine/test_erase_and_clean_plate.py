"""The clean plate inside an edit, and Erase, on the tiny random Wan (what the model paints does not matter here;
where it may paint, what it starts from and what is kept does).

- An erase keeps every pixel outside the feathered matte the source's, bit for bit, and inside the matte keeps
  what another frame showed as filmed (so there it is the true background, within the plate's precision),
  whatever the model does; the model paints only what was invented.
- ``source_plate="clean"``: the model's window starts from the clean plate (no old subject in it), and the
  composite still returns the source outside the feathered matte.
- An all-white matte: an erase is refused before any model work; a clean-plate edit falls back to the source
  there, with a warning.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import kvlock.editing.editor
from kvlock import EditRequest, EditSettings, InvalidRequest, MatteError, SettingsError
from kvlock.editing.composer import Composer
from kvlock.editing.compositing import feather_matte, inner_ramp
from kvlock.editing.decode_box import DecodeBox
from kvlock.media.colour import DisplayReferred
from kvlock.plate import INVENTED, ORIGINAL, SEEN, PlateMaker
from kvlock.settings import resolve_schedule
from kvlock.world.panning import panning_clip

SMALL = {"frames": 9, "height": 64, "width": 80, "radius": 9.0, "subject_start": (24.0, 30.0)}


def _outside(matte: np.ndarray, feather: int) -> np.ndarray:
    return np.stack([feather_matte(m, feather) for m in matte]) == 0


def test_an_erase_keeps_the_outside_exact_and_what_other_frames_showed_as_filmed(editor):
    clip = panning_clip(**SMALL)
    settings = EditSettings(steps=2, erase=True)
    result = editor.edit(EditRequest(clip.frames, clip.matte, "", settings, return_plate=True))
    outside = _outside(clip.matte, settings.feather)
    assert np.array_equal(result.frames[outside], clip.frames[outside])
    plate = result.plate
    assert plate is not None and plate.frames.shape == clip.frames.shape
    seen = plate.origin == SEEN
    assert seen.sum() > 0.9 * (clip.matte > 0).sum()
    assert np.array_equal(result.frames[seen], plate.frames[seen])  # kept as filmed, not repainted
    truth = np.rint(clip.background * 255.0)
    error = np.abs(result.frames.astype(float) - truth).max(axis=-1)[seen]
    assert error.mean() <= 1.5
    red = (result.frames[..., 0] > 200) & (result.frames[..., 1] < 60)
    assert not (red & clip.subject).any()  # the subject is gone
    assert result.trace.schedule_source["source_plate"] == "erase (always the clean plate)"
    assert result.trace.settings["source_plate"] == "clean"
    assert result.trace.plate["seen_fraction"] == pytest.approx(seen.sum() / (clip.matte > 0).sum())
    assert "plate" in result.trace.stage_seconds


def test_an_erase_lets_the_model_paint_what_was_invented_and_everything_when_asked(editor):
    """A still disc in a still shot: nothing is seen, so every hole pixel is the model's (ramped in from the
    invented region's edge); with erase_keep_seen off the model repaints the seen pixels too."""
    still = panning_clip(**SMALL, pan=(0.0, 0.0), subject_speed=(0.0, 0.0))
    result = editor.edit(EditRequest(still.frames, still.matte, "", EditSettings(steps=2, erase=True)))
    hole = still.matte > 0
    plate = PlateMaker(still.frames, still.matte, DisplayReferred(255.0)).plate(0, SMALL["frames"])
    assert (plate.origin[hole] == INVENTED).all()
    deep = np.stack([inner_ramp(m, 4) for m in hole]) >= 1.0
    assert (result.frames[deep] != plate.frames[deep]).any(axis=-1).mean() > 0.5  # the model's, not the plate's
    moving = panning_clip(**SMALL)
    settings = EditSettings(steps=2, erase=True, erase_keep_seen=False)
    repaint = editor.edit(EditRequest(moving.frames, moving.matte, "the background", settings, return_plate=True))
    seen = repaint.plate.origin == SEEN
    assert (repaint.frames[seen] != repaint.plate.frames[seen]).any(axis=-1).mean() > 0.5
    outside = _outside(moving.matte, settings.feather)
    assert np.array_equal(repaint.frames[outside], moving.frames[outside])


def test_a_clean_plate_edit_starts_the_model_from_the_plate(editor, monkeypatch):
    clip = panning_clip(**SMALL)
    given = []
    window_source = kvlock.editing.editor.window_source

    def spy(plan, source, made):
        given.append(source.copy())
        return window_source(plan, source, made)

    monkeypatch.setattr(kvlock.editing.editor, "window_source", spy)
    red = lambda frames: (frames[..., 0] > 200) & (frames[..., 1] < 60)  # noqa: E731
    result = editor.edit(EditRequest(clip.frames, clip.matte, "a blue square", EditSettings(steps=2)))
    assert red(given[-1]).sum() == red(clip.frames).sum()  # as filmed: the old subject is in the model's start
    assert result.trace.settings["source_plate"] == "original"
    clean = EditSettings(steps=2, source_plate="clean")
    result = editor.edit(EditRequest(clip.frames, clip.matte, "a blue square", clean))
    assert not red(given[-1]).any()  # the clean plate: nothing of the old subject left for the model
    assert result.trace.schedule_source["source_plate"] == "set for this edit"
    outside = _outside(clip.matte, clean.feather)
    assert np.array_equal(result.frames[outside], clip.frames[outside])
    assert result.trace.plate["frames"] == SMALL["frames"]


def test_a_long_clip_makes_each_frame_of_its_clean_plate_once(editor):
    clip = panning_clip(**{**SMALL, "frames": 29})
    settings = EditSettings(steps=2, source_plate="clean", window_overlap=5)
    result = editor.edit(EditRequest(clip.frames, clip.matte, "a blue square", settings, return_plate=True))
    assert len(result.trace.windows) == 2 and result.trace.windows[1].context == 5
    assert result.trace.plate["frames"] == 29  # the second window's lead-in reused the first's plate
    outside = _outside(clip.matte, settings.feather)
    assert np.array_equal(result.frames[outside], clip.frames[outside])
    whole = PlateMaker(clip.frames, clip.matte, DisplayReferred(255.0)).plate(0, 29)
    assert np.array_equal(result.plate.frames, whole.frames) and np.array_equal(result.plate.origin, whole.origin)


def test_bad_erase_requests_are_refused_before_any_model_work(editor, monkeypatch):
    clip = panning_clip(**SMALL)
    white = np.ones_like(clip.matte)

    def no_model_work(*args, **kwargs):
        raise AssertionError("model work started")

    monkeypatch.setattr(editor.runtime, "encode_prompts", no_model_work)
    with pytest.raises(MatteError, match="covers every pixel of 9 frame"):
        editor.edit(EditRequest(clip.frames, white, "", EditSettings(steps=2, erase=True)))
    with pytest.raises(InvalidRequest, match="prompt is empty"):
        editor.edit(EditRequest(clip.frames, clip.matte, " ", EditSettings(steps=2)))
    with pytest.raises(SettingsError, match="erase paints the background from the clean plate"):
        EditSettings(erase=True, source_plate="original")
    # a model whose schedule starts from the source as filmed still erases from the clean plate
    assert resolve_schedule(EditSettings(erase=True), {"source_plate": "original"}).source_plate == "clean"
    assert resolve_schedule(EditSettings(), {"source_plate": "clean"}).source_plate == "clean"
    assert resolve_schedule(EditSettings(), {}).source_plate == "original"


def test_a_clean_plate_edit_over_an_all_white_matte_falls_back_to_the_source_with_a_warning(editor):
    clip = panning_clip(**SMALL)
    white = np.ones_like(clip.matte)
    result = editor.edit(EditRequest(clip.frames, white, "a blue square", EditSettings(steps=2, source_plate="clean")))
    assert any("no background is visible" in w for w in result.warnings)
    assert result.trace.plate["seen_fraction"] == 0.0


def test_an_erase_of_several_takes_keeps_what_was_seen_in_each_and_shares_one_plate(editor, monkeypatch):
    """Takes of an erase: each is the source outside the feathered matte and the filmed background where
    another frame showed it; take 1 is the one-take erase; they differ only where the model paints; each
    carries the clip's plate and its figures (made once). Run one after another they are the takes run together."""
    clip = panning_clip(**SMALL)
    settings = EditSettings(steps=2, erase=True, takes=2)
    request = EditRequest(clip.frames, clip.matte, "", settings, return_plate=True)
    together = editor.edit_takes(request)
    assert together[0].trace.execution["takes"]["run"].startswith("together")
    one = editor.edit(EditRequest(clip.frames, clip.matte, "", EditSettings(steps=2, erase=True)))
    assert np.array_equal(together[0].frames, one.frames)
    outside = _outside(clip.matte, settings.feather)
    seen = together[0].plate.origin == SEEN
    assert seen.any()
    for take in together:
        assert np.array_equal(take.frames[outside], clip.frames[outside])
        assert np.array_equal(take.frames[seen], take.plate.frames[seen])
        assert np.array_equal(take.plate.frames, together[0].plate.frames)
        assert take.trace.plate["frames"] == SMALL["frames"] and take.trace.plate["seen_fraction"] > 0.9
        assert take.trace.settings["source_plate"] == "clean"
    assert not np.array_equal(together[0].frames, together[1].frames)  # the model's paint differs
    monkeypatch.setattr(kvlock.editing.editor, "takes_together", lambda rt, job: (False, "one after another"))
    in_turn = editor.edit_takes(request)
    for a, b in zip(together, in_turn, strict=True):
        assert np.array_equal(a.frames, b.frames)
        assert b.trace.plate["frames"] == SMALL["frames"]  # made once, for both takes


def test_the_takes_of_a_long_clean_plate_edit_start_each_window_from_the_plate_made_once(editor, monkeypatch):
    """A long clip's takes run one after another through the windows: every window of every take starts from
    the clean plate (no old subject in what the model sees), which is made once for all of them."""
    clip = panning_clip(**{**SMALL, "frames": 29})
    given = []
    window_source = kvlock.editing.editor.window_source

    def spy(plan, source, made):
        given.append(source.copy())
        return window_source(plan, source, made)

    monkeypatch.setattr(kvlock.editing.editor, "window_source", spy)
    settings = EditSettings(steps=2, source_plate="clean", window_overlap=5, takes=2)
    takes = editor.edit_takes(EditRequest(clip.frames, clip.matte, "a blue square", settings, return_plate=True))
    red = lambda frames: (frames[..., 0] > 200) & (frames[..., 1] < 60)  # noqa: E731
    assert len(given) == 3  # window 1 is encoded once for both takes; window 2 continues from each take's own
    assert not any(red(frames).any() for frames in given)
    whole = PlateMaker(clip.frames, clip.matte, DisplayReferred(255.0)).plate(0, 29)
    outside = _outside(clip.matte, settings.feather)
    for take in takes:
        assert take.trace.execution["takes"]["run"].startswith("one after another")
        assert take.trace.plate["frames"] == 29
        assert np.array_equal(take.plate.frames, whole.frames) and np.array_equal(take.plate.origin, whole.origin)
        assert np.array_equal(take.frames[outside], clip.frames[outside])
    assert not np.array_equal(takes[0].frames, takes[1].frames)


@pytest.mark.parametrize("feather", [0, 2, 4])
def test_an_erase_keeps_the_plate_over_a_region_exactly_as_over_the_whole_frame(feather):
    """The composite keeps the seen pixels and ramps the model's paint in from the invented part's edge; on the
    device it filters the map over its region only, which must give what the whole frame's map gives, also
    where the region cuts through the hole."""
    still = panning_clip(**SMALL, pan=(0.0, 0.0), subject_speed=(0.0, 0.0))
    for clip in (still, panning_clip(**SMALL)):
        plate = PlateMaker(clip.frames, clip.matte, DisplayReferred(255.0)).plate(0, SMALL["frames"])
        request = EditRequest(clip.frames, clip.matte, "")
        composer = Composer(request, DisplayReferred(255.0), clip.matte, feather, torch.device("cpu"), True)
        composer.plate = plate
        for rows, cols in (
            (slice(10, 50), slice(12, 60)),
            (slice(0, 64), slice(0, 80)),
            (slice(20, 40), slice(20, 45)),
        ):
            box = DecodeBox(rows, cols, slice(0, 1), slice(0, 1), 8)
            kept = composer._keep(slice(2, 7), box).numpy()
            whole = [
                np.where(plate.origin[j] == ORIGINAL, 0.0, 1.0 - inner_ramp(plate.origin[j] == INVENTED, feather))
                for j in range(2, 7)
            ]
            assert np.array_equal(kept, np.stack(whole)[:, rows, cols].astype(np.float32))

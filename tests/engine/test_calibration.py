"""τ per model: the quantile rule, ``kvlock calibrate`` writing it beside a model, and edits naming its source."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from kvlock import Editor, EditRequest, EditSettings, InvalidRequest, ModelLoadError
from kvlock.calibration import (
    CalibrationClip,
    calibration_settings,
    collect_h,
    fit_tau,
    measured_h,
    regime_settings,
    tau_from_samples,
    write_calibration,
)
from kvlock.media.encode import write_video
from kvlock.settings import DEFAULT_TAU, resolve_schedule
from kvlock.world.demo_clip import demo_clip
from kvlock.world.tiny import build_tiny_wan
from kvlock_cli.main import main as kvlock

from ..support.clips import box_matte, make_clip


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny-wan"
    build_tiny_wan().save_pretrained(path)
    return path


def test_tau_is_the_quantile_of_the_measured_values():
    samples = [0.004, 0.001, 0.003, 0.002, float("nan")]
    assert tau_from_samples(samples, 0.5) == pytest.approx(0.0025)
    assert tau_from_samples(samples, 0.75) == pytest.approx(0.00325)
    with pytest.raises(InvalidRequest, match="no h values"):
        tau_from_samples([], 0.5)
    with pytest.raises(ValueError):
        tau_from_samples(samples, 1.0)


def test_the_start_holds_the_lock_firm_and_the_rounds_run_the_control_s_own_regime():
    s = resolve_schedule(calibration_settings(EditSettings(kappa=7, metric_window=3, steps=9, tau=0.5)))
    assert (s.alpha_fixed, s.b, s.kappa, s.metric_window, s.steps) == (1.0, 1.0, 7, 3, 9)
    live = regime_settings(EditSettings(kappa=7, metric_window=3, steps=9), 0.25)
    assert (live.method, live.alpha_fixed, live.tau, live.kappa, live.metric_window) == ("kvlock", None, 0.25, 7, 3)
    assert live.b is None and live.alpha_early is None  # the model's schedule, as an edit gets it


def test_tau_is_refitted_in_the_regime_the_control_runs_in(editor):
    """The fitted τ is the quantile of h measured with the control live at the previous round's τ — not the
    firm lock's — and the rounds stop once τ settles."""
    clips = [
        CalibrationClip(make_clip(9, 64, 64, seed=i), box_matte(9, 64, 64, 16, 16, 32, 32), "a red cube", seed=i)
        for i in range(2)
    ]
    base = EditSettings(steps=6, kappa=4, metric_window=2)
    fit = fit_tau(editor, clips, base, 0.75, rounds=2)
    firm = tau_from_samples(collect_h(editor, clips, calibration_settings(base)), 0.75)
    assert fit.rounds[0] == pytest.approx(firm)
    assert 2 <= len(fit.rounds) <= 3
    again = collect_h(editor, clips, regime_settings(base, fit.rounds[-2]))
    assert fit.samples == pytest.approx(again) and fit.tau == pytest.approx(tau_from_samples(again, 0.75))


def test_measured_h_keeps_only_full_windows(editor):
    frames, matte = make_clip(9, 64, 64), box_matte(9, 64, 64, 16, 16, 24, 24)
    settings = EditSettings(steps=8, kappa=6, metric_window=3, tau=1.0)
    result = editor.edit(EditRequest(frames, matte, "a red cube", settings))
    steps = result.trace.windows[0].steps
    assert [s.h is None for s in steps] == [True, True, True] + [False] * 5  # 2 before control, 1 sample
    assert measured_h(result.trace, 3) == [s.h for s in steps[4:]]  # windows of 3 from the 5th step on


def test_kvlock_calibrate_writes_tau_beside_the_model_and_edits_name_it(folder, tmp_path, capsys):
    frames, matte = demo_clip(frames=9, height=48, width=64)
    write_video(tmp_path / "shot.mkv", frames, Fraction(24), "ffv1")
    write_video(tmp_path / "matte.mkv", np.repeat(matte[..., None], 3, -1), Fraction(24), "ffv1")
    (folder / "kvlock.json").write_text(json.dumps({"height": 48, "width": 64, "frames": 9, "note": "kept"}))
    clip = ["--clip", str(tmp_path / "shot.mkv"), str(tmp_path / "matte.mkv"), "a red cube"]
    common = ["calibrate", "--model", str(folder), *clip, "--steps", "6", "--metric-window", "2", "--kappa", "4"]
    assert kvlock([*common, "--dry-run"]) == 0
    assert "tau" not in json.loads((folder / "kvlock.json").read_text())
    assert kvlock(common) == 0
    data = json.loads((folder / "kvlock.json").read_text())
    assert data["tau"] > 0 and data["note"] == "kept" and data["calibration"]["samples"] == 3
    assert "quantile 0.75 of 3 h values in the control's regime" in data["tau_source"]
    assert "(W=2, κ=4, steps=6)" in data["tau_source"] and data["tau"] == data["calibration"]["tau_rounds"][-1]
    result = Editor.from_pretrained(str(folder)).edit(EditRequest(frames, matte, "a blue ball", EditSettings(steps=2)))
    assert result.trace.settings["tau"] == data["tau"] and result.trace.tau_source == data["tau_source"]
    assert not any("calibrated" in w for w in result.warnings)
    capsys.readouterr()
    assert kvlock(["calibrate", "--model", str(folder)]) == 5  # a folder needs the user's clips
    assert "--clip SOURCE MATTE PROMPT" in capsys.readouterr().err


def test_an_uncalibrated_model_gets_the_default_with_a_notice(editor):
    frames, matte = make_clip(9, 64, 64), box_matte(9, 64, 64, 16, 16, 24, 24)
    result = editor.edit(EditRequest(frames, matte, "a red cube", EditSettings(steps=2)))
    assert result.trace.settings["tau"] == DEFAULT_TAU and "never calibrated" in result.trace.tau_source
    assert any("kvlock calibrate" in w for w in result.warnings)
    chosen = editor.edit(EditRequest(frames, matte, "a red cube", EditSettings(steps=2, tau=0.5)))
    assert chosen.trace.tau_source == "set for this edit" and not chosen.warnings


def test_a_broken_calibration_is_refused_when_the_model_loads(folder, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in folder.iterdir():
        (broken / item.name).symlink_to(item)
    (broken / "kvlock.json").unlink()
    write_calibration(broken, {"tau": -1.0})
    with pytest.raises(ModelLoadError, match="tau must be a positive number"):
        Editor.from_pretrained(str(broken))

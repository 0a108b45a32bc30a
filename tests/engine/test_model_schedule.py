"""A model's own lock schedule (its kvlock.json): applied to what a request leaves unset, named in the trace,
refused at load when it is out of range, and left alone by every field the request sets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from kvlock import Editor, EditRequest, EditSettings, ModelLoadError
from kvlock.calibration import write_calibration
from kvlock.settings import SCHEDULE_DEFAULTS, resolve_schedule, schedule_defaults, with_schedule
from kvlock.world.tiny import build_tiny_wan

from ..support.clips import box_matte, make_clip

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny-wan"
    build_tiny_wan().save_pretrained(path)
    return path


def _folder_with(built: Path, tmp_path: Path, record: dict) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    for item in built.iterdir():
        (folder / item.name).symlink_to(item)
    write_calibration(folder, {"height": 48, "width": 64, "frames": 9, **record})  # the tiny model's size
    return folder


CLIP = (make_clip(9, 64, 64), box_matte(9, 64, 64, 16, 16, 24, 24))


def test_a_request_field_wins_then_the_models_schedule_then_the_engine():
    schedule = {"method": "fixed_alpha=0.5", "kappa": 7}
    s = with_schedule(EditSettings(kappa=3, b=1.5), schedule)
    assert (s.method, s.kappa, s.b, s.alpha_early) == ("fixed_alpha=0.5", 3, 1.5, SCHEDULE_DEFAULTS["alpha_early"])
    assert with_schedule(EditSettings()) == with_schedule(EditSettings(), {})
    assert resolve_schedule(EditSettings(), {"method": "no_lock"}).alpha_fixed == 0.0


def test_a_folders_schedule_drives_edits_that_set_nothing(built, tmp_path):
    source = "bench/quality.py --calibrate: no lock won"
    folder = _folder_with(built, tmp_path, {"schedule": {"method": "no_lock"}, "schedule_source": source})
    editor = Editor.from_pretrained(str(folder))
    plain = editor.edit(EditRequest(*CLIP, "a red cube", EditSettings(steps=3, kappa=2)))
    assert plain.trace.settings["alpha_fixed"] == 0.0 and plain.trace.settings["guidance_form"] == "static"
    assert source in plain.trace.schedule_source["method"]
    assert plain.trace.schedule_source["kappa"] == "set for this edit"
    assert plain.trace.schedule_source["b"] == "the engine's default"
    assert {s.mode for w in plain.trace.windows for s in w.steps} == {"off"}  # no source pass: nothing locked
    assert any("ignores kappa" in w for w in plain.warnings)  # κ asked for, but the model's method has no κ
    locked = editor.edit(
        EditRequest(*CLIP, "a red cube", EditSettings(steps=3, kappa=2, method="kvlock", alpha_early=1.0))
    )
    assert locked.trace.settings["alpha_fixed"] is None and locked.trace.settings["guidance_form"] == "kvlock"
    assert locked.trace.schedule_source["method"] == "set for this edit"
    assert not any("ignores" in w for w in locked.warnings)
    assert {s.mode for w in locked.trace.windows for s in w.steps} != {"off"}


def test_a_folders_strength_sets_where_denoising_starts_unless_the_request_sets_it(built, tmp_path):
    folder = _folder_with(built, tmp_path, {"schedule": {"method": "no_lock", "strength": 0.5}})
    editor = Editor.from_pretrained(str(folder))
    model_s = editor.edit(EditRequest(*CLIP, "a red cube", EditSettings(steps=4)))
    assert model_s.trace.settings["strength"] == 0.5 and len(model_s.trace.windows[0].steps) == 2  # from step 2 of 4
    assert "the model's schedule" in model_s.trace.schedule_source["strength"]
    asked = editor.edit(EditRequest(*CLIP, "a red cube", EditSettings(steps=4, strength=1.0)))
    assert asked.trace.settings["strength"] == 1.0 and len(asked.trace.windows[0].steps) == 4
    assert asked.trace.schedule_source["strength"] == "set for this edit"


def test_without_a_schedule_the_engines_defaults_apply(built, tmp_path):
    editor = Editor.from_pretrained(str(_folder_with(built, tmp_path, {"tau": 0.01})))
    result = editor.edit(EditRequest(*CLIP, "a red cube", EditSettings(steps=2)))
    assert {k: result.trace.settings[k] for k in SCHEDULE_DEFAULTS} == schedule_defaults(2)
    assert schedule_defaults(2) == {**SCHEDULE_DEFAULTS, "metric_window": 2, "kappa": 2}  # W, κ follow the steps
    sources = result.trace.schedule_source
    assert {sources["metric_window"], sources["kappa"]} == {"the engine's default for 2 steps"}
    assert {v for k, v in sources.items() if k not in ("metric_window", "kappa")} == {"the engine's default"}


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ({"methd": "no_lock"}, "unknown settings methd"),
        ({"kappa": -3}, "kappa must be in"),
        ({"method": "teleport"}, "unknown method"),
        ({"guidance_form": "loud"}, "guidance_form must be one of"),
        (["no_lock"], "schedule must be an object"),
        ({"strength": 0.0}, "strength must be in"),
    ],
)
def test_a_bad_schedule_is_refused_when_the_model_loads(built, tmp_path, schedule, message):
    folder = _folder_with(built, tmp_path, {"schedule": schedule})
    with pytest.raises(ModelLoadError, match=message):
        Editor.from_pretrained(str(folder))


def test_the_benchmark_stores_only_what_the_chosen_method_uses(tmp_path):
    write_schedule = _bench("quality").write_schedule
    log = {
        "date": "2026-12-02",
        "args": {"device": "cuda", "calibration_cases": 24, "steps": 50},
        "chosen": {"method": "no_lock", "kappa": 20, "alpha_early": 1.0, "tau": 0.001, "winner": "method=no_lock"},
    }
    (tmp_path / "kvlock.json").write_text(json.dumps({"tau": 0.002, "height": 96}))
    data = json.loads(write_schedule(log, tmp_path).read_text())
    assert data["schedule"] == {"method": "no_lock"} and data["tau"] == 0.002 and data["height"] == 96
    assert "calibration split, 24 cases" in data["schedule_source"]
    log["chosen"] = {"method": "kvlock", "kappa": 30, "alpha_early": 0.5, "winner": "kappa=30"}
    assert json.loads(write_schedule(log, tmp_path).read_text())["schedule"] == {
        "method": "kvlock",
        "kappa": 30,
        "alpha_early": 0.5,
    }


def _bench(name: str):
    sys.path[:0] = [str(ROOT / "bench")]
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(ROOT / "bench"))


def test_the_embedded_model_ships_the_schedule_its_benchmark_chose():
    data = json.loads((ROOT / "kvlock" / "models" / "kvlock-tiny" / "kvlock.json").read_text())
    log = json.loads((ROOT / "docs" / "benchmarks" / "quality-tiny-calibrate-2026-12-02.json").read_text())
    assert data["schedule"]["method"] == log["chosen"]["method"]
    assert log["chosen"]["date" if "date" in log["chosen"] else "winner"] in data["schedule_source"]
    # The strength run compared the shipped 0.8 ("defaults" in that run) with 1 and 0.7 on the calibration split;
    # the benchmark's own selection rule over its rows must pick the strength the folder ships.
    name = "quality-tiny-strength08-calibration-2026-12-02.json"
    run = json.loads((ROOT / "docs" / "benchmarks" / name).read_text())
    assert run["args"]["split"] == "calibration" and name in data["schedule_source"]
    candidates = {0.8: "defaults", 1.0: "strength 1", 0.7: "strength 0.7"}
    assert _bench("quality")._choose(candidates, run["test_rows"], 0.8) == data["schedule"]["strength"] == 0.8


def test_one_knob_chosen_alone_joins_the_schedule_the_folder_has(tmp_path):
    quality = _bench("quality")
    (tmp_path / "kvlock.json").write_text(
        json.dumps({"schedule": {"method": "no_lock", "strength": 0.8}, "schedule_source": "earlier run"})
    )
    log = {
        "date": "2026-12-07",
        "args": {"device": "cuda", "calibration_cases": 48, "steps": 50, "choose": "source_plate"},
        "chosen": {
            "source_plate": "clean",
            "strength": 1.0,
            "winner": "source_plate=clean, strength=1.0",
            "merge": True,
        },
    }
    data = json.loads(quality.write_schedule(log, tmp_path).read_text())
    assert data["schedule"] == {"method": "no_lock", "strength": 1.0, "source_plate": "clean"}
    assert data["schedule_source"].startswith("earlier run; bench/quality.py --choose source_plate 2026-12-07")
    # the rule over --choose's candidates: accuracy within 2 points of the best, then the leftover
    rows = {
        "source_plate=original": [{"all": 1.0, "leftover_psnr": 15.0}, {"all": 0.0, "leftover_psnr": 16.0}],
        "source_plate=clean": [{"all": 1.0, "leftover_psnr": 25.0}, {"all": 1.0, "leftover_psnr": 24.0}],
    }
    tags = {t: t for t in rows}
    assert quality._choose(tags, rows, "source_plate=original") == "source_plate=clean"
    rows["source_plate=clean"][1]["all"] = 0.0  # as accurate as the incumbent: the leftover decides
    assert quality._choose(tags, rows, "source_plate=original") == "source_plate=clean"
    rows["source_plate=clean"] = [{"all": 0.0, "leftover_psnr": 30.0}, {"all": 0.0, "leftover_psnr": 30.0}]
    assert quality._choose(tags, rows, "source_plate=original") == "source_plate=original"  # accuracy first
    assert quality._tag(quality.CHOICES["source_plate"][0]) == "source_plate=clean"

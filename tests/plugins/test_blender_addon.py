"""The Blender add-on inside real Blender-as-a-module (bpy 5.0.1 on Python 3.11, bpy 5.2.3 on Python 3.13)
against a live server on loopback with the tiny model.

Each case runs ``tests/support/blender_driver.py`` in a bpy venv (made by ``scripts/setup_blender.sh``), which builds a
scene from a description, presses the panel's buttons through the operators and pumps the add-on's timer;
this side checks what landed in the sequencer and on disk against the media files themselves.

The scenes are unlike a plate dropped on an empty timeline: the plate's size and aspect differ from the
scene's, the scene starts at frame 1001 at 30000/1001 fps, the plate is fitted, offset, trimmed at both ends
and has a hold offset, the matte is a half-resolution clip with its own scale and timing on a muted channel
above, strips sit above and below, and the scene's colour settings are far from neutral (AgX, a look,
exposure, gamma, white balance, an output override).
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from kvlock.editing.compositing import feather_matte
from kvlock.media.decode import probe, read_frames
from kvlock.media.encode import write_video

from ..support.blender_launch import VENVS, run_driver
from ..support.media_helpers import unique_frames, write_image_sequence, write_turned
from ..support.server_helpers import start, stop_after_take_one

RATE = Fraction(30000, 1001)
PLATE = (160, 88)  # the plate's size (20:11); the scene is 96×96
MATTE = (80, 44)  # the matte clip is half the plate's resolution, scaled up twice as much in the scene
VISIBLE = (1005, 1014)  # timeline frames the trimmed plate shows
PLATE_START, PLATE_TRIM = 1003, (3, 1)  # content start and hold offsets (media frames cut at each end)
MATTE_START = 1000
FEATHER = 4

pytestmark = pytest.mark.skipif(
    not all((v / "bin" / "python").exists() for v in VENVS.values()) and not os.environ.get("CI"),
    reason="bpy venvs missing: run scripts/setup_blender.sh",
)


def matte_box(m: int) -> tuple[slice, slice]:
    """The white box of matte frame ``m``, in matte pixels: it moves one pixel right per frame."""
    return slice(10, 25), slice(8 + m, 25 + m)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    app = start(tmp_path_factory.mktemp("blender-server"), preload=["tiny"])
    yield app
    app.stop(grace=0)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blender-media")
    plate = unique_frames(24, PLATE[1], PLATE[0], seed=3)
    matte = np.zeros((30, MATTE[1], MATTE[0], 3), np.uint8)
    for m in range(30):
        matte[m][matte_box(m)] = 255
    square = unique_frames(24, 96, 96, seed=5)
    write_video(folder / "shot.mkv", plate, RATE, timecode="01:00:00:00")
    write_video(folder / "matte.mkv", matte, RATE)
    write_video(folder / "square.mkv", square, Fraction(24))
    write_image_sequence(folder / "seq", plate[:12], start_number=1001)
    twin = np.zeros((24, PLATE[1], PLATE[0], 3), np.uint8)
    twin[:, 20:50, 30:70] = 255  # a matte made for the plate: its size, its frames
    write_video(folder / "twin.mkv", twin, RATE)
    return {"folder": folder, "plate": plate, "matte": matte[..., 0], "square": square}


def composition(media, **changes) -> dict:
    """The scene most tests use; ``changes`` replace its parts."""
    folder = media["folder"]
    strips = [
        {"name": "bed", "kind": "color", "channel": 1, "start": 1001, "length": 40, "color": [0.1, 0.3, 0.2]},
        {
            "name": "shot",
            "kind": "movie",
            "path": str(folder / "shot.mkv"),
            "channel": 2,
            "start": PLATE_START,
            "fit": "FIT",
            "trim": list(PLATE_TRIM),
            "content_start": PLATE_START,
            "handles": list(VISIBLE),
            "transform": {"offset_x": 6.0, "offset_y": -4.0},
        },
        {"name": "title", "kind": "color", "channel": 3, "start": 1020, "length": 10},
        {
            "name": "matte",
            "kind": "movie",
            "path": str(folder / "matte.mkv"),
            "channel": 4,
            "start": MATTE_START,
            "transform": {"scale_x": 1.2, "scale_y": 1.2, "offset_x": 6.0, "offset_y": -4.0},
        },
        {"name": "logo", "kind": "color", "channel": 5, "start": 1004, "length": 12, "blend_alpha": 0.3},
    ]
    cfg = {
        "scene": {
            "width": 96,
            "height": 96,
            "fps": [30, 1.001],
            "frame_start": 1001,
            "frame_end": 1040,
            "view": "AgX",
            "look": True,
            "exposure": 0.7,
            "gamma": 1.3,
            "white_balance": 4000.0,
            "override": True,
        },
        "strips": strips,
        "channels": {"4": {"mute": True, "name": "mattes"}},
        "active": "shot",
        "props": {"matte_strip": "matte"},
    }
    return cfg | changes


def drive(version: str, scenario: str, tmp_path: Path, server, cfg: dict, **extra) -> dict:
    """Run one scenario in Blender ``version``; return its report (``out``: the folder results go to)."""
    out = tmp_path / "results"
    out.mkdir(parents=True)
    cfg = cfg | {"out": str(out), "address": server.address, "token": server.token, "steps": 3} | extra
    report = run_driver(version, scenario, cfg, tmp_path)
    report["out"] = out
    return report


def by_name(strips: list[dict]) -> dict[str, dict]:
    return {s["name"]: s for s in strips}


def plate_frames(media, start: int, end: int) -> np.ndarray:
    """The plate's own media frames shown at timeline frames [start, end): content start and hold offset."""
    first = start - PLATE_START + PLATE_TRIM[0]
    return media["plate"][first : first + end - start]


def expected_outside(media, start: int, end: int) -> np.ndarray:
    """Where the result must equal the plate: beyond the feathered matte, carried into plate pixels (each
    matte pixel covers 2×2 plate pixels; one more pixel for the bilinear edge)."""
    mattes = []
    for t in range(start, end):
        plate_matte = np.zeros((PLATE[1], PLATE[0]), np.float32)
        rows, cols = matte_box(t - MATTE_START)
        plate_matte[2 * rows.start - 1 : 2 * rows.stop + 1, 2 * cols.start - 1 : 2 * cols.stop + 1] = 1.0
        mattes.append(feather_matte(plate_matte, FEATHER) == 0)
    return np.stack(mattes)


def assert_composition_unchanged(report: dict, *, added: str, moved: dict[str, int] | None = None) -> None:
    """Every strip but the result is as it was (a shift moves channels, nothing else); so are the scene's
    colour and output settings and the channels' names and mutes (moved with their strips on a shift)."""
    before, after = by_name(report["strips_before"]), by_name(report["strips"])
    assert set(after) == set(before) | {added}
    for name, strip in before.items():
        expected = strip | {"channel": strip["channel"] + (moved or {}).get(name, 0)}
        assert after[name] == expected, name
    assert report["scene_after"] == report["scene_before"]
    if not moved:
        assert report["channels"] == report["channels_before"]


def check_result(report: dict, media, visible: tuple[int, int] = VISIBLE) -> dict:
    """The result strip's file against the plate's own media; returns the strip."""
    result = by_name(report["strips"])["shot KV-Lock"]
    path = Path(result["filepath"])
    info = probe(path)
    assert (info.width, info.height) == PLATE and info.rate == RATE and info.frames == visible[1] - visible[0]
    first = visible[0] - PLATE_START + PLATE_TRIM[0]
    assert info.timecode == f"01:00:00:{first:02d}"  # the plate's own timecode at its first edited frame
    edited = read_frames(info, 0, info.frames)[..., :3]
    plate = plate_frames(media, *visible)
    outside = expected_outside(media, *visible)
    assert np.array_equal(edited[outside], plate[outside])  # bit for bit, the plate's own pixels
    inside = np.zeros_like(outside)
    for i, t in enumerate(range(*visible)):
        rows, cols = matte_box(t - MATTE_START)
        inside[i, 2 * rows.start + 2 : 2 * rows.stop - 2, 2 * cols.start + 2 : 2 * cols.stop - 2] = True
    changed = (edited != plate).any(axis=-1)
    assert changed[inside].mean() > 0.5  # the model repainted the subject (tiny model: new pixels, not a look)
    return result


@pytest.mark.parametrize("version", ["5.0", "5.2"])
def test_edits_the_plates_own_pixels_where_the_matte_shows(version, tmp_path, server, media):
    report = drive(version, "render", tmp_path, server, composition(media, compare_frames=[1009]), undo=True)
    assert report["blender"].startswith(version)
    assert report["operator"] == ["FINISHED"] and report["registered"]
    assert report["status"].startswith("Done: shot.kvlock.mkv on channel 3"), report["status"]
    assert not report["running"]
    assert any(t.startswith("step ") and "σ²" in t for t in report["step_texts"]), report["step_texts"]
    result = check_result(report, media)
    # placed directly above the source, under everything that was above it, where the source was
    shot = by_name(report["strips_before"])["shot"]
    assert result["channel"] == 3 and (result["start"], result["end"]) == VISIBLE
    assert result["transform"] == shot["transform"] and result["crop"] == shot["crop"]
    assert Path(result["filepath"]).parent == report["out"]
    assert {p.name for p in report["out"].iterdir()} == {
        "shot.kvlock.mkv",
        "shot.kvlock.trace.json",
        "shot.kvlock.trace.png",
    }
    assert_composition_unchanged(report, added="shot KV-Lock")
    # the composition: only where the matte sits on the canvas did anything change
    before, after = (np.load(p) for p in report["compare"][0])
    differs = (before != after).any(axis=-1)
    m = 1009 - MATTE_START
    rows, cols = matte_box(m)
    top, bottom = 96 - (1.2 * (MATTE[1] - rows.start) + 17.6), 96 - (1.2 * (MATTE[1] - rows.stop) + 17.6)
    left, right = 1.2 * cols.start + 6, 1.2 * cols.stop + 6
    margin = 0.6 * 2 * FEATHER + 3  # the feather in canvas pixels, and the canvas's own bilinear edge
    footprint = np.zeros_like(differs)
    footprint[int(top - margin) : int(bottom + margin) + 1, int(left - margin) : int(right + margin) + 1] = True
    assert differs.any() and not differs[~footprint].any()
    # Undo removes the placed strip: it is added by an UNDO-flagged operator, which is what makes Blender
    # record an undo step. Blender-as-a-module keeps no undo history (ed.undo's poll fails without a
    # window), so the step itself can only be undone where the history exists.
    assert "UNDO" in report["place_options"]
    if report["undo_available"]:
        assert report["undo"] == ["FINISHED"]
        assert {s["name"] for s in report["strips_after_undo"]} == {s["name"] for s in report["strips_before"]}


def test_by_path_when_the_server_reads_the_media(tmp_path, media, tmp_path_factory):
    app = start(tmp_path_factory.mktemp("roots-server"), preload=["tiny"], media_roots=[str(media["folder"])])
    try:
        report = drive("5.2", "render", tmp_path, app, composition(media))
        assert report["status"].startswith("Done:"), report["status"]
        check_result(report, media)
        [job] = app.store.list(limit=10)
        assert job.spec.source.kind == "file" and job.spec.source.path == str(media["folder"] / "shot.mkv")
        first = VISIBLE[0] - PLATE_START + PLATE_TRIM[0]
        assert (job.spec.source.start, job.spec.source.end) == (first, first + VISIBLE[1] - VISIBLE[0])
        assert job.spec.matte.kind == "inline"  # a matte in another place and size is carried into the plate's pixels
        # a matte made for the plate, placed and trimmed like it: the server reads both files itself
        cfg = composition(media)
        cfg["strips"][3] = cfg["strips"][1] | {"name": "matte", "path": str(media["folder"] / "twin.mkv"), "channel": 4}
        report = drive("5.0", "render", tmp_path / "twin", app, cfg)
        assert report["status"].startswith("Done:"), report["status"]
        job = next(j for j in app.store.list(limit=10) if j.job_id != job.job_id)
        assert job.spec.source.kind == job.spec.matte.kind == "file"
        edited = read_frames(probe(Path(by_name(report["strips"])["shot KV-Lock"]["filepath"])), 0, 9)[..., :3]
        box = np.zeros((PLATE[1], PLATE[0]), np.float32)
        box[20:50, 30:70] = 1.0
        outside = feather_matte(box, FEATHER) == 0
        assert np.array_equal(edited[:, outside], plate_frames(media, *VISIBLE)[:, outside])
    finally:
        app.stop(grace=0)


def test_an_image_sequence_plate_with_the_matte_from_the_same_file(tmp_path, server, media):
    """Image strip: its elements by position, the scene's rate; the matte is the plate's twin clip."""
    files = sorted(str(p) for p in (media["folder"] / "seq").iterdir())
    cfg = composition(media)
    cfg["strips"][1] = {
        "name": "shot",
        "kind": "image",
        "files": files,
        "channel": 2,
        "start": PLATE_START,
        "fit": "FIT",
        "trim": [PLATE_TRIM[0], 0],
        "content_start": PLATE_START,
        "handles": [1005, 1011],
        "transform": {"offset_x": 6.0, "offset_y": -4.0},
    }
    report = drive("5.0", "render", tmp_path, server, cfg)
    assert report["status"].startswith("Done:"), report["status"]
    result = by_name(report["strips"])["shot KV-Lock"]
    info = probe(Path(result["filepath"]))
    assert (info.width, info.height) == PLATE and info.rate == RATE  # an image sequence runs at the scene's rate
    edited = read_frames(info, 0, info.frames)[..., :3]
    plate, outside = plate_frames(media, 1005, 1011), expected_outside(media, 1005, 1011)
    assert np.array_equal(edited[outside], plate[outside])
    assert (result["start"], result["end"]) == (1005, 1011) and result["channel"] == 3


def test_a_taken_channel_is_said_and_the_editor_chooses(tmp_path, server, media):
    cfg = composition(media, taken_pick=5)
    cfg["strips"][2] = {"name": "title", "kind": "color", "channel": 3, "start": 1008, "length": 10}
    report = drive("5.0", "occupied", tmp_path, server, cfg)
    assert report["first"] == ["CANCELLED"]
    assert "channel 3, directly above the source, holds title over frames 1005–1013" in report["first_status"]
    assert report["picked"] == ["CANCELLED"] and "channel 5 holds logo" in report["picked_status"]
    assert report["status"].startswith("Done: shot.kvlock.mkv on channel 3"), report["status"]
    check_result(report, media)
    # everything above the source moved up one channel, with its channel's name and mute
    assert_composition_unchanged(report, added="shot KV-Lock", moved={"title": 1, "matte": 1, "logo": 1})
    before, after = report["channels_before"], report["channels"]
    assert after[2] == ["Channel 3", False, False]  # channel 3 (index 2): freed for the result
    assert after[4] == before[3] == ["mattes", True, False]  # the muted matte channel is now channel 5
    assert after[5][0] == "Channel 6" and after[1] == before[1]


def meta_scene(media) -> dict:
    """A meta strip (no media of its own) that adds onto a colour strip under an opaque one, a mask strip as
    the matte on a muted channel, and every colour setting far from neutral."""
    folder = media["folder"]
    return {
        "scene": {
            "width": 96,
            "height": 96,
            "fps": [24, 1.0],
            "frame_start": 1,
            "view": "AgX",
            "look": True,
            "exposure": -0.5,
            "gamma": 0.8,
            "white_balance": 9000.0,
            "override": True,
        },
        "masks": {"square": [[0.3, 0.3], [0.7, 0.3], [0.7, 0.7], [0.3, 0.7]]},
        "strips": [
            {"name": "bed", "kind": "color", "channel": 1, "start": 1, "length": 30, "color": [0.5, 0.2, 0.1]},
            {
                "name": "shot",
                "kind": "meta",
                "channel": 2,
                "start": 1,
                "blend_type": "ADD",
                "inner": [
                    {"name": "inner", "kind": "movie", "path": str(folder / "square.mkv"), "channel": 1, "start": 1},
                    {"name": "hidden", "kind": "color", "channel": 2, "start": 1, "length": 24, "mute": True},
                ],
            },
            {"name": "matte", "kind": "mask", "mask": "square", "channel": 4, "start": 1},
            {"name": "logo", "kind": "color", "channel": 5, "start": 2, "length": 20, "color": [0.9, 0.9, 0.1]},
        ],
        "channels": {"4": {"mute": True}},
        "active": "shot",
        "preview": [4, 9],
        "props": {"matte_strip": "matte"},
    }


def test_a_strip_without_media_is_rendered_neutrally_and_alone(tmp_path, server, media):
    """The sequencer's frames must be the inner movie's pixels exactly (the strip alone, as its own image),
    and the scene exactly as it was afterwards."""
    report = drive("5.2", "render", tmp_path, server, meta_scene(media))
    assert report["status"].startswith("Done: shot.kvlock.mkv on channel 3"), report["status"]
    assert "shot blends (Add, 100%)" in report["status"]  # the editor is told the original still shows through
    assert any("through the sequencer: frame" in t for t in report["step_texts"]), report["step_texts"]
    result = by_name(report["strips"])["shot KV-Lock"]
    info = probe(Path(result["filepath"]))
    assert (info.width, info.height, info.rate) == (96, 96, Fraction(24))
    edited = read_frames(info, 0, info.frames)[..., :3]
    source = media["square"][3:9]  # the inner movie starts at frame 1: timeline frames 4–9 are its frames 3–8
    box = np.zeros((96, 96), np.float32)
    box[28:68, 28:68] = 1.0  # the mask square (0.3–0.7 of the frame) with a pixel to spare
    outside = feather_matte(box, FEATHER) == 0
    assert np.array_equal(edited[:, outside], source[:, outside])
    assert (edited[:, 34:62, 34:62] != source[:, 34:62, 34:62]).any(axis=-1).mean() > 0.5
    assert_composition_unchanged(report, added="shot KV-Lock")
    assert by_name(report["strips"])["shot KV-Lock"]["blend"] == ["ADD", 1.0]
    assert report["scene_after"]["scenes"] == ["Scene"]


def test_a_mask_data_block_is_rasterised_in_the_plates_pixels(tmp_path, server, media):
    cfg = composition(media, masks={"square": [[0.3, 0.3], [0.7, 0.3], [0.7, 0.7], [0.3, 0.7]]})
    cfg["props"] = {"matte_kind": "MASK", "mask": "square"}
    report = drive("5.2", "render", tmp_path, server, cfg)
    assert report["status"].startswith("Done:"), report["status"]
    result = by_name(report["strips"])["shot KV-Lock"]
    info = probe(Path(result["filepath"]))
    assert (info.width, info.height) == PLATE
    edited = read_frames(info, 0, info.frames)[..., :3]
    plate = plate_frames(media, *VISIBLE)
    # Blender rasterises a mask over the frame's longer side: x 0.3–0.7 of 160, y 0.3–0.7 of 160 about the centre
    box = np.zeros((PLATE[1], PLATE[0]), np.float32)
    box[11:77, 47:113] = 1.0
    outside = feather_matte(box, FEATHER) == 0
    assert np.array_equal(edited[:, outside], plate[:, outside])
    assert (edited[:, 16:72, 52:108] != plate[:, 16:72, 52:108]).any(axis=-1).mean() > 0.5
    assert_composition_unchanged(report, added="shot KV-Lock")
    assert report["scene_after"]["scenes"] == ["Scene"]  # the temporary scene is gone


def exr_plate(folder: Path, frames: int, size: tuple[int, int]) -> np.ndarray:
    """A scene-linear EXR sequence (float32 RGB, highlights up to 6.0) numbered from 1001; its values."""
    openexr = pytest.importorskip("OpenEXR")
    folder.mkdir()
    w, h = size
    rng = np.random.default_rng(11)
    values = (rng.random((frames, h, w, 3)) ** 3 * 6.0).astype(np.float32)  # a third of them above 1.0
    for n, frame in enumerate(values):
        channels = {c: np.ascontiguousarray(frame[..., i]) for i, c in enumerate("RGB")}
        openexr.File({"owner": "scan"}, channels).write(str(folder / f"plate.{1001 + n}.exr"))
    return values


def read_exr_rgb(path: Path) -> np.ndarray:
    import OpenEXR

    channels = OpenEXR.File(str(path), separate_channels=True).channels()
    return np.stack([channels[c].pixels for c in "RGB"], axis=-1)


def test_a_linear_exr_plate_stays_linear_and_comes_back_as_exr(tmp_path, server, media, tmp_path_factory):
    """An EXR image strip (tagged ACEScg) in a linear sequencer: sent by path, written back as EXR with the
    plate's own float values (highlights above 1.0) outside the matte, placed as an image strip tagged as the
    source; the panel's lock settings leave the engine's defaults (its calibrated τ, early α 0)."""
    plate_size, visible = (64, 48), (1003, 1008)
    values = exr_plate(tmp_path / "exr", 8, plate_size)
    files = [str(tmp_path / "exr" / f"plate.{1001 + n}.exr") for n in range(8)]
    app = start(tmp_path_factory.mktemp("exr-server"), preload=["tiny"], media_roots=[str(tmp_path / "exr")])
    try:
        cfg = composition(media, masks={"square": [[0.3, 0.3], [0.7, 0.3], [0.7, 0.7], [0.3, 0.7]]})
        cfg["scene"] |= {"sequencer_space": "Linear Rec.709"}
        cfg["strips"][1] = {
            "name": "shot",
            "kind": "image",
            "files": files,
            "channel": 2,
            "start": 1001,
            "handles": list(visible),  # trimmed at both ends: plate files 2–6
            "transform": {"offset_x": 6.0, "offset_y": -4.0},
            "colorspace": "ACEScg",
        }
        cfg["props"] = {"matte_kind": "MASK", "mask": "square"}
        refused = drive("5.0", "render", tmp_path / "refused", server, cfg)  # a server that cannot read the folder
        report = drive("5.2", "render", tmp_path / "run", app, cfg)
        [job] = app.store.list(limit=10)
    finally:
        app.stop(grace=0)
    assert refused["status"].startswith("Error: the server cannot read the EXR plate shot"), refused["status"]
    assert "an upload carries 8/16-bit display-referred pixels only" in refused["status"]
    assert refused["strips"] == refused["strips_before"] and list(refused["out"].iterdir()) == []
    assert report["status"].startswith("Done: shot.kvlock on channel 3"), report["status"]
    source = job.spec.source
    assert job.spec.codec == "exr" and source.kind == "file" and (source.start, source.end) == (2, 7)
    # Lock = Model's schedule: no lock setting is sent, so the model's calibrated schedule applies
    sent = job.spec.settings
    assert all(getattr(sent, name) is None for name in ("tau", "method", "kappa", "b", "alpha_early", "metric_window"))
    result = by_name(report["strips"])["shot KV-Lock"]
    assert result["type"] == "IMAGE" and result["colorspace"] == "ACEScg"
    assert (result["start"], result["end"], result["channel"]) == (*visible, 3)
    assert result["transform"] == by_name(report["strips_before"])["shot"]["transform"]
    written = [Path(f) for f in result["files"]]
    assert [f.suffix for f in written] == [".exr"] * 5 and written[0].parent == report["out"] / "shot.kvlock"
    edited = np.stack([read_exr_rgb(f) for f in written])
    plate = values[2:7]
    assert edited.shape == plate.shape and edited.dtype == np.float32
    box = np.zeros(plate_size[::-1], np.float32)
    box[10:38, 18:46] = 1.0  # the mask square: 0.3–0.7 of the longer side, about the centre, a pixel to spare
    outside = feather_matte(box, FEATHER) == 0
    assert np.array_equal(edited[:, outside], plate[:, outside])  # the plate's own floats, bit for bit
    assert (plate[:, outside] > 1.0).mean() > 0.2  # ... highlights above 1.0 among them
    assert (edited[:, 14:34, 22:42] != plate[:, 14:34, 22:42]).any(axis=-1).mean() > 0.5
    assert_composition_unchanged(report, added="shot KV-Lock")


def test_retimed_and_transparent_strips_are_refused_with_the_reason(tmp_path, server, media):
    cfg = composition(media)
    cfg["strips"][2] = {"name": "title", "kind": "text", "channel": 6, "start": 1005, "length": 6}
    report = drive("5.2", "refusals", tmp_path, server, cfg)  # bpy 5.0.1 crashes adding a first retiming key
    r = report["refusals"]
    for case, words in [
        ("strobe", "steps its frames (Strobe 2)"),
        ("reverse", "plays its media reversed"),
        ("speed", "retimed by the speed effect speed"),
        ("retimed", "is retimed ("),
        ("stream", "shows video stream 1 of its movie; KV-Lock edits a movie's first video stream"),
    ]:
        assert r[case][0] == ["CANCELLED"] and words in r[case][1], (case, r[case])
    assert r["transparent"][0] == ["FINISHED"]  # found while rendering the text through the sequencer
    assert "title is partly transparent" in r["transparent"][1], r["transparent"]
    assert report["strips"] == report["strips_before"] and report["scene_after"] == report["scene_before"]
    assert list(report["out"].iterdir()) == []


@pytest.mark.parametrize("version", ["5.0", "5.2"])
def test_blender_shows_the_frames_and_places_the_pixels_the_addon_computes(version, tmp_path, server, media):
    """The add-on's frame map and canvas maths, against Blender's own render of real strips."""
    folder = media["folder"]
    numbered = unique_frames(24, 64, 49, seed=9)  # pixel (0, 0) holds the frame's number
    write_video(folder / f"numbered-{version}.mkv", numbered, Fraction(24))
    files = [str(folder / "seq" / f"shot.{1001 + i}.png") for i in range(12)]
    np.save(folder / "plate0.npy", media["plate"][0])
    cfg = {
        "scene": {"width": 49, "height": 64, "fps": [24, 1.0], "view": "Standard"},
        "strips": [
            {
                "name": "movie",
                "kind": "movie",
                "path": str(folder / f"numbered-{version}.mkv"),
                "channel": 1,
                "start": 3,
                "trim": [2, 3],
                "content_start": 3,
                "handles": [1, 24],  # held frames before and after the content
            },
            {
                "name": "moved",
                "kind": "image",
                "files": files,
                "channel": 2,
                "start": 1,
                "transform": {
                    "offset_x": 3.5,
                    "offset_y": -2.0,
                    "scale_x": 0.45,
                    "scale_y": 0.35,
                    "rotation": 0.3,
                    "origin": [0.3, 0.6],
                    "filter": "NEAREST",
                },
                "crop": [9, 4, 6, 0],
                "flip": [True, False],
            },
        ],
        "frame_checks": [{"strip": "movie", "media_frames": 24}],
        "geometry_checks": [
            {"strip": "moved", "media": str(folder / "plate0.npy")},
            {"strip": "phone", "media": str(folder / f"phone0-{version}.npy")},
        ],
    }
    # phone footage: stored sideways, tagged to be turned; the project reads it as Blender shows it
    shown = np.full((3, 40, 25, 3), 90, np.uint8)
    shown[:, :6, :8] = (230, 20, 20)
    shown[:, -5:, -9:] = (20, 200, 40)
    phone = write_turned(folder / f"phone-{version}.mkv", np.rot90(shown, 1, axes=(1, 2)), Fraction(24), -90)
    info = probe(phone)
    assert (info.width, info.height, info.rotation) == (25, 40, 270)
    np.save(folder / f"phone0-{version}.npy", read_frames(info, 0, 1)[0])
    cfg["strips"].append({"name": "phone", "kind": "movie", "path": str(phone), "channel": 3, "start": 1})
    report = drive(version, "agrees", tmp_path, server, cfg)
    check = report["frames"]["movie"]
    assert check["shown"] == check["expected"] and len(set(check["shown"])) > 10
    for name, least in (("moved", 300), ("phone", 25 * 40)):
        rendered, predicted = (np.load(p) for p in report["geometry"][name])
        differ = (rendered != predicted).any(axis=-1)
        edges = np.zeros_like(differ)  # where the quad's edges cross pixels, Blender anti-aliases: leave those out
        lit = predicted.any(axis=-1)
        edges[:-1] |= lit[:-1] != lit[1:]
        edges[1:] |= lit[:-1] != lit[1:]
        edges[:, :-1] |= lit[:, :-1] != lit[:, 1:]
        edges[:, 1:] |= lit[:, :-1] != lit[:, 1:]
        assert lit.sum() >= least and not differ[~edges].any(), (name, differ.sum())


@pytest.mark.parametrize("version", ["5.0", "5.2"])
def test_cancel_mid_job_places_nothing(version, tmp_path, server, media):
    report = drive(version, "cancel", tmp_path, server, composition(media), steps=12)
    assert report["cancelled_at"].startswith("step ")
    assert report["status"] == "Cancelled"
    assert report["strips"] == report["strips_before"] and report["scene_after"] == report["scene_before"]
    assert list(report["out"].iterdir()) == []


def test_cancel_while_the_sequencer_renders_restores_everything(tmp_path, server, media):
    report = drive("5.0", "cancel", tmp_path, server, meta_scene(media), cancel_while="through the sequencer")
    assert "through the sequencer: frame" in report["cancelled_at"]
    assert report["status"] == "Cancelled" and not report["running"]
    assert report["strips"] == report["strips_before"] and report["channels"] == report["channels_before"]
    assert report["scene_after"] == report["scene_before"] and list(report["out"].iterdir()) == []


def test_server_down_is_a_message_not_a_traceback(tmp_path, server, media):
    report = drive("5.2", "render", tmp_path, server, composition(media), address="127.0.0.1:9")
    assert report["operator"] == ["CANCELLED"] and not report["registered"]
    assert "KV-Lock server is not running at 127.0.0.1:9" in report["status"]
    assert report["reported"].startswith("Error: KV-Lock server is not running")  # a report, not a crash
    assert "Traceback" not in report["reported"]


def test_a_failed_job_shows_the_servers_reason(tmp_path, server, media, monkeypatch):
    import torch

    class ExhaustedEditor:
        def edit_takes(self, *args, **kwargs):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(server.executor, "editor", lambda model, slot=0: ExhaustedEditor())
    report = drive("5.2", "render", tmp_path, server, composition(media))
    assert report["status"].startswith("Error: the job failed:") and "ran out of memory" in report["status"]
    assert report["strips"] == report["strips_before"] and list(report["out"].iterdir()) == []


def test_bad_token_no_active_strip_short_and_nested_mattes_are_explained(tmp_path, server, media):
    short = composition(media)
    short["strips"][3] = short["strips"][3] | {"handles": [1006, 1011]}
    cases = [
        (composition(media), {"token": "wrong"}, "refused the token"),
        (composition(media), {"no_active": True}, "no active strip"),
        (short, {}, "matte length mismatch: matte covers frames 1006–1010, the source needs 1005–1013"),
        (meta_scene(media) | {"props": {"matte_strip": "inner"}}, {}, "the matte inner sits inside a meta strip"),
    ]
    for n, (cfg, extra, expected) in enumerate(cases):
        report = drive("5.0", "render", tmp_path / str(n), server, cfg, **extra)
        assert report["operator"] == ["CANCELLED"] and expected in report["status"], report["status"]
        assert "Traceback" not in report.get("reported", "")


def test_the_erase_task_needs_no_prompt_and_an_edit_still_does(tmp_path, server, media):
    """Task Erase with an empty prompt renders (the server is asked to erase) and places its result like any edit,
    the plate's own pixels outside the feathered matte; Task Edit with an empty prompt is refused, naming Erase."""
    import json

    erase = composition(media, props={"matte_strip": "matte", "task": "ERASE", "prompt": ""})
    report = drive("5.2", "render", tmp_path / "erase", server, erase)
    assert report["operator"] == ["FINISHED"] and report["status"].startswith("Done: shot.kvlock.mkv"), report
    trace = json.loads((report["out"] / "shot.kvlock.trace.json").read_text())
    assert trace["settings"]["erase"] and trace["settings"]["source_plate"] == "clean" and trace["plate"]
    result = by_name(report["strips"])["shot KV-Lock"]
    edited = read_frames(probe(Path(result["filepath"])), 0, VISIBLE[1] - VISIBLE[0])[..., :3]
    outside = expected_outside(media, *VISIBLE)
    assert np.array_equal(edited[outside], plate_frames(media, *VISIBLE)[outside])
    edit = composition(media, props={"matte_strip": "matte", "task": "EDIT", "prompt": " "})
    refused = drive("5.2", "render", tmp_path / "edit", server, edit)
    assert refused["operator"] == ["CANCELLED"] and "or choose Erase" in refused["status"], refused["status"]


def test_the_panels_lora_rows_go_out_with_the_render(tmp_path, tmp_path_factory, media):
    """Check Server lists the server's LoRAs in the rows' menu; a row's LoRA and weight reach the job, whose
    trace beside the result names them."""
    import json

    from kvlock.loading.load import load_model

    from ..support.loras import save_lora

    loras = tmp_path_factory.mktemp("blender-loras")
    save_lora(load_model("tiny").pipe.transformer, loras, "tiny-style", rank=4, seed=1)
    app = start(tmp_path_factory.mktemp("blender-lora-server"), preload=["tiny"], lora_dirs=[str(loras)])
    try:
        report = drive("5.2", "loras", tmp_path, app, composition(media), loras=[["tiny-style", 0.5]])
    finally:
        app.stop(grace=0)
    assert report["refresh"] == ["FINISHED"] and report["offered"] == ["tiny-style"]
    assert report["rows"] == [["tiny-style", 0.5]]
    assert report["sent"] == [{"name": "tiny-style", "weight": 0.5}]
    assert report["status"].startswith("Done"), report["status"]
    trace = json.loads((report["out"] / "shot.kvlock.trace.json").read_text())
    assert [(x["name"], x["weight"]) for x in trace["loras"]] == [("tiny-style", 0.5)]


def check_take(report: dict, media, name: str) -> np.ndarray:
    """A take's file: the plate outside the feathered matte, bit for bit; its frames."""
    info = probe(Path(by_name(report["strips"])[name]["filepath"]))
    edited = read_frames(info, 0, info.frames)[..., :3]
    outside = expected_outside(media, *VISIBLE)
    assert np.array_equal(edited[outside], plate_frames(media, *VISIBLE)[outside])
    return edited


def test_takes_land_muted_on_the_channels_above_the_first_in_one_step(tmp_path, server, media):
    cfg = composition(media, props={"matte_strip": "matte", "takes": 3})
    report = drive("5.2", "render", tmp_path, server, cfg, undo=True)
    status = report["status"]
    assert status.startswith("Done: shot.kvlock.take1.mkv on channel 3; takes 2–3 muted on channels 6, 7"), status
    assert any(t.startswith("take 3/3, step ") for t in report["step_texts"]), report["step_texts"]
    strips = by_name(report["strips"])
    takes = [strips[f"shot KV-Lock take {k}"] for k in (1, 2, 3)]
    assert [(t["channel"], t["mute"]) for t in takes] == [(3, False), (6, True), (7, True)]  # 4, 5: taken
    assert all((t["start"], t["end"]) == VISIBLE for t in takes)
    shot = by_name(report["strips_before"])["shot"]
    assert all(t["transform"] == shot["transform"] for t in takes)
    assert [Path(t["filepath"]).name for t in takes] == [f"shot.kvlock.take{k}.mkv" for k in (1, 2, 3)]
    assert {p.name for p in report["out"].iterdir()} == {
        f"shot.kvlock.take{k}{suffix}" for k in (1, 2, 3) for suffix in (".mkv", ".trace.json", ".trace.png")
    }
    frames = [check_take(report, media, f"shot KV-Lock take {k}") for k in (1, 2, 3)]
    assert not np.array_equal(frames[0], frames[1]) and not np.array_equal(frames[1], frames[2])
    for name in {s["name"] for s in report["strips_before"]}:
        assert strips[name] == by_name(report["strips_before"])[name]
    # one operator placed them all: one undo step removes every take
    assert "UNDO" in report["place_options"]
    assert report["placements"] == 1
    if report["undo_available"]:
        assert {s["name"] for s in report["strips_after_undo"]} == {s["name"] for s in report["strips_before"]}


def test_a_cancel_after_the_first_take_places_it(tmp_path, server, media, monkeypatch):
    stop_after_take_one(server, monkeypatch)
    cfg = composition(media, props={"matte_strip": "matte", "takes": 3})
    report = drive("5.0", "render", tmp_path, server, cfg)
    status = report["status"]
    assert status.startswith("Cancelled: cancelled after step") and "take 1 of 3 was finished and kept" in status
    assert "shot.kvlock.take1.mkv on channel 3" in status
    strips = by_name(report["strips"])
    assert strips["shot KV-Lock take 1"]["channel"] == 3 and "shot KV-Lock take 2" not in strips
    check_take(report, media, "shot KV-Lock take 1")

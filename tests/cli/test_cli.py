"""The real ``kvlock`` command in a subprocess, on generated clips: results, exit codes, Ctrl-C, listing."""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from kvlock.editing.compositing import feather_matte
from kvlock.media.decode import probe, read_frames
from kvlock.media.encode import write_video
from kvlock.world.demo_clip import demo_clip
from kvlock.world.tiny import build_tiny_wan

from ..support.media_helpers import write_turned

RATE = Fraction(24000, 1001)
KVLOCK = [str(Path(sys.executable).with_name("kvlock"))]
if not Path(KVLOCK[0]).exists():
    KVLOCK = [sys.executable, "-m", "kvlock_cli.main"]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("media")
    frames, matte = demo_clip(frames=20, height=72, width=100)
    write_video(folder / "shot.mkv", frames, RATE, "ffv1", timecode="01:00:10:00")
    write_video(folder / "matte.mkv", np.repeat(matte[..., None], 3, -1), RATE, "ffv1", timecode="01:00:10:00")
    return folder, frames, matte


def kvlock(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*KVLOCK, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout)


def base_args(folder: Path, out: Path, *extra: str) -> list[str]:
    return [
        "edit",
        "--model",
        "tiny",
        "--input",
        str(folder / "shot.mkv"),
        "--matte",
        str(folder / "matte.mkv"),
        "--prompt",
        "a red ball",
        "--steps",
        "3",
        "--out",
        str(out),
        *extra,
    ]


def test_edit_takes_writes_each_take_beside_the_others_with_its_trace(media, tmp_path):
    folder, frames, matte = media
    done = kvlock(*base_args(folder, tmp_path / "shot.mkv", "--frames", "4:13", "--takes", "2", "--json"))
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    takes = events[-1]["takes"]
    assert [(t["take"], Path(t["output"]).name, Path(t["trace"]).name) for t in takes] == [
        (1, "shot.take1.mkv", "shot.take1.trace.json"),
        (2, "shot.take2.mkv", "shot.take2.trace.json"),
    ]
    assert {(e["take"], e["takes"]) for e in events if e["event"] == "progress"} == {(0, 2), (1, 2)}
    outside = np.stack([feather_matte(m / 255.0, 4) for m in matte[4:13]]) == 0
    edited = [read_frames(probe(tmp_path / f"shot.take{k}.mkv"), 0, 9) for k in (1, 2)]
    for version in edited:
        assert np.array_equal(version[outside], frames[4:13][outside])
    assert not np.array_equal(edited[0], edited[1])
    trace = json.loads((tmp_path / "shot.take2.trace.json").read_text())
    assert (trace["take"], trace["takes"]) == (2, 2) and (tmp_path / "shot.take2.trace.png").is_file()
    again = kvlock(*base_args(folder, tmp_path / "shot.mkv", "--frames", "4:13", "--takes", "2"))
    assert again.returncode == 6 and "shot.take1.mkv already exists" in again.stderr  # checked before any work


def test_edit_writes_result_trace_and_plot_with_timecode_and_rate(media, tmp_path):
    folder, frames, matte = media
    out = tmp_path / "edit.mkv"
    done = kvlock(*base_args(folder, out, "--frames", "4:15", "--json"))
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    progress = [e for e in events if e["event"] == "progress"]
    # the embedded model's schedule starts at strength 0.8: 2 of the 3 steps run
    assert [e["step"] for e in progress] == [0, 1] and {e["total"] for e in progress} == {2}
    assert events[-1]["event"] == "done" and events[-1]["frames"] == [4, 15]
    info = probe(out)
    assert info.frames == 11 and info.rate == RATE and info.timecode == "01:00:10:04"
    edited = read_frames(info, 0, 11)
    outside = np.stack([feather_matte(m / 255.0, 4) for m in matte[4:15]]) == 0
    assert np.array_equal(edited[outside], frames[4:15][outside])
    trace = json.loads((tmp_path / "edit.trace.json").read_text())
    assert trace["frames"] == [4, 15] and trace["timecode"] == "01:00:10:04"
    assert (tmp_path / "edit.trace.png").read_bytes()[:4] == b"\x89PNG"


def test_timecode_range_png_output_and_region_with_alpha(media, tmp_path):
    folder, frames, matte = media
    out = tmp_path / "plates"
    region = tmp_path / "region.mov"
    done = kvlock(*base_args(folder, out, "--frames", "01:00:10:02-01:00:10:07", "--region-out", str(region)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("wrote ") and done.stderr == ""  # quiet when not a terminal
    assert len(list(out.glob("plates.*.png"))) == 5
    plates = read_frames(probe(out), 0, 5)
    outside = np.stack([feather_matte(m / 255.0, 4) for m in matte[2:7]]) == 0
    assert np.array_equal(plates[outside], frames[2:7][outside])
    alpha = read_frames(probe(region), 0, 5)[..., 3]
    assert alpha.dtype == np.uint16 and (alpha[matte[2:7] > 0] > 65000).all() and (alpha[:, 0, 0] == 0).all()


def test_a_folder_whose_name_has_a_dot_is_written_when_said_so(media, tmp_path):
    folder, frames, matte = media
    out = tmp_path / "shot.v2"
    refused = kvlock(*base_args(folder, out, "--frames", "2:7"))
    assert refused.returncode != 0 and "end it with / or add --codec png" in refused.stderr
    assert not out.exists()
    done = kvlock(*base_args(folder, out, "--frames", "2:7", "--codec", "png"))
    assert done.returncode == 0, done.stderr
    plates = read_frames(probe(out), 0, 5)
    outside = np.stack([feather_matte(m / 255.0, 4) for m in matte[2:7]]) == 0
    assert np.array_equal(plates[outside], frames[2:7][outside])


def test_progress_bar_on_a_terminal(media, tmp_path):
    folder = media[0]
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [*KVLOCK, *base_args(folder, tmp_path / "tty.mkv")], stdout=subprocess.PIPE, stderr=follower, text=True
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data.decode(errors="replace"))
    assert proc.wait(timeout=300) == 0
    shown = "".join(chunks)
    assert "\rwindow 1/2 " in shown and "\rwindow 2/2 " in shown  # the clip is two windows long
    assert "step 2/2, h=" in shown and "ETA" in shown  # strength 0.8: 2 of 3 steps


def with_flag(args: list[str], flag: str, value: str) -> list[str]:
    i = args.index(flag)
    return [*args[: i + 1], value, *args[i + 2 :]]


@pytest.mark.parametrize(
    ("change", "code", "words"),
    [
        (lambda a, f, t: with_flag(a, "--input", str(f / "missing.mov")), 3, "does not exist"),
        (lambda a, f, t: with_flag(a, "--input", str(t / "bad.mov")), 4, "cannot open"),
        (lambda a, f, t: with_flag(a, "--matte", str(t / "short")), 5, "matte has 3 frames"),
        (lambda a, f, t: [*a, "--frames", "5:99"], 5, "source has frames"),
        (lambda a, f, t: [*a, "--tau", "0"], 5, "tau"),
        (lambda a, f, t: with_flag(a, "--model", str(t)), 7, "model_index.json"),
    ],
)
def test_errors_exit_with_codes_a_person_can_act_on(media, tmp_path, change, code, words):
    folder, _, matte = media
    (tmp_path / "bad.mov").write_text("this is not a movie")
    write_video(tmp_path / "short", np.repeat(matte[:3, ..., None], 3, -1), RATE, "png")
    out = tmp_path / "never.mkv"
    done = kvlock(*change(base_args(folder, out), folder, tmp_path))
    assert done.returncode == code, done.stderr
    assert words in done.stderr and not out.exists()


def test_existing_output_is_kept_unless_overwrite_and_the_source_never(media, tmp_path):
    folder, _, _ = media
    out = tmp_path / "keep.mkv"
    out.write_bytes(b"precious")
    done = kvlock(*base_args(folder, out))
    assert done.returncode == 6 and "--overwrite" in done.stderr and out.read_bytes() == b"precious"
    assert kvlock(*base_args(folder, out, "--overwrite")).returncode == 0
    assert probe(out).frames == 20
    source_bytes = (folder / "shot.mkv").read_bytes()
    done = kvlock(*base_args(folder, folder / "shot.mkv", "--overwrite"))
    assert done.returncode == 6 and "source of this edit" in done.stderr
    assert (folder / "shot.mkv").read_bytes() == source_bytes


def test_ctrl_c_stops_between_steps_and_leaves_no_partial_file(media, tmp_path):
    folder, _, _ = media
    out = tmp_path / "stopped.mkv"
    args = base_args(folder, out, "--json")
    args[args.index("--steps") + 1] = "500"
    proc = subprocess.Popen([*KVLOCK, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if '"progress"' in line:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_models_lists_embedded_and_configured_folders(tmp_path):
    models = tmp_path / "models"
    build_tiny_wan().save_pretrained(models / "tiny-wan-saved")
    (models / "broken").mkdir()
    (models / "broken" / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    env = {**os.environ, "KVLOCK_CONFIG": str(tmp_path / "none.toml")}
    done = subprocess.run(
        [*KVLOCK, "models", "--model-dir", str(models), "--json"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    entries = {e["name"]: e for e in json.loads(done.stdout)}
    assert entries["tiny"]["status"].startswith("ok")
    assert entries["tiny-wan-saved"]["status"] == "ok" and entries["tiny-wan-saved"]["family"] == "wan"
    assert "FluxPipeline" in entries["broken"]["status"]
    config = tmp_path / "config.toml"
    config.write_text(f'model_dirs = ["{models}"]\n')
    env["KVLOCK_CONFIG"] = str(config)
    listed = subprocess.run([*KVLOCK, "models"], capture_output=True, text=True, env=env, timeout=120)
    assert "tiny-wan-saved" in listed.stdout


def test_av_is_what_wrote_the_outputs(media, tmp_path):
    """The output is a real FFV1 stream tagged BT.709, decodable by FFmpeg with no help from kvlock."""
    folder, _, _ = media
    out = tmp_path / "tagged.mkv"
    assert kvlock(*base_args(folder, out)).returncode == 0
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "ffv1" and stream.codec_context.color_primaries == 1
        assert sum(1 for _ in container.decode(stream)) == 20


# -- scene-linear plates -------------------------------------------------------------------------------------


def _bits(a):
    return np.ascontiguousarray(a).view({2: np.uint16, 4: np.uint32}[a.dtype.itemsize])


def test_edit_exr_plate_writes_exr_back_with_the_plate_outside_the_matte(media, tmp_path):
    openexr = pytest.importorskip("OpenEXR")
    _, frames, matte = media
    plate = tmp_path / "plate"
    plate.mkdir()
    linear = (frames[:6].astype(np.float32) / 255.0) ** 2.2 * 6.0  # highlights up to 6.0
    linear[:, 1, 1] = [-0.3, 50.0, np.nan]
    for n in range(6):
        rgb = linear[n].astype(np.float16)
        channels = {c: rgb[..., i] for i, c in enumerate("RGB")} | {"A": np.full(rgb.shape[:2], 0.75, np.float16)}
        header = {"compression": openexr.PIZ_COMPRESSION, "owner": "scan"}
        openexr.File(header, {k: np.ascontiguousarray(v) for k, v in channels.items()}).write(
            str(plate / f"plate.{1001 + n}.exr")
        )
    out = tmp_path / "plate_kv"
    write_video(tmp_path / "m", np.repeat(matte[:6, ..., None], 3, -1), RATE, "png")
    args = ["--input", str(plate), "--matte", str(tmp_path / "m"), "--frames", "1:5", "--out", str(out), "--json"]
    done = kvlock("edit", "--model", "tiny", "--prompt", "a red ball", "--steps", "2", *args)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["event"] == "done"
    assert sorted(p.name for p in out.iterdir()) == [f"plate_kv.{n}.exr" for n in range(1002, 1006)]
    outside = np.stack([feather_matte(m / 255.0, 4) for m in matte[1:5]]) == 0
    for k, number in enumerate(range(1002, 1006)):
        src = openexr.File(str(plate / f"plate.{number}.exr"), separate_channels=True)
        dst = openexr.File(str(out / f"plate_kv.{number}.exr"), separate_channels=True)
        assert dst.header()["owner"] == "scan" and str(dst.header()["compression"]) == str(src.header()["compression"])
        for name in "RGB":
            s, d = src.channels()[name].pixels, dst.channels()[name].pixels
            assert d.dtype == np.float16 and (_bits(d) == _bits(s))[outside[k]].all()
            assert np.isfinite(d[~outside[k]]).all()
        assert (_bits(dst.channels()["A"].pixels) == _bits(src.channels()["A"].pixels)).all()
    assert np.isnan(openexr.File(str(out / "plate_kv.1002.exr"), separate_channels=True).channels()["B"].pixels[1, 1])


def test_exr_to_ffv1_warns_and_display_sources_cannot_ask_for_exr(media, tmp_path):
    openexr = pytest.importorskip("OpenEXR")
    folder, frames, _ = media
    done = kvlock(*base_args(folder, tmp_path / "x", "--codec", "exr"))
    assert done.returncode == 5 and "for a display-referred source use" in done.stderr
    plate = tmp_path / "plate"
    plate.mkdir()
    for n in range(4):
        rgb = (frames[n].astype(np.float16) / 255) * 3
        openexr.File({}, {c: np.ascontiguousarray(rgb[..., i]) for i, c in enumerate("RGB")}).write(
            str(plate / f"p.{n:04d}.exr")
        )
    args = with_flag(base_args(folder, tmp_path / "view.mkv", "--json"), "--input", str(plate))
    args = [*with_flag(args, "--steps", "1"), "--frames", "0:4"]
    done = kvlock(*args)
    assert done.returncode == 0, done.stderr
    messages = [e["text"] for e in map(json.loads, done.stdout.splitlines()) if e["event"] == "message"]
    assert any("view transform" in m for m in messages), messages
    assert read_frames(probe(tmp_path / "view.mkv"), 0, 1).dtype == np.uint16


# -- model folders ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved") / "Wan2.1-T2V-1.3B-Diffusers"
    build_tiny_wan().save_pretrained(folder)
    return folder


def _copy(model: Path, to: Path) -> Path:
    shutil.copytree(model, to)
    return to


def _status(tmp_path: Path, folder: Path) -> str:
    env = {**os.environ, "KVLOCK_CONFIG": str(tmp_path / "none.toml")}
    done = subprocess.run(
        [*KVLOCK, "models", "--model-dir", str(folder), "--json"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return " | ".join(e["status"] for e in json.loads(done.stdout) if e["location"] != "embedded")


def test_models_says_what_a_broken_download_lacks(tmp_path, saved_model):
    assert _status(tmp_path, saved_model) == "ok"
    shards = _copy(saved_model, tmp_path / "shards")
    weights = shards / "transformer" / "diffusion_pytorch_model.safetensors"
    second = "diffusion_pytorch_model-00002-of-00002.safetensors"
    index = {"metadata": {}, "weight_map": {"a": weights.name, "b": second}}
    (shards / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps(index))
    assert "transformer/: diffusion_pytorch_model-00002-of-00002.safetensors is missing" in _status(tmp_path, shards)
    assert "hf download Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in _status(tmp_path, shards)
    cut = _copy(saved_model, tmp_path / "cut")
    data = (cut / "vae" / "diffusion_pytorch_model.safetensors").read_bytes()
    (cut / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(data[: len(data) // 2])
    assert "vae/: diffusion_pytorch_model.safetensors is cut short" in _status(tmp_path, cut)
    lfs = _copy(saved_model, tmp_path / "lfs")
    pointer = "version https://git-lfs.github.com/spec/v1\noid sha256:0\n"
    (lfs / "text_encoder" / "model.safetensors").write_text(pointer)
    assert "Git LFS pointer" in _status(tmp_path, lfs)
    tok = _copy(saved_model, tmp_path / "tok")
    (tok / "tokenizer" / "tokenizer.json").unlink()
    assert "tokenizer/: no vocabulary file" in _status(tmp_path, tok)
    original = tmp_path / "Wan2.1-T2V-1.3B"
    original.mkdir()
    (original / "Wan2.1_VAE.pth").write_bytes(b"\0")
    (original / "config.json").write_text(json.dumps({"_class_name": "WanModel", "dim": 1536}))
    assert "original Wan2.1 release layout" in _status(tmp_path, original)
    assert "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in _status(tmp_path, original)
    assert "component of the pipeline" in _status(tmp_path, saved_model / "transformer")


def test_models_add_checks_records_once_and_keeps_the_rest_of_the_config(tmp_path, saved_model):
    config = tmp_path / "kvlock" / "config.toml"
    config.parent.mkdir()
    config.write_text('# my settings\ntoken_file = "~/.kvlock/token"\n\n[server]\nport = 50052\n')
    env = {**os.environ, "KVLOCK_CONFIG": str(config)}

    def models(*args):
        return subprocess.run([*KVLOCK, "models", *args], capture_output=True, text=True, env=env, timeout=120)

    done = models("add", str(saved_model))
    assert done.returncode == 0, done.stderr
    assert "recorded in" in done.stdout
    text = config.read_text()
    assert text.startswith("# my settings\n") and "[server]\nport = 50052" in text
    data = tomllib.loads(text)
    assert data["model_dirs"] == [str(saved_model.resolve())] and data["token_file"] == "~/.kvlock/token"
    again = models("add", str(saved_model))
    assert again.returncode == 0 and "nothing changed" in again.stdout and config.read_text() == text
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text(json.dumps({"_class_name": "WanPipeline", "vae": ["diffusers", "X"]}))
    refused = models("add", str(broken))
    assert refused.returncode == 7 and "missing component folder vae/" in refused.stderr and config.read_text() == text
    assert "Wan2.1-T2V-1.3B-Diffusers" in models().stdout  # listed from the config now
    parent = models("add", str(saved_model.parent))  # a folder of models is a valid entry too
    assert parent.returncode == 0 and tomllib.loads(config.read_text())["model_dirs"][1] == str(
        saved_model.parent.resolve()
    )


@pytest.fixture(scope="module")
def panning(tmp_path_factory):
    """A panning shot with a disc crossing it, and the disc's matte (kvlock.world.panning)."""
    from kvlock.world.panning import panning_clip

    folder = tmp_path_factory.mktemp("panning")
    clip = panning_clip(frames=9, height=64, width=80, radius=9.0, subject_start=(24.0, 30.0))
    write_video(folder / "shot.mkv", clip.frames, RATE, "ffv1", timecode="01:00:00:00")
    matte = (clip.matte * 255).astype(np.uint8)
    write_video(folder / "matte.mkv", np.repeat(matte[..., None], 3, -1), RATE, "ffv1", timecode="01:00:00:00")
    write_video(folder / "white.mkv", np.full((9, 64, 80, 3), 255, np.uint8), RATE, "ffv1")
    return folder, clip


def erase_args(folder: Path, out: Path, *extra: str) -> list[str]:
    shot, matte = str(folder / "shot.mkv"), str(folder / "matte.mkv")
    return ["edit", "--input", shot, "--matte", matte, "--steps", "3", "--out", str(out), *extra]


def test_erase_needs_no_prompt_and_writes_the_clean_plate_with_its_map_as_alpha(panning, tmp_path):
    folder, clip = panning
    out, plate_out = tmp_path / "erased.mkv", tmp_path / "plate.mkv"
    done = kvlock(*erase_args(folder, out, "--erase", "--plate-out", str(plate_out), "--json"))
    assert done.returncode == 0, done.stderr
    last = json.loads(done.stdout.splitlines()[-1])
    assert last["event"] == "done" and last["plate"] == str(plate_out) and last["seen_fraction"] > 0.9
    erased = read_frames(probe(out), 0, 9)
    outside = np.stack([feather_matte(m, 4) for m in clip.matte]) == 0
    assert np.array_equal(erased[outside], clip.frames[outside])
    plate = read_frames(probe(plate_out), 0, 9)
    assert plate.shape == (9, 64, 80, 4) and plate.dtype == np.uint8
    hole = clip.matte > 0
    assert np.array_equal(plate[~hole][..., :3], clip.frames[~hole])  # the source outside the matte
    alpha = plate[..., 3]
    assert set(np.unique(alpha)) <= {0, 255} and (alpha[~hole] == 255).all()
    seen = hole & (alpha == 255)
    assert seen.sum() > 0.9 * hole.sum()
    assert np.array_equal(erased[seen], plate[seen][..., :3])  # the erase kept what other frames showed
    truth = np.rint(clip.background * 255.0)
    assert np.abs(plate[seen][..., :3] - truth[seen]).max(axis=-1).mean() <= 1.5


def test_erase_takes_write_each_take_and_the_clean_plate_once(panning, tmp_path):
    """``--erase --takes 2 --plate-out``: two erases beside each other, each keeping what other frames showed as
    filmed, and one plate (the source's, the same for both); a plate named like a take is refused first."""
    folder, clip = panning
    out, plate_out = tmp_path / "erased.mkv", tmp_path / "plate.mkv"
    done = kvlock(*erase_args(folder, out, "--erase", "--takes", "2", "--plate-out", str(plate_out), "--json"))
    assert done.returncode == 0, done.stderr
    last = json.loads(done.stdout.splitlines()[-1])
    assert [Path(t["output"]).name for t in last["takes"]] == ["erased.take1.mkv", "erased.take2.mkv"]
    assert last["plate"] == str(plate_out) and last["seen_fraction"] > 0.9
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["plate.mkv", *(f"erased.take{k}{s}" for k in (1, 2) for s in (".mkv", ".trace.json", ".trace.png"))]
    )
    plate = read_frames(probe(plate_out), 0, 9)
    seen = (clip.matte > 0) & (plate[..., 3] == 255)
    outside = np.stack([feather_matte(m, 4) for m in clip.matte]) == 0
    erased = [read_frames(probe(tmp_path / f"erased.take{k}.mkv"), 0, 9) for k in (1, 2)]
    for take in erased:
        assert np.array_equal(take[outside], clip.frames[outside])
        assert np.array_equal(take[seen], plate[seen][..., :3])
    assert not np.array_equal(erased[0], erased[1])
    for k in (1, 2):
        trace = json.loads((tmp_path / f"erased.take{k}.trace.json").read_text())
        assert trace["settings"]["erase"] and trace["take"] == k and trace["plate"]["seen_fraction"] > 0.9
    clash = kvlock(
        *erase_args(folder, tmp_path / "x.mkv", "--erase", "--takes", "2", "--plate-out", str(tmp_path / "x.take2.mkv"))
    )
    assert clash.returncode == 5 and "the same name" in clash.stderr, clash.stderr


def test_erase_and_plate_mistakes_are_said_before_the_model_loads(panning, tmp_path):
    folder, _ = panning
    out = tmp_path / "never.mkv"
    no_prompt = kvlock(*erase_args(folder, out))
    assert no_prompt.returncode == 5 and "--prompt is needed" in no_prompt.stderr and "--erase" in no_prompt.stderr
    white = kvlock(*with_flag(erase_args(folder, out, "--erase"), "--matte", str(folder / "white.mkv")))
    assert white.returncode == 5 and "covers every pixel of 9 frame(s)" in white.stderr, white.stderr
    mp4 = kvlock(*erase_args(folder, out, "--erase", "--plate-out", str(tmp_path / "plate.mp4")))
    assert mp4.returncode == 5 and "--plate-out needs alpha" in mp4.stderr
    both = kvlock(*erase_args(folder, out, "--erase", "--source-plate", "original"))
    assert both.returncode == 5 and "erase paints the background from the clean plate" in both.stderr
    assert not out.exists()


def test_a_phone_clip_with_a_display_rotation_is_edited_as_it_is_shown(media, tmp_path):
    """The source stored sideways and tagged to be turned (as phones write portrait video); the matte drawn
    over the picture as the editor sees it. The result is upright, at the shown size, with no tag, and every
    pixel outside the feathered matte is the shown source's."""
    folder, frames, matte = media
    stored = np.ascontiguousarray(np.rot90(frames[:9], -1, axes=(1, 2)))  # turning it back 90° shows ``frames``
    source = write_turned(tmp_path / "portrait.mkv", stored, RATE, 90)
    done = kvlock(*base_args(folder, tmp_path / "edit.mkv", "--json"), "--input", str(source), "--frames", "0:9")
    assert done.returncode == 0, done.stderr
    info = probe(tmp_path / "edit.mkv")
    assert (info.width, info.height, info.rotation) == (100, 72, 0)
    edited = read_frames(info, 0, 9)
    outside = np.stack([feather_matte(m / 255.0, 4) for m in matte[:9]]) == 0
    assert np.array_equal(edited[outside], frames[:9][outside])
    assert not np.array_equal(edited[~outside], frames[:9][~outside])

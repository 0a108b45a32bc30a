"""``kvlock batch`` as a user runs it: the real command in a subprocess, real OpenTimelineIO cuts through its
adapters, a real server on loopback with the tiny model; results checked frame by frame against the media."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import opentimelineio as otio
import pytest

from kvlock.editing.compositing import feather_matte
from kvlock.media.decode import probe, read_frames
from kvlock.media.timecode import parse_timecode

from ..support.cuts import Media, ShotSpec, build_cut, record_frames, write_media
from ..support.server_helpers import start, states, wait_for

ot = otio.opentime
KVLOCK = [str(Path(sys.executable).with_name("kvlock"))]
if not Path(KVLOCK[0]).exists():
    KVLOCK = [sys.executable, "-m", "kvlock_cli.main"]
FCP = "a red cube"


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch-media")
    return {
        "folder": folder,
        "a": write_media(folder, "A001", Fraction(24), "01:00:10:00", seed=1),
        "b": write_media(folder, "B001", Fraction(24), "02:00:00:00", seed=2),
        "c": write_media(folder, "C001", Fraction(24), "03:00:00:00", seed=3),
    }


@pytest.fixture(scope="module")
def shared(tmp_path_factory, media):
    """A server that may read the media folder (jobs by path)."""
    app = start(tmp_path_factory.mktemp("batch-shared"), preload=["tiny"], media_roots=[str(media["folder"])])
    yield app
    app.stop(grace=0)


@pytest.fixture(scope="module")
def private(tmp_path_factory):
    """A server that may read no media of ours (every shot uploaded)."""
    app = start(tmp_path_factory.mktemp("batch-private"), preload=["tiny"])
    yield app
    app.stop(grace=0)


def command(cut: Path, out: Path, server, *extra: str, steps: int = 2) -> list[str]:
    return [*KVLOCK, "batch", str(cut), "--out", str(out), "--server", server.address, "--token", server.token,
            "--steps", str(steps), *extra]  # fmt: skip


def batch(cut: Path, out: Path, server, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(cut, out, server, "--json", *extra), capture_output=True, text=True, timeout=900)


def events(stdout: str, kind: str | None = None) -> list[dict]:
    found = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return [e for e in found if kind is None or e["event"] == kind]


def save(timeline: otio.schema.Timeline, path: Path) -> Path:
    otio.adapters.write_to_file(timeline, str(path))
    return path


def result_clips(path: Path) -> tuple[otio.schema.Timeline, list[otio.schema.Clip]]:
    timeline = otio.adapters.read_from_file(str(path))
    tracks = [t for t in timeline.video_tracks() if t.name.startswith("KV-Lock")]
    return timeline, [c for t in tracks for c in t.find_clips()]


def result_path(clip: otio.schema.Clip) -> Path:
    return Path(otio.url_utils.filepath_from_url(clip.media_reference.target_url))


def assert_edit_of(result: Path, media: Media, first: int, count: int, matte_first: int) -> None:
    """Outside the feathered matte the result is the source's frames [first, first+count), bit for bit; the
    matte read from its own frame ``matte_first``; inside, the frames changed."""
    edited = read_frames(probe(result), 0, count)[..., :3]
    source = media.frames[first : first + count]
    mattes = media.mattes[matte_first : matte_first + count]
    outside = np.stack([feather_matte(m / 255.0, 4) for m in mattes]) == 0
    assert edited.shape == source.shape
    assert np.array_equal(edited[outside], source[outside])
    assert not np.array_equal(edited[~outside], source[~outside])


def test_marked_shots_are_queued_in_cut_order_and_come_back_on_a_kvlock_track(tmp_path, shared, media):
    """An FCP 7 XML cut (its markers' comments as FCP 7 XML holds them) in, an .otio cut with results out."""
    note = {"fcp_xml": {"comment": FCP}}
    shots = [
        ShotSpec("B001", media["b"], 30, 10, 6, metadata={"fcp_xml": {"comment": "a blue ball"}}, comment=False),
        ShotSpec("A001", media["a"], 10, 4, 8, marker=(1, 5), metadata=note, comment=False),
    ]
    cut = save(build_cut(Fraction(24), "01:00:00:00", shots), tmp_path / "cut.xml")
    before = cut.read_bytes()
    done = batch(cut, tmp_path / "cut.kvlock.otio", shared, "--seed", "5")
    assert done.returncode == 0, done.stderr
    shot_events = events(done.stdout, "shot")
    assert [(e["name"], e["state"]) for e in shot_events] == [
        ("A001", "queued"), ("B001", "queued"), ("A001", "done"), ("B001", "done")]  # fmt: skip
    steps = {e["number"] for e in events(done.stdout, "progress")}
    assert steps == {1, 2}  # progress per shot
    assert events(done.stdout, "done")[0]["done"] == 2 and cut.read_bytes() == before  # the cut is never changed
    timeline, clips = result_clips(tmp_path / "cut.kvlock.otio")
    assert [t.name for t in timeline.video_tracks()] == ["", "", "KV-Lock"]  # FCP 7 XML names no tracks
    assert [record_frames(c, timeline) for c in clips] == [(11, 16), (30, 36)]
    a, b = (dict(c.metadata["kvlock"]) for c in clips)
    assert (a["prompt"], b["prompt"], dict(a["settings"])["seed"], dict(a["settings"])["steps"]) == (
        FCP, "a blue ball", 5, 2)  # fmt: skip
    jobs = states(shared)
    assert jobs[a["job_id"]] == jobs[b["job_id"]] == "succeeded"
    assert shared.store.get(a["job_id"]).spec.source.kind == "file"  # the server read the media itself
    for clip, spec, first, matte in ((clips[0], media["a"], 5, 8), (clips[1], media["b"], 10, 13)):
        path = result_path(clip)
        info = probe(path)
        assert info.rate == Fraction(24) and info.frames == clip.source_range.duration.to_frames()
        assert info.timecode == ot.to_timecode(clip.media_reference.available_range.start_time, 24)
        assert_edit_of(path, spec, first, info.frames, matte)


def test_a_shot_of_several_takes_puts_each_take_on_its_own_track_under_the_first(tmp_path, shared, media):
    """Takes stacked as editors audition versions: take 1 on ``KV-Lock`` on top, take 2 on ``KV-Lock take 2``
    under it at the same record range; each take an edit of the source; a re-run finds every take's files."""
    shots = [
        ShotSpec("A001", media["a"], 10, 4, 6, metadata={"kvlock": {"settings": {"takes": 2}}}),
        ShotSpec("B001", media["b"], 20, 10, 6),
    ]
    cut = save(build_cut(Fraction(24), "01:00:00:00", shots), tmp_path / "cut.otio")
    out = tmp_path / "cut.kvlock.otio"
    done = batch(cut, out, shared, "--seed", "3")
    assert done.returncode == 0, done.stderr
    assert events(done.stdout, "done")[0]["done"] == 2  # shots, not files
    timeline = otio.adapters.read_from_file(str(out))
    tracks = {t.name: t for t in timeline.video_tracks()}
    assert [t.name for t in timeline.video_tracks()] == ["V1", "V2", "KV-Lock take 2", "KV-Lock"]
    top, second = list(tracks["KV-Lock"].find_clips()), list(tracks["KV-Lock take 2"].find_clips())
    assert [c.name for c in top] == ["A001 (KV-Lock take 1)", "B001 (KV-Lock)"] and len(second) == 1
    assert record_frames(second[0], timeline) == record_frames(top[0], timeline) == (10, 16)
    takes = [dict(c.metadata["kvlock"]) for c in (top[0], second[0], top[1])]
    assert [(t["take"], t["takes"]) for t in takes] == [(1, 2), (2, 2), (1, 1)]
    assert takes[0]["job_id"] == takes[1]["job_id"]
    first, other = result_path(top[0]), result_path(second[0])
    assert (first.name, other.name) == (f"{takes[0]['job_id']}.take1.mkv", f"{takes[0]['job_id']}.take2.mkv")
    for path in (first, other):
        assert_edit_of(path, media["a"], 4, 6, 7)
    assert not np.array_equal(read_frames(probe(first), 0, 6), read_frames(probe(other), 0, 6))  # two versions
    again = batch(cut, out, shared, "--seed", "3", "--overwrite")
    assert again.returncode == 0, again.stderr
    assert {e["name"]: e["state"] for e in events(again.stdout, "shot")} == {"A001": "skipped", "B001": "skipped"}


def test_a_final_cut_pro_cut_in_and_out(tmp_path, shared, media):
    """Final Cut Pro's XML (``.fcpxml``, through its OpenTimelineIO adapter): a marker's text is its name, so the
    prompt rides after ``KV-Lock:``; Final Cut's markers are points, so each stands for its whole clip; the
    results come back as another ``.fcpxml`` with the KV-Lock track on the right record frames."""
    shots = [
        ShotSpec("A001", media["a"], 10, 4, 6, marker=(2, 1), marker_name="KV-Lock: a red cube", comment=False),
        ShotSpec("B001", media["b"], 20, 10, 6, marker=(0, 1), marker_name="KV-Lock: a blue ball", comment=False),
    ]
    cut = save(build_cut(Fraction(24), "01:00:00:00", shots), tmp_path / "cut.fcpxml")
    out = tmp_path / "cut.kvlock.fcpxml"
    done = batch(cut, out, shared, "--seed", "11")  # jobs of its own: other tests' shots must not be found done
    assert done.returncode == 0, done.stderr
    assert [e["name"] for e in events(done.stdout, "shot") if e["state"] == "done"] == ["A001", "B001"]
    timeline = otio.adapters.read_from_file(str(out))
    clips = [c for c in timeline.video_tracks()[-1].find_clips()]
    assert [record_frames(c, timeline) for c in clips] == [(10, 16), (20, 26)]
    for clip, spec, first in zip(clips, (media["a"], media["b"]), (4, 10), strict=True):
        assert_edit_of(result_path(clip), spec, first, 6, first + 3)
    prompts = [shared.store.get(e["job_id"]).spec.prompt for e in events(done.stdout, "shot") if e["state"] == "done"]
    assert prompts == ["a red cube", "a blue ball"]


DF = Fraction(30000, 1001)


@pytest.mark.parametrize(
    ("rate", "suffix", "start", "media_tc", "record"),
    [
        (Fraction(24000, 1001), ".edl", "00:59:58:00", "04:00:00:00", 40),
        (Fraction(25), ".otio", "10:00:00:00", "10:00:20:00", 7),
        (DF, ".xml", "01:00:00;00", "01:00:59;20", 1795),  # the shot crosses 01:01:00;00, where two numbers drop
    ],
    ids=["23.976-edl", "25-otio", "29.97DF-fcp7xml"],
)
def test_each_rate_lands_on_the_right_record_frames(tmp_path, shared, media, rate, suffix, start, media_tc, record):
    own = write_media(media["folder"] / f"rate-{float(rate):g}", "R001", rate, media_tc, seed=7)
    edl = suffix == ".edl"
    spec = ShotSpec("R001", own, record, 6, 7, metadata={"fcp_xml": {"comment": FCP}} if suffix == ".xml" else {},
                    marker_name="KV-Lock: a red cube" if edl else "KV-Lock", comment=suffix == ".otio",
                    matte_slip=None if edl else 2)  # fmt: skip
    timeline = build_cut(rate, start, [spec], available=not edl)
    if edl:  # one video track: the matte comes from --matte-pattern, frame for frame with the source
        timeline.tracks.remove(timeline.tracks[1])
    cut = save(timeline, tmp_path / f"cut{suffix}")
    extra = ["--rate", str(rate), "--matte-pattern", "{folder}/{stem}_matte{suffix}"] if edl else []
    done = batch(cut, tmp_path / "out.otio", shared, *extra)
    assert done.returncode == 0, done.stderr
    out, (clip,) = result_clips(tmp_path / "out.otio")
    assert record_frames(clip, out) == (record, record + 7)  # where the source clip sits in the cut
    if not edl:  # an EDL has record timecodes only (the CMX adapter writes them from 00:00:00:00)
        assert out.global_start_time.to_frames() == parse_timecode(start, rate)
    path = result_path(clip)
    info = probe(path)
    first_tc = ot.to_timecode(ot.RationalTime(parse_timecode(media_tc, rate) + 6, float(rate)), float(rate))
    assert info.rate == rate and info.frames == 7 and info.timecode == first_tc
    if rate == DF:
        assert first_tc == "01:00:59;26" and ";" in info.timecode
    assert_edit_of(path, own, 6, 7, 6 if edl else 8)


def three_shots(media, later_steps: int | None = None) -> list[ShotSpec]:
    """Three shots; ``later_steps``: the second and third take that many steps (their markers say so)."""
    slow = {"kvlock": {"settings": {"steps": later_steps}}} if later_steps else {}
    return [ShotSpec("A001", media["a"], 10, 4, 6), ShotSpec("B001", media["b"], 20, 10, 6, metadata=slow),
            ShotSpec("C001", media["c"], 30, 2, 6, metadata=slow)]  # fmt: skip


def run_until(args: list[str], done_event) -> tuple[subprocess.Popen, list[dict]]:
    """Start the batch and read its JSON lines until ``done_event(event)``."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(json.loads(line))
        if done_event(seen[-1]):
            return proc, seen
    raise AssertionError(f"the batch ended first: {proc.wait()} {proc.stderr.read()}")


def test_a_batch_killed_halfway_and_run_again_redoes_nothing_and_loses_nothing(tmp_path, media):
    server = start(tmp_path / "state", preload=["tiny"], media_roots=[str(media["folder"])])
    try:
        cut = save(build_cut(Fraction(24), "01:00:00:00", three_shots(media, 40)), tmp_path / "cut.otio")
        out = tmp_path / "cut.kvlock.otio"
        args = command(cut, out, server, "--json", steps=4)
        proc, _ = run_until(args, lambda e: e["event"] == "shot" and e["state"] == "done")
        proc.kill()  # no goodbye: SIGKILL
        proc.wait(timeout=60)
        assert not out.exists()
        held = states(server)
        assert len(held) == 3  # every shot was queued before any was followed
        results = tmp_path / "cut.kvlock"
        (first,) = results.glob("*.mkv")  # one complete result, nothing half written under a final name
        companions = {first.name.replace(".mkv", ".trace.json"), first.name.replace(".mkv", ".trace.png")}
        assert probe(first).frames == 6 and {p.name for p in results.iterdir()} == {first.name, *companions}
        kept = first.stat()
        again = subprocess.run(args, capture_output=True, text=True, timeout=900)
        assert again.returncode == 0, again.stderr
        shots = events(again.stdout, "shot")
        assert [e["state"] for e in shots if e["name"] == "A001"] == ["skipped"]
        adopted = [e for e in shots if e["state"] == "queued"]
        assert [e["name"] for e in adopted] == ["B001", "C001"] and all(e["attempt"] in held for e in adopted)
        records = {r.job_id: r for r in server.store.list(limit=100)}
        assert set(records) == set(held) and all(r.attempts == 1 for r in records.values())  # nothing ran twice
        assert (first.stat().st_ino, first.stat().st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)
        timeline, clips = result_clips(out)
        assert [record_frames(c, timeline) for c in clips] == [(10, 16), (20, 26), (30, 36)]
        for clip, spec, first_frame in zip(clips, (media["a"], media["b"], media["c"]), (4, 10, 2), strict=True):
            assert_edit_of(result_path(clip), spec, first_frame, 6, first_frame + 3)
    finally:
        server.stop(grace=0)


def test_ctrl_c_cancels_the_batchs_jobs_and_writes_nothing(tmp_path, media):
    server = start(tmp_path / "state", preload=["tiny"], media_roots=[str(media["folder"])])
    try:
        cut = save(build_cut(Fraction(24), "01:00:00:00", three_shots(media)), tmp_path / "cut.otio")
        out = tmp_path / "cut.kvlock.otio"
        args = command(cut, out, server, "--json", steps=400)
        proc, _ = run_until(args, lambda e: e["event"] == "progress")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 130, err
        assert "the batch's jobs still queued or running were cancelled and no timeline was written" in err
        assert len(states(server)) == 3  # the running job stops at its next step: the server says when
        wait_for(lambda: set(states(server).values()) == {"cancelled"}, timeout=120)
        assert not out.exists() and list((tmp_path / "cut.kvlock").iterdir()) == []
    finally:
        server.stop(grace=0)


def test_failed_shots_are_reported_with_their_reasons_and_the_others_finish(tmp_path, private, media, monkeypatch):
    """Uploaded (the server reads none of these files): a good shot; no matte clip; a matte file that is not
    there; settings the engine refuses; media that is not there; a job that fails on the server."""
    gone = write_media(tmp_path / "gone", "G001", Fraction(24), "05:00:00:00")
    gone.source.unlink()
    shots = [
        ShotSpec("A001", media["a"], 10, 4, 6),
        ShotSpec("B001", media["b"], 20, 10, 6, matte_slip=None),
        ShotSpec("C001", media["c"], 30, 2, 6, matte_slip=None, metadata={"kvlock": {"matte": "nowhere.mov"}}),
        ShotSpec("D001", media["a"], 40, 20, 6, metadata={"kvlock": {"settings": {"feather": 9999}}}),
        ShotSpec("G001", gone, 50, 0, 6),
        ShotSpec("F001", media["b"], 60, 0, 6, prompt="fail here"),
    ]
    original = private.executor.editor

    class Failing:
        def __init__(self, editor) -> None:
            self.editor = editor

        def edit_takes(self, request, *args, **kwargs):
            if request.prompt == "fail here":
                raise RuntimeError("the model could not edit this shot")
            return self.editor.edit_takes(request, *args, **kwargs)

    monkeypatch.setattr(private.executor, "editor", lambda model, slot=0: Failing(original(model, slot)))
    cut = save(build_cut(Fraction(24), "01:00:00:00", shots), tmp_path / "cut.otio")
    done = batch(cut, tmp_path / "out.otio", private)
    assert done.returncode == 1, done.stderr
    reasons = {e["name"]: e.get("reason", e["state"]) for e in events(done.stdout, "shot") if e["state"] != "queued"}
    assert reasons["A001"] == "done"
    assert reasons["B001"].startswith("no matte: nothing on V2 covers the shot")
    assert (
        reasons["C001"]
        == f"the matte {tmp_path / 'nowhere.mov'} is missing: neither this machine nor the server can read it"
    )
    assert reasons["D001"].startswith("refused settings: feather")
    assert reasons["G001"].startswith(f"the media {gone.source} is missing")
    assert "the model could not edit this shot" in reasons["F001"]
    summary = events(done.stdout, "done")[0]
    assert summary["done"] == 1 and len(summary["failed"]) == 5
    timeline, (clip,) = result_clips(tmp_path / "out.otio")
    assert record_frames(clip, timeline) == (10, 16)
    assert private.store.get(dict(clip.metadata["kvlock"])["job_id"]).spec.source.kind == "inline"  # uploaded
    assert_edit_of(result_path(clip), media["a"], 4, 6, 7)


def test_the_progress_bars_on_a_terminal(tmp_path, shared, media):
    import pty

    cut = save(build_cut(Fraction(24), "01:00:00:00", three_shots(media)[:1]), tmp_path / "cut.otio")
    leader, follower = pty.openpty()
    proc = subprocess.Popen(command(cut, tmp_path / "o.otio", shared), stdout=subprocess.PIPE, stderr=follower,
                            text=True)  # fmt: skip
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
    assert "0/1 shots" in shown and "1/1 shots" in shown and "step 1/" in shown and "A001 on V1" in shown
    assert proc.stdout.read().startswith(f"wrote {tmp_path / 'o.otio'}: 1 shot(s) done")

"""Reading a cut into shots and writing results back (``kvlock_cli.cut``, ``cut_output``), with real
OpenTimelineIO timelines and its FCP 7 XML and CMX 3600 adapters; no server."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import opentimelineio as otio
import pytest

from kvlock_cli.cut import CutOptions, read_cut
from kvlock_cli.cut_output import Placed, check_output, with_results, write_timeline

from ..support.cuts import ShotSpec, build_cut, record_frames, write_media

ot = otio.opentime
RATE = Fraction(24)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cut-media")
    return {
        "a": write_media(folder, "A001", RATE, "01:00:10:00", seed=1),
        "b": write_media(folder, "B001", RATE, "02:00:00:00", seed=2),
        "pal": write_media(folder, "P001", Fraction(25), "10:00:00:00", seed=3),
    }


def save(timeline: otio.schema.Timeline, path: Path) -> Path:
    otio.adapters.write_to_file(timeline, str(path))
    return path


def test_clip_markers_become_shots_in_cut_order_with_their_frames_and_slipped_mattes(media, tmp_path):
    shots = [
        ShotSpec("B001", media["b"], 30, 10, 6, prompt="a blue ball"),  # a point marker: the whole clip
        ShotSpec("A001", media["a"], 10, 4, 8, marker=(1, 5), metadata={"kvlock": {"settings": {"steps": 7}}}),
    ]
    cut = read_cut(save(build_cut(RATE, "01:00:00:00", shots), tmp_path / "cut.otio"), CutOptions(settings={"seed": 3}))
    assert cut.problems == ()
    first, second = cut.shots
    assert (first.name, first.source.start, first.source.end) == ("A001", 5, 10)
    assert (first.record.start_time.to_frames(), first.frames) == (11, 5)
    assert (first.matte.path, first.matte.start, first.matte.end) == (str(media["a"].matte), 8, 13)  # slip 3
    assert (first.prompt, first.settings.steps, first.settings.seed) == ("a red cube", 7, 3)
    assert first.source.timecode == "01:00:10:05" and first.where() == "A001 on V1, 01:00:00:11–01:00:00:15"
    assert (second.name, second.source.start, second.source.end, second.prompt) == ("B001", 10, 16, "a blue ball")
    assert (second.matte.start, second.matte.end) == (13, 19) and second.settings.steps is None


def test_a_timeline_marker_marks_the_clip_under_it(media, tmp_path):
    timeline = build_cut(RATE, "01:00:00:00", [ShotSpec("A001", media["a"], 10, 4, 8, marker_name="other")])
    span = ot.TimeRange(ot.RationalTime(12, 24), ot.RationalTime(3, 24))  # stack time: from the timeline's start
    timeline.tracks.markers.append(otio.schema.Marker("KV-Lock", span, metadata={"kvlock": {"prompt": "a hat"}}))
    timeline.tracks.markers.append(otio.schema.Marker("KV-Lock", ot.TimeRange(ot.RationalTime(2, 24))))  # nothing
    cut = read_cut(save(timeline, tmp_path / "cut.otio"), CutOptions(prompt="unused"))
    (shot,) = cut.shots
    assert (shot.source.start, shot.source.end, shot.prompt, shot.track) == (6, 9, "a hat", 1)
    assert (shot.matte.start, shot.matte.end) == (9, 12)
    (problem,) = cut.problems
    assert problem.reason == "no clip with media under the timeline marker" and "01:00:00:02" in problem.where


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda s, m: setattr(s, "marker", (5, 9)), "the marker runs past the end of A001"),
        (lambda s, m: setattr(s, "matte_slip", None), "no matte: nothing on V2 covers the shot"),
        (lambda s, m: setattr(s, "metadata", {"kvlock": {"settings": {"steps": 0}}}), "refused settings: steps"),
        (lambda s, m: setattr(s, "metadata", {"kvlock": {"settings": {"colour": 1}}}), "refused settings"),
        (lambda s, m: setattr(s, "metadata", {"kvlock": {"stepz": 3}}), "unknown keys stepz"),
        (lambda s, m: setattr(s, "comment", False), "no prompt"),
        (lambda s, m: setattr(s, "media", m["pal"]), "P001.mkv is 25 fps but the cut plays it at 24 fps"),
    ],
)
def test_a_shot_that_cannot_be_made_is_a_problem_with_its_reason_and_the_others_stay(media, tmp_path, change, reason):
    broken, fine = ShotSpec("A001", media["a"], 10, 4, 8), ShotSpec("B001", media["b"], 30, 10, 6)
    change(broken, media)
    if broken.media is media["pal"]:  # the 25 fps file placed in the 24 fps cut as if it were 24 fps
        broken.media = type(media["pal"])(**{**vars(media["pal"]), "rate": RATE})
    cut = read_cut(save(build_cut(RATE, "01:00:00:00", [broken, fine]), tmp_path / "cut.otio"), CutOptions())
    assert [s.name for s in cut.shots] == ["B001"]
    (problem,) = cut.problems
    assert reason in problem.reason, problem.reason
    assert problem.where.startswith("A001 on V1, 01:00:00:")


def test_a_speed_change_and_a_half_covering_matte_are_refused(media, tmp_path):
    timeline = build_cut(RATE, "01:00:00:00", [ShotSpec("A001", media["a"], 10, 4, 8), ShotSpec("B001", media["b"],
                         30, 10, 6)])  # fmt: skip
    v1, v2 = timeline.video_tracks()
    v1.find_clips()[0].effects.append(otio.schema.LinearTimeWarp("slow", time_scalar=0.5))
    matte = list(v2.find_clips())[1]
    matte.source_range = ot.TimeRange(matte.source_range.start_time, ot.RationalTime(4, 24))  # shorter than B001
    cut = read_cut(save(timeline, tmp_path / "cut.otio"), CutOptions())
    reasons = sorted(p.reason for p in cut.problems)
    assert cut.shots == () and len(reasons) == 2
    assert reasons[0].startswith("A001 has a speed change or freeze (LinearTimeWarp)")
    assert reasons[1].startswith("matte length mismatch: B001_matte on V2 covers 01:00:01:06–01:00:01:09")


def test_marker_matte_and_matte_pattern(media, tmp_path):
    (tmp_path / "mattes").mkdir()
    relative = ShotSpec("A001", media["a"], 10, 4, 8, matte_slip=None, metadata={"kvlock": {"matte": "mattes/a.mov"}})
    patterned = ShotSpec("B001", media["b"], 30, 10, 6, matte_slip=None)
    options = CutOptions(matte_pattern="{folder}/{stem}_matte{suffix}")
    cut = read_cut(save(build_cut(RATE, "01:00:00:00", [relative, patterned]), tmp_path / "cut.otio"), options)
    a, b = cut.shots
    assert (a.matte.path, a.matte.start) == (str(tmp_path / "mattes" / "a.mov"), None)  # follows the source
    assert b.matte.path == str(media["b"].matte)


def test_fcp_xml_and_edl_carry_what_a_batch_needs(media, tmp_path):
    """The same shots from the OTIO object, its FCP 7 XML and its EDL: record frames, source frames, prompt."""
    fcp = {"fcp_xml": {"comment": "a red cube"}}  # how FCP 7 XML holds a marker's comment
    shot = ShotSpec("A001", media["a"], 10, 4, 8, marker=(1, 5), metadata=fcp, comment=False)
    xml = save(build_cut(RATE, "01:00:00:00", [shot]), tmp_path / "cut.xml")
    (from_xml,) = read_cut(xml, CutOptions()).shots
    assert (from_xml.record.start_time.to_frames(), from_xml.source.start, from_xml.source.end) == (11, 5, 10)
    assert (from_xml.prompt, from_xml.matte.start) == ("a red cube", 8)
    edl_shot = ShotSpec("A001", media["a"], 10, 4, 8, marker_name="KV-Lock: a red cube", comment=False, matte_slip=None)
    timeline = build_cut(RATE, "01:00:00:00", [edl_shot], available=False)  # an EDL has no media ranges
    timeline.tracks.remove(timeline.tracks[1])  # and one video track
    edl = save(timeline, tmp_path / "cut.edl")
    assert "* LOC: 01:00:10:04 RED     KV-LOCK: A RED CUBE" in edl.read_text()  # the adapter writes capitals
    (from_edl,) = read_cut(edl, CutOptions(matte_pattern="{folder}/{stem}_matte{suffix}")).shots
    assert (from_edl.record.start_time.to_frames(), from_edl.source.start, from_edl.source.end) == (10, 4, 12)
    assert from_edl.prompt == "A RED CUBE" and from_edl.source.timecode == "01:00:10:04"


def test_results_go_on_a_kvlock_track_at_their_record_ranges_overlaps_on_a_second(media, tmp_path):
    shots = [ShotSpec("A001", media["a"], 10, 4, 8, marker=(2, 4)), ShotSpec("B001", media["b"], 30, 10, 6)]
    timeline = build_cut(RATE, "01:00:00:00", shots)
    span = ot.TimeRange(ot.RationalTime(11, 24), ot.RationalTime(4, 24))
    timeline.tracks.markers.append(otio.schema.Marker("KV-Lock", span, metadata={"kvlock": {"prompt": "a hat"}}))
    cut = read_cut(save(timeline, tmp_path / "cut.otio"), CutOptions())  # a second shot over A001, overlapping
    assert cut.problems == () and len(cut.shots) == 3
    placed = [Placed(shot, f"job{n}", tmp_path / f"r{n}.mkv") for n, shot in enumerate(cut.shots)]
    out = with_results(cut.timeline, placed)
    assert len(cut.timeline.tracks) == 2  # the cut read is untouched
    tracks = {t.name: t for t in out.video_tracks()}
    assert set(tracks) == {"V1", "V2", "KV-Lock", "KV-Lock 2"}
    results = [c for t in out.video_tracks()[2:] for c in t.find_clips()]
    spans = {c.metadata["kvlock"]["job_id"]: record_frames(c, out) for c in results}
    assert spans == {"job0": (11, 15), "job1": (12, 16), "job2": (30, 36)}
    clip = tracks["KV-Lock"].find_clips()[0]
    assert clip.media_reference.target_url == (tmp_path / "r0.mkv").as_uri()
    assert clip.media_reference.available_range.start_time == ot.from_timecode("01:00:10:05", 24)  # frame 5
    assert dict(clip.metadata["kvlock"])["prompt"] == "a hat"
    write_timeline(out, tmp_path / "out.xml", overwrite=False)  # FCP 7 XML keeps the tracks and places
    back = otio.adapters.read_from_file(str(tmp_path / "out.xml"))
    assert sorted(record_frames(c, back) for t in back.video_tracks()[2:] for c in t.find_clips()) == [
        (11, 15), (12, 16), (30, 36)]  # fmt: skip


def test_the_output_is_checked_before_any_work(tmp_path):
    cut = tmp_path / "cut.otio"
    cut.write_text("{}")
    for out, words in ((tmp_path / "x.edl", "an EDL holds one video track"), (tmp_path / "x.mov", "no OpenTimeline"),
                       (cut, "is the cut itself")):  # fmt: skip
        with pytest.raises(ValueError, match=words):
            check_output(out, cut, overwrite=False)
    (tmp_path / "taken.otio").write_text("{}")
    with pytest.raises(FileExistsError, match="--overwrite"):
        check_output(tmp_path / "taken.otio", cut, overwrite=False)

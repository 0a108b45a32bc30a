"""Rendering every KV-Lock timeline marker from Resolve, and a cut's round trip through Resolve's OTIO export,
``kvlock batch`` and Resolve's timeline import: against the fake Resolve (tests/support/fake_resolve.py), per
version and per reading of the undocumented marker positions, with a live server and the tiny model."""

from __future__ import annotations

import json
import re
import time
from fractions import Fraction
from pathlib import Path

import pytest

from kvlock_cli.main import main as kvlock_main
from kvlock_resolve import dialog, host, host_markers

from ..support import fake_resolve as fr
from ..support.server_helpers import states
from .test_resolve_script import (
    DF_REC,
    LENGTH,
    OFFSET,
    REC,
    SLIP,
    assert_background_is_source,
    last_settings,
    make_resolve,
    placed_items,
    resolve_media,
    resolve_servers,
    run_page,
    timeline_of,
    wait_until_done,
)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return resolve_media(tmp_path_factory.mktemp("resolve-media"))


@pytest.fixture(scope="module")
def servers(tmp_path_factory, media):
    yield from resolve_servers(tmp_path_factory, media)


def run_markers(
    resolve, server, out, seed: str = "0", steps: int = 3, cancel_at: str = "", takes: int = 1
) -> tuple[dict, list[str]]:
    """The Studio dialog: fill it, press "Render all KV-Lock markers", let its timer run to the end (pressing
    Cancel once the progress line matches ``cancel_at``)."""
    seen: list[str] = []

    def fill(d: fr.Dispatcher) -> None:
        items = d.windows[-1].GetItems()
        items["Address"].Text, items["Token"].Text = server.address, server.token
        items["Output"].Text, items["Steps"].Value, items["Seed"].Text = str(out), steps, seed
        items["Takes"].Value = takes

    def wait(d: fr.Dispatcher) -> None:
        deadline, cancelled = time.monotonic() + 600, False
        while d.tick_timers():
            seen.append(d.windows[-1].GetItems()["Progress"].Text)
            if cancel_at and not cancelled and re.match(cancel_at, seen[-1]):
                d.click("Cancel")
                cancelled = True
            assert time.monotonic() < deadline, "the batch did not end"
            time.sleep(0.05)

    close = lambda d: d.windows[-1].On.KVLock.events["Close"]({})  # noqa: E731
    bmd = fr.Bmd(resolve, [fill, lambda d: d.click("RenderMarkers"), wait, close])
    dialog.run(resolve, bmd)
    return bmd.dispatchers[0].windows[0].GetItems(), seen


def spans(resolve, track: int) -> list[tuple[int, int, int]]:
    return [(i.GetStart(), i.GetEnd(), i.GetLeftOffset()) for i in placed_items(resolve, track)]


@pytest.mark.parametrize(("version", "reading"), [("21", "offset"), ("18.5", "absolute")])
def test_every_kvlock_marker_is_rendered_and_placed_and_a_second_run_redoes_none(
    tmp_path, servers, media, version, reading
):
    resolve = make_resolve(media, version, studio=True, marker_frames=reading)
    timeline = timeline_of(resolve)
    assert timeline.marker(REC + 2, note="a red cube", duration=5)  # five frames of the clip
    assert timeline.marker(REC + 9, note="a blue ball")  # one frame, Resolve's default: the whole clip
    assert timeline.marker(REC + 10, name="Marker 1", note="not ours")
    assert timeline.marker(REC + 40, note="over nothing")
    items, _ = run_markers(resolve, servers["shared"], tmp_path, seed=str(2**40))
    status = items["Status"].Text
    assert status.startswith("Warning: 2 of 2 marker(s) rendered"), status
    assert f"shot.mkv at 01:00:00:12: placed on V3 at 01:00:00:12 (frame {REC + 2}), 5 frames" in status
    assert f"shot.mkv at 01:00:00:10: placed on V4 at 01:00:00:10 (frame {REC}), {LENGTH} frames" in status
    assert "cannot render the marker at 01:00:02:02: no clip with media under it" in status  # said, not silent
    assert spans(resolve, 3) == [(REC + 2, REC + 7, 0)] and spans(resolve, 4) == [(REC, REC + LENGTH, 0)]
    assert last_settings(servers["shared"])["seed"] == 2**40
    first, whole = (placed_items(resolve, t)[0].GetMediaPoolItem().GetClipProperty("File Path") for t in (3, 4))
    assert_background_is_source(first, media, OFFSET + 2, 5, matte_first=SLIP + 2)
    assert_background_is_source(whole, media, OFFSET, LENGTH, matte_first=SLIP)
    recorded = {k: json.loads(v["customData"])["kvlock"] for k, v in timeline.GetMarkers().items() if v["customData"]}
    assert sorted(r["result"] for r in recorded.values()) == sorted([first, whole])
    jobs = len(servers["shared"].store.list(limit=1000))

    items, _ = run_markers(resolve, servers["shared"], tmp_path, seed=str(2**40))
    assert items["Status"].Text.startswith("Error: no KV-Lock marker left to render; already rendered: shot.mkv")
    assert len(servers["shared"].store.list(limit=1000)) == jobs and len(placed_items(resolve, 3)) == 1


def test_markers_of_several_takes_are_placed_as_a_single_edit_s_takes(tmp_path, servers, media):
    """Each marker's takes in its placed clip's Take Selector, take 1 shown — what a single edit does."""
    resolve = make_resolve(media, "21", studio=True)
    timeline_of(resolve).marker(REC + 2, note="a red cube", duration=5)
    items, _ = run_markers(resolve, servers["shared"], tmp_path, takes=2)
    status = items["Status"].Text
    assert status.startswith("Done: 1 of 1 marker(s) rendered"), status
    assert "takes 1–2 in its Take Selector, take 1 shown" in status
    (placed,) = placed_items(resolve, 3)
    assert (placed.GetStart(), placed.GetEnd(), placed.GetTakesCount(), placed.GetSelectedTakeIndex()) == (
        REC + 2, REC + 7, 2, 1)  # fmt: skip
    takes = [placed.GetTakeByIndex(i)["mediaPoolItem"].GetClipProperty("File Path") for i in (1, 2)]
    assert [t.rsplit(".", 2)[-2:] for t in takes] == [["take1", "mkv"], ["take2", "mkv"]]
    for take in takes:
        assert_background_is_source(take, media, OFFSET + 2, 5, matte_first=SLIP + 2)
    items, _ = run_markers(resolve, servers["shared"], tmp_path, takes=2)
    assert items["Status"].Text.startswith("Error: no KV-Lock marker left to render"), items["Status"].Text
    Path(takes[1]).unlink()  # a take gone: the marker is not done any more
    items, _ = run_markers(resolve, servers["shared"], tmp_path, takes=2)
    assert items["Status"].Text.startswith("Done: 1 of 1 marker(s) rendered"), items["Status"].Text
    assert Path(takes[1]).exists()


def test_cancel_stops_every_job_of_the_batch(tmp_path, servers, media):
    resolve = make_resolve(media, "21", studio=True)
    timeline_of(resolve).marker(REC + 2, note="a red cube", duration=5)
    timeline_of(resolve).marker(REC + 8, note="a blue ball", duration=3)
    before = set(states(servers["shared"]))
    at = r"marker 1/2 \(shot\.mkv at 01:00:00:12\): step \d+/\d+, σ² \S+(, ETA \d+ s)? \(\d+%\)$"  # and the share
    items, seen = run_markers(resolve, servers["shared"], tmp_path, steps=300, cancel_at=at)
    assert items["Status"].Text == "Cancelled", items["Status"].Text
    assert seen[-1] == "cancelling…"
    ours = {job: state for job, state in states(servers["shared"]).items() if job not in before}
    assert len(ours) == 2 and set(ours.values()) == {"cancelled"}  # the queued one too
    assert placed_items(resolve, 3) == [] and not list(tmp_path.rglob("*.mkv"))


def test_the_page_renders_the_markers_of_a_drop_frame_timeline(tmp_path, servers, media):
    resolve = make_resolve(media, "20", drop=True)
    timeline_of(resolve).marker(DF_REC + 2, note="a red cube", duration=6)  # across 01:01:00;00
    server = servers["shared"]
    form = {"steps": "3", "output_dir": str(tmp_path), "matte": "above"}
    log, _ = run_page(resolve, [
        lambda call: call("render_markers", {"address": server.address, "token": server.token, "form": form}),
        wait_until_done,
        lambda call: call("close", {}),
    ])  # fmt: skip
    started, done, _ = log
    assert started["status"].startswith("Rendering 1 KV-Lock marker(s): shot-2997.mkv at 01:00:59;27")
    assert done["status"] == (f"Done: 1 of 1 marker(s) rendered; shot-2997.mkv at 01:00:59;27: placed on V3 at "
                              f"01:00:59;27 (frame {DF_REC + 2}), 6 frames"), done["status"]  # fmt: skip
    assert spans(resolve, 3) == [(DF_REC + 2, DF_REC + 8, 0)]


@pytest.mark.parametrize("reading", ["offset", "absolute"])
def test_marker_positions_are_told_apart_at_run_time(media, reading):
    resolve = make_resolve(media, "21", marker_frames=reading)
    timeline = timeline_of(resolve)
    timeline.marker(REC + 3, name="KV-Lock: a hat", duration=4)
    markers = host_markers.kvlock_markers(timeline, "")
    ((marked),) = markers.shots
    assert (marked.shot.record_start, marked.shot.source_start, marked.shot.frames) == (REC + 3, OFFSET + 3, 4)
    assert (marked.prompt, markers.notes) == ("a hat", [])
    timeline.marker(REC - 50, note="off the clips")  # lies on no clip: reported alone, the other still renders
    markers = host_markers.kvlock_markers(timeline, "")
    assert len(markers.shots) == 1 and markers.problems == [
        "the marker at 00:59:58:08: no clip with media under it: move the marker over the clip to edit"]  # fmt: skip
    timeline.DeleteMarkerAtFrame(timeline.marker_id(REC + 3))
    with pytest.raises(host.HostError, match="lie on no clip with media under either reading"):
        host_markers.kvlock_markers(timeline, "")


def test_where_both_readings_find_clips_the_offset_reading_is_taken_and_said(media):
    resolve = make_resolve(media, "21", matte_above=False)
    timeline = fr.Timeline(resolve.api, "short start", 10, Fraction(24), tracks=1)  # starts at frame 10
    resolve.manager.project.timeline = timeline
    timeline.put(1, fr.MediaPoolItem(resolve.api, str(media["folder"] / "shot.mkv")), 10, 40, 0)
    timeline.AddMarker(15, "Blue", "KV-Lock", "a cube", 3)  # offset 15 → frame 25; absolute → frame 15
    markers = host_markers.kvlock_markers(timeline, "")
    assert markers.shots[0].shot.record_start == 25 and "read as offsets" in markers.notes[0]


def test_the_fake_keeps_markers_as_the_readme_shows_them(media):
    resolve = make_resolve(media, "19.1")
    timeline = timeline_of(resolve)
    assert timeline.marker(REC, note="x", duration=2) and not timeline.marker(REC, note="again")  # one per frame
    ((key, info),) = timeline.GetMarkers().items()
    assert isinstance(key, float) and info == {"color": "Blue", "duration": 2.0, "note": "x", "name": "KV-Lock",
                                               "customData": ""}  # fmt: skip
    assert timeline.UpdateMarkerCustomData(key, "data") and timeline.GetMarkerCustomData(key) == "data"
    assert timeline.Export("/dev/null", resolve.EXPORT_EDL, resolve.EXPORT_NONE) is False  # only OTIO is faked
    assert resolve.manager.project.media_pool.ImportTimelineFromFile("cut.otio") is None  # OTIO import from 20


@pytest.mark.parametrize("reading", ["offset", "absolute"])
def test_a_cut_goes_out_through_otio_through_kvlock_batch_and_back_in(tmp_path, servers, media, reading):
    """Resolve exports its timeline (markers and all) as OTIO, ``kvlock batch`` renders the markers, and Resolve
    imports the result: the new timeline holds the shot, its matte and the result on a track above, at the
    marker's record frames."""
    resolve = make_resolve(media, "21", studio=True, marker_frames=reading)
    timeline = timeline_of(resolve)
    timeline.marker(REC + 2, note="a red cube", duration=5)
    cut, out = tmp_path / "cut.otio", tmp_path / "cut.kvlock.otio"
    assert timeline.Export(str(cut), resolve.EXPORT_OTIO, resolve.EXPORT_NONE)
    server = servers["shared"]
    code = kvlock_main(["batch", str(cut), "--out", str(out), "--server", server.address, "--token", server.token,
                        "--steps", "3"])  # fmt: skip
    assert code == 0
    pool = resolve.manager.project.media_pool
    back = pool.ImportTimelineFromFile(str(out), {"timelineName": "cut with KV-Lock"})
    assert back is not None and back.GetName() == "cut with KV-Lock" and back.GetTrackCount("video") == 3
    assert back.GetStartFrame() == timeline.GetStartFrame()
    assert [(i.GetStart(), i.GetEnd(), i.GetLeftOffset()) for i in back.items(1)] == [(REC, REC + LENGTH, OFFSET)]
    assert [(i.GetStart(), i.GetEnd(), i.GetLeftOffset()) for i in back.items(2)] == [(REC, REC + LENGTH, SLIP)]
    (result,) = back.items(3)
    assert (result.GetStart(), result.GetEnd(), result.GetLeftOffset()) == (REC + 2, REC + 7, 0)
    path = result.GetMediaPoolItem().GetClipProperty("File Path")
    assert path.startswith(str(tmp_path / "cut.kvlock"))
    assert_background_is_source(path, media, OFFSET + 2, 5, matte_first=SLIP + 2)
    assert [m["note"] for m in back.GetMarkers().values()] == ["a red cube"]  # the markers come back too

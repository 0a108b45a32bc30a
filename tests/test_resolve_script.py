"""The Resolve menu script against the fake Resolve (tests/fake_resolve.py) and a live server on loopback
with the tiny model: the dialog is driven through its buttons and timer, as an editor would."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from kvlock.compositing import feather_matte
from kvlock.media.decode import probe, read_frames
from kvlock.media.encode import write_video
from kvlock_resolve import dialog, host
from kvlock_resolve.controller import Controller

from . import fake_resolve as fr
from .media_helpers import unique_frames
from .server_helpers import start

SIZE, TC = 96, 86400  # 01:00:00:00 at 24 fps: timeline frames are absolute
REC, LENGTH, OFFSET = TC + 10, 12, 4  # the clip sits at record frame TC+10, 12 frames, trimmed 4 at the head


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resolve-media")
    frames = unique_frames(20, SIZE, SIZE, seed=5)
    matte = np.zeros((20, SIZE, SIZE, 3), np.uint8)
    matte[:, 30:66, 26:62] = 255
    write_video(folder / "shot.mkv", frames, Fraction(24))
    write_video(folder / "matte.mkv", matte, Fraction(24))
    return {"folder": folder, "frames": frames, "matte": matte[..., 0]}


@pytest.fixture(scope="module")
def servers(tmp_path_factory, media):
    """One server that may read the media folder (path mode), one that may not (upload)."""
    shared = start(tmp_path_factory.mktemp("resolve-shared"), preload=["tiny"], media_roots=[str(media["folder"])])
    private = start(tmp_path_factory.mktemp("resolve-private"), preload=["tiny"])
    yield {"shared": shared, "private": private}
    shared.stop(grace=0)
    private.stop(grace=0)


def make_resolve(media, studio: bool = False, matte_above: bool = True, rate: Fraction = Fraction(24)) -> fr.Resolve:
    resolve = fr.Resolve(studio=studio)
    project = fr.Project("show")
    resolve.manager.project = project
    timeline = fr.Timeline("edit", TC, Fraction(24), tracks=2)
    project.timeline = timeline
    shot = fr.MediaPoolItem(str(media["folder"] / "shot.mkv"), fps=rate)
    timeline.put(1, shot, REC, REC + LENGTH, OFFSET)
    if matte_above:
        timeline.put(2, fr.MediaPoolItem(str(media["folder"] / "matte.mkv")), REC, REC + LENGTH, OFFSET)
    timeline.playhead = REC + 3
    return resolve


def run_dialog(resolve, server, fields: dict, out: Path, token: str | None = None, cancel_after_steps: int = 0):
    """Open the dialog, fill it, press Render, and let its timer run until the job ends."""
    fusion = fr.Fusion()
    seen: list[str] = []

    def fill(d: fr.Dispatcher) -> None:
        items = d.windows[-1].GetItems()
        items["Address"].Text, items["Token"].Text = server.address, server.token if token is None else token
        items["Prompt"].Text, items["Output"].Text = "a red cube", str(out)
        items["Steps"].Value = fields.pop("steps", 3)
        for key, value in fields.items():
            setattr(items[key[0]], key[1], value)

    def render(d: fr.Dispatcher) -> None:
        d.click("Render")

    def wait(d: fr.Dispatcher) -> None:
        deadline = time.monotonic() + 300
        cancelled = False
        while d.tick_timers():
            seen.append(d.windows[-1].GetItems()["Progress"].Text)
            if cancel_after_steps and not cancelled and seen[-1].startswith(f"step {cancel_after_steps}/"):
                d.click("Cancel")
                cancelled = True
            assert time.monotonic() < deadline, "the job did not end"
            time.sleep(0.05)

    bmd = fr.Bmd([fill, render, wait, lambda d: d.windows[-1].On.KVLock.events["Close"]({})])
    dialog.run(resolve, fusion, bmd)
    items = bmd.dispatchers[0].windows[0].GetItems()
    return items, seen


def placed_items(resolve, track: int):
    return resolve.manager.project.timeline.GetItemListInTrack("video", track)


def assert_background_is_source(result: Path, media, first: int, count: int) -> None:
    edited = read_frames(probe(result), 0, count)[..., :3]
    source = media["frames"][first : first + count]
    outside = np.stack([feather_matte(m / 255.0, 4) for m in media["matte"][first : first + count]]) == 0
    assert edited.shape == source.shape
    assert np.array_equal(edited[outside], source[outside])
    assert not np.array_equal(edited[~outside], source[~outside])


def test_playhead_clip_with_matte_above_lands_on_a_free_track(tmp_path, servers, media):
    resolve = make_resolve(media)
    items, seen = run_dialog(resolve, servers["shared"], {}, tmp_path)
    assert items["Product"].Text == "DaVinci Resolve (Free)" and resolve.modals == []
    assert items["Status"].Text == f"Done: placed on V3 at frame {REC}", items["Status"].Text
    assert any(s.startswith("step ") and "σ²" in s for s in seen)
    (placed,) = placed_items(resolve, 3)
    assert (placed.GetStart(), placed.GetEnd(), placed.GetLeftOffset()) == (REC, REC + LENGTH, 0)
    kvlock_bin = resolve.manager.project.media_pool.root.GetSubFolderList()
    assert [f.GetName() for f in kvlock_bin] == ["KV-Lock"] and len(kvlock_bin[0].GetClipList()) == 1
    result = tmp_path / "shot.kvlock.mkv"
    assert placed.GetMediaPoolItem().GetClipProperty("File Path") == str(result)
    assert_background_is_source(result, media, OFFSET, LENGTH)


def test_in_out_marks_choose_the_range_and_upload_when_the_server_cannot_read_the_disk(tmp_path, servers, media):
    resolve = make_resolve(media)
    resolve.manager.project.timeline.mark(REC + 2, REC + 7)  # inclusive Out: 6 frames
    controller_jobs = []
    original = Controller.start
    Controller.start = lambda self, job: (controller_jobs.append(job), original(self, job))[1]
    try:
        items, _ = run_dialog(resolve, servers["private"], {}, tmp_path)
    finally:
        Controller.start = original
    assert items["Status"].Text == f"Done: placed on V3 at frame {REC + 2}", items["Status"].Text
    assert controller_jobs[0].render.snapshot().uploaded  # the server refused the path: frames were sent
    (placed,) = placed_items(resolve, 3)
    assert (placed.GetStart(), placed.GetEnd()) == (REC + 2, REC + 8)
    assert_background_is_source(tmp_path / "shot.kvlock.mkv", media, OFFSET + 2, 6)


def test_clip_matte_of_the_source_clip(tmp_path, servers, media):
    resolve = make_resolve(media, studio=True, matte_above=False)
    pool = resolve.manager.project.media_pool
    source_item = placed_items(resolve, 1)[0].GetMediaPoolItem()
    pool.mattes[source_item.GetUniqueId()] = [str(media["folder"] / "matte.mkv")]
    items, _ = run_dialog(resolve, servers["shared"], {("Matte", "CurrentIndex"): 1}, tmp_path)
    assert items["Product"].Text == "DaVinci Resolve Studio (Studio)"
    assert items["Status"].Text == f"Done: placed on V2 at frame {REC}", items["Status"].Text  # V2 is free here
    assert_background_is_source(tmp_path / "shot.kvlock.mkv", media, OFFSET, LENGTH)


def test_matte_file_chosen_in_the_dialog(tmp_path, servers, media):
    resolve = make_resolve(media, matte_above=False)
    fields = {("Matte", "CurrentIndex"): 2, ("MatteFile", "Text"): str(media["folder"] / "matte.mkv")}
    items, _ = run_dialog(resolve, servers["shared"], fields, tmp_path)
    assert items["Status"].Text == f"Done: placed on V2 at frame {REC}", items["Status"].Text
    assert_background_is_source(tmp_path / "shot.kvlock.mkv", media, OFFSET, LENGTH)


def test_busy_tracks_get_a_new_track_and_a_dropped_append_is_reported(tmp_path, servers, media):
    resolve = make_resolve(media)
    timeline = resolve.manager.project.timeline
    timeline.put(3, fr.MediaPoolItem(str(media["folder"] / "matte.mkv")), REC + 5, REC + 20)  # overlaps on V3
    (tmp_path / "a").mkdir()
    items, _ = run_dialog(resolve, servers["shared"], {}, tmp_path / "a")
    assert items["Status"].Text == f"Done: placed on V4 at frame {REC}" and timeline.GetTrackCount("video") == 4
    # the fake drops overlapping appends, as Resolve does: an append onto V3 now would vanish
    blocked = timeline.append(
        placed_items(resolve, 4)[0].GetMediaPoolItem(),
        {"startFrame": 0, "endFrame": 3, "trackIndex": 3, "recordFrame": REC + 6},
    )
    assert blocked.GetUniqueId() not in {i.GetUniqueId() for i in placed_items(resolve, 3)}
    resolve = make_resolve(media)
    resolve.manager.project.media_pool.drop_appends = True
    (tmp_path / "b").mkdir()
    items, _ = run_dialog(resolve, servers["shared"], {}, tmp_path / "b")
    assert items["Status"].Text.startswith("Warning: Resolve did not place the result on V3")
    assert "KV-Lock bin" in items["Status"].Text and placed_items(resolve, 3) == []


def test_a_failed_job_shows_the_servers_reason(tmp_path, servers, media, monkeypatch):
    import torch

    class ExhaustedEditor:
        def edit(self, *args, **kwargs):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(servers["shared"].executor, "editor", lambda model, slot=0: ExhaustedEditor())
    resolve = make_resolve(media)
    items, _ = run_dialog(resolve, servers["shared"], {}, tmp_path)
    assert items["Status"].Text.startswith("Error: the job failed:") and "ran out of memory" in items["Status"].Text
    assert placed_items(resolve, 3) == [] and list(tmp_path.iterdir()) == []


def test_cancel_mid_job(tmp_path, servers, media):
    resolve = make_resolve(media)
    items, _ = run_dialog(resolve, servers["shared"], {"steps": 12}, tmp_path, cancel_after_steps=2)
    assert items["Status"].Text == "Cancelled"
    assert placed_items(resolve, 3) == [] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("no_project", "no project is open"),
        ("no_timeline", "no current timeline"),
        ("no_clip", "no clip under the playhead"),
        ("mixed_rates", "25 fps on a 24 fps timeline"),
        ("server_down", "KV-Lock server is not running at 127.0.0.1:9"),
        ("bad_token", "the server refused the token"),
        ("short_matte", "matte length mismatch"),
    ],
)
def test_problems_are_explained_in_the_dialog(setup, expected, tmp_path, servers, media):
    resolve = make_resolve(media, rate=Fraction(25) if setup == "mixed_rates" else Fraction(24))
    server, token = servers["shared"], None
    if setup == "no_project":
        resolve.manager.project = None
    elif setup == "no_timeline":
        resolve.manager.project.timeline = None
    elif setup == "no_clip":
        resolve.manager.project.timeline.playhead = REC + 100
    elif setup == "server_down":
        server = type("Down", (), {"address": "127.0.0.1:9", "token": "x"})()
    elif setup == "bad_token":
        token = "wrong"
    elif setup == "short_matte":
        timeline = resolve.manager.project.timeline
        timeline._tracks[1] = []
        timeline.put(2, fr.MediaPoolItem(str(media["folder"] / "matte.mkv")), REC + 2, REC + 6)
    items, _ = run_dialog(resolve, server, {}, tmp_path, token=token)
    assert items["Status"].Text.startswith("Error: ") and expected in items["Status"].Text, items["Status"].Text
    assert list(tmp_path.iterdir()) == []


def test_the_fake_keeps_resolves_quirks():
    """hasattr is always true on Resolve objects; dir tells the truth; Studio-only calls on Free open a modal."""
    resolve = fr.Resolve()
    assert hasattr(resolve, "NoSuchCall") and "NoSuchCall" not in dir(resolve) and "GetProductName" in dir(resolve)
    assert not host.has(resolve, "NoSuchCall") and host.has(resolve, "GetProductName")
    resolve.ExportCurrentFrameAsStill("/tmp/x.png")
    assert resolve.modals == ["ExportCurrentFrameAsStill"]
    assert host.parse_rate("23.976") == Fraction(24000, 1001) and host.parse_rate("25") == 25

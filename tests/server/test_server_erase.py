"""An erase through the real bridge and server on loopback: no prompt, the result and the clean plate (its
seen/invented map as alpha) fetched and placed beside each other."""

from __future__ import annotations

import numpy as np
import pytest

from kvlock.editing.compositing import feather_matte
from kvlock.media.decode import probe, read_frames
from kvlock.world.panning import panning_clip
from kvlock_bridge import ArrayClip, Params, render

from ..support.server_helpers import client, start


@pytest.fixture()
def app(tmp_path):
    server = start(tmp_path / "state")
    yield server
    server.stop(grace=0)


def test_an_erase_comes_back_with_its_clean_plate(app, tmp_path):
    clip = panning_clip(frames=9, height=48, width=64, radius=7.0, subject_start=(18.0, 24.0))
    matte = (clip.matte * 255).astype(np.uint8)
    params = Params("", settings={"steps": 2, "erase": True}, plate=True)
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "erased.mkv"
    done = render(client(app), ArrayClip("Source", clip.frames), ArrayClip("Matte", matte), params, out)
    assert done.plate == out.with_name("erased.plate.mkv") and done.plate.is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == [
        "erased.mkv",
        "erased.plate.mkv",
        "erased.trace.json",
        "erased.trace.png",
    ]
    erased = read_frames(probe(out), 0, 9)
    outside = np.stack([feather_matte(m, 4) for m in clip.matte]) == 0
    assert np.array_equal(erased[outside], clip.frames[outside])
    plate = read_frames(probe(done.plate), 0, 9)
    hole = clip.matte > 0
    seen = hole & (plate[..., 3] == 255)
    assert seen.sum() > 0.9 * hole.sum() and (plate[..., 3][~hole] == 255).all()
    assert np.array_equal(erased[seen], plate[seen][..., :3])
    trace = done.trace_data()
    assert trace["settings"]["erase"] and trace["plate"]["seen_fraction"] > 0.9


def test_an_erase_of_two_takes_comes_back_with_both_and_one_clean_plate(app, tmp_path):
    """The plate is the source's, the same for every take: the server writes it once, with take 1, and the
    bridge places it as NAME.plate.mkv beside the takes."""
    clip = panning_clip(frames=9, height=48, width=64, radius=7.0, subject_start=(18.0, 24.0))
    matte = (clip.matte * 255).astype(np.uint8)
    params = Params("", settings={"steps": 2, "erase": True, "takes": 2}, plate=True)
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "erased.mkv"
    done = render(client(app), ArrayClip("Source", clip.frames), ArrayClip("Matte", matte), params, out)
    assert done.plate == out.with_name("erased.plate.mkv") and done.plate.is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        ["erased.plate.mkv", *(f"erased.take{k}{s}" for k in (1, 2) for s in (".mkv", ".trace.json", ".trace.png"))]
    )
    fetched = client(app).fetch_takes(done.job_id, tmp_path / "again")
    assert "plate" in fetched[1] and "plate" not in fetched[2]
    plate = read_frames(probe(done.plate), 0, 9)
    seen = (clip.matte > 0) & (plate[..., 3] == 255)
    outside = np.stack([feather_matte(m, 4) for m in clip.matte]) == 0
    erased = [read_frames(probe(take.output), 0, 9) for take in done.takes]
    for take in erased:
        assert np.array_equal(take[outside], clip.frames[outside])
        assert np.array_equal(take[seen], plate[seen][..., :3])
    assert not np.array_equal(erased[0], erased[1])
    assert [t.trace_data()["plate"]["frames"] for t in done.takes] == [9, 9]

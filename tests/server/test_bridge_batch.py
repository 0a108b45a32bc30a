"""The bridge's queue (``kvlock_bridge.batch``) against a real server on loopback: every job sent before any is
followed, a run again adopts what the server holds and retries what it gave up on, and a cancel reaches
every job of the queue."""

from __future__ import annotations

import threading
from fractions import Fraction

import numpy as np
import pytest

from kvlock.media.encode import write_video
from kvlock_bridge import FileClip, Params
from kvlock_bridge.batch import Advanced, Failed, Finished, Queued, QueuedRender, run_queue
from kvlock_bridge.local import decode_clips
from kvlock_bridge.render import outputs

from ..support.media_helpers import unique_frames
from ..support.server_helpers import client, start, states


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("queue-media")
    write_video(folder / "shot.mkv", unique_frames(12, 48, 48, seed=4), Fraction(24))
    matte = np.zeros((12, 48, 48, 3), np.uint8)
    matte[:, 10:30, 10:30] = 255
    write_video(folder / "matte.mkv", matte, Fraction(24))
    return folder


def renders(media, out, steps: int, fallback: bool = False) -> list[QueuedRender]:
    made = []
    for n, (first, end) in enumerate(((0, 5), (5, 10))):
        source, matte = (
            FileClip("Source", str(media / "shot.mkv"), first, end),
            FileClip("Matte", str(media / "matte.mkv")),
        )
        files = outputs(out / f"shot{n}.mkv", "ffv1", False)
        back = (lambda s=source, m=matte: decode_clips(s, m)) if fallback else None
        made.append(QueuedRender(source, matte, Params("a red cube", settings={"steps": steps}), files, f"q-{n}", back))
    return made


def test_a_cancelled_queue_is_retried_under_new_attempts_and_a_finished_one_adopted(tmp_path, media):
    server = start(tmp_path / "state", preload=["tiny"], media_roots=[str(media)])
    try:
        seen, cancel = [], threading.Event()

        def emit(event) -> None:
            seen.append(event)
            if isinstance(event, Advanced) and event.progress.denoising is not None:
                cancel.set()

        with client(server) as c:
            run_queue(c, renders(media, tmp_path, steps=300), emit, cancel)
        queued = [e for e in seen if isinstance(e, Queued)]
        assert [(e.index, e.job_id, e.adopted) for e in queued] == [(0, "q-0", False), (1, "q-1", False)]
        assert seen.index(queued[1]) < next(i for i, e in enumerate(seen) if isinstance(e, Advanced))  # all sent first
        assert {(e.index, e.cancelled) for e in seen if isinstance(e, Failed)} == {(0, True), (1, True)}
        assert states(server) == {"q-0": "cancelled", "q-1": "cancelled"}
        assert not list(tmp_path.glob("shot*"))

        again: list = []
        with client(server) as c:
            run_queue(c, renders(media, tmp_path, steps=2), again.append)  # other settings, the same ids
        assert [e.job_id for e in again if isinstance(e, Queued)] == ["q-0.r2", "q-1.r2"]
        assert [e.index for e in again if isinstance(e, Finished)] == [0, 1]
        assert (tmp_path / "shot0.mkv").exists() and (tmp_path / "shot1.trace.json").exists()

        third: list = []
        with client(server) as c:
            run_queue(c, renders(media, tmp_path, steps=2), third.append)
        assert [(e.job_id, e.adopted) for e in third if isinstance(e, Queued)] == [("q-0.r2", True), ("q-1.r2", True)]
        assert [e.index for e in third if isinstance(e, Finished)] == [0, 1]  # fetched again, from the same jobs
        assert len(states(server)) == 4 and not [e for e in third if isinstance(e, Failed)]  # nothing new
    finally:
        server.stop(grace=0)


def test_a_path_the_server_refuses_goes_as_frames(tmp_path, media):
    server = start(tmp_path / "state", preload=["tiny"])  # no media roots: it reads none of our files
    try:
        seen: list = []
        with client(server) as c:
            run_queue(c, renders(media, tmp_path, steps=2, fallback=True)[:1], seen.append)
        (queued,) = [e for e in seen if isinstance(e, Queued)]
        assert queued.uploaded and isinstance(seen[-1], Finished)
        assert server.store.get("q-0").spec.source.kind == "inline"
        seen.clear()
        with client(server) as c:
            run_queue(c, renders(media, tmp_path / "none", steps=2)[1:], seen.append)  # no fallback given
        (failed,) = [e for e in seen if isinstance(e, Failed)]
        assert failed.job_id is None and failed.reason.endswith("upload the frames instead")  # said, not hidden
    finally:
        server.stop(grace=0)

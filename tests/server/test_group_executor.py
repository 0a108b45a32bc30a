"""``kvlock serve --gpus``: one server drives a process group whose ranks share every job, here two CPU
ranks (gloo) started the way the GPU ranks are (from a fork server), behind the real gRPC service on loopback.

The group's result equals the single-device edit of the same job; a rank killed mid-job loses no job (it
is queued again and a fresh group runs it); a cancel stops every rank at the same step.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading

import numpy as np
import pytest

from kvlock.errors import UnsupportedDeviceError
from kvlock.media.decode import probe, read_frames
from kvlock.world.demo_clip import demo_clip
from kvlock_bridge import ArrayClip, Params
from kvlock_cli.serve import gpu_list
from kvlock_server.app import ConfigError
from kvlock_server.jobs.media import build_request
from kvlock_server.jobs.media_roots import MediaRoots

from ..support.server_helpers import client, start, states, step_of, total_of, wait_for

# 5 frames at 32×64 on tiny-random: 2 latent frames of 2×4 tokens, shared equally by the 2 ranks
SIZE = {"height": 32, "width": 64}


@pytest.fixture(scope="module")
def clip():
    return demo_clip(frames=5, height=32, width=64, seed=2)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    server = start(tmp_path_factory.mktemp("state"), group=["cpu", "cpu"], max_attempts=2, preload=["tiny-random"])
    yield server
    server.stop(grace=0)


def submit(app, clip, job_id: str, steps: int, **settings):
    frames, matte = clip
    p = Params("a red ball", model="tiny-random", settings={"steps": steps, "seed": 5, **SIZE, **settings})
    return client(app).submit(ArrayClip("Source", frames), ArrayClip("Matte", matte), p, job_id=job_id)


def result_frames(app, job_id: str) -> np.ndarray:
    return read_frames(probe(app.store.folder(job_id) / "result.mkv"), 0, 5)


def assert_single_device_result(app, job_id: str, editor) -> None:
    """The group's result file against the in-process editor's edit of the very same job."""
    request, _, _ = build_request(app.store.get(job_id).spec, app.store.folder(job_id), MediaRoots(()))  # inline
    alone = editor.edit(request).frames
    assert np.abs(result_frames(app, job_id).astype(np.int16) - alone.astype(np.int16)).max() <= 1


def test_the_group_runs_a_job_with_progress_and_gives_the_single_device_result(app, clip, editor):
    submit(app, clip, "first", steps=3)
    updates = []
    watcher = threading.Thread(target=lambda: updates.extend(client(app).watch("first", previews=True)))
    watcher.start()
    wait_for(lambda: states(app)["first"] == "succeeded", timeout=300)
    watcher.join(timeout=30)
    running = [u for u in updates if u.state == "running" and total_of(u) == 3]
    assert running and any("running on the group of 2" in u.message for u in running)
    assert any(u.denoising.preview_png[:4] == b"\x89PNG" for u in running)
    assert_single_device_result(app, "first", editor)
    trace = (app.store.folder("first") / "trace.json").read_text()
    assert "ulysses sequence parallel over 2 ranks" in trace and '"group": [' in trace


def test_a_rank_killed_mid_job_loses_no_job(app, clip, editor):
    wait_for(lambda: app.executor.pids(), timeout=60)
    submit(app, clip, "victim", steps=20)
    wait_for(lambda: step_of(app.runner.status("victim")) >= 2, timeout=300)
    killed = app.executor.pids()[1]
    os.kill(killed, signal.SIGKILL)
    wait_for(lambda: states(app)["victim"] in ("succeeded", "failed"), timeout=600)
    record = app.store.get("victim")
    assert record.state.value == "succeeded" and record.attempts == 2, record.message
    assert killed not in app.executor.pids().values()  # a fresh group ran it again
    assert_single_device_result(app, "victim", editor)
    assert not list(app.store.folder("victim").glob(".*partial*"))


def test_cancel_stops_every_rank_and_the_group_runs_the_next_job(app, clip):
    submit(app, clip, "stopped", steps=200)
    wait_for(lambda: step_of(app.runner.status("stopped")) >= 1, timeout=300)
    pids = app.executor.pids()
    client(app).cancel("stopped")
    wait_for(lambda: states(app)["stopped"] == "cancelled", timeout=120)
    assert "cancelled after step" in app.store.get("stopped").message
    submit(app, clip, "after", steps=1)
    wait_for(lambda: states(app)["after"] == "succeeded", timeout=300)
    assert app.executor.pids() == pids  # the same processes: the cancel left the group whole


def test_serve_takes_a_list_of_gpus_and_refuses_what_cannot_work(tmp_path):
    assert gpu_list("0,1,2,3") == [0, 1, 2, 3]
    for bad in ("0", "0,0", "a,b", "-1,0"):
        with pytest.raises(argparse.ArgumentTypeError, match="--gpus"):
            gpu_list(bad)
    with pytest.raises(ConfigError, match="does not combine with --executor ray"):
        start(tmp_path, group=["cpu", "cpu"], executor="ray")
    with pytest.raises(UnsupportedDeviceError, match="no CUDA GPU"):
        start(tmp_path, group=["cuda:0", "cuda:1"])

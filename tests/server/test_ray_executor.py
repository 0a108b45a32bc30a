"""The server on a real local Ray cluster (head + two worker nodes), driven over gRPC by the real bridge.

Workers are CPU actors with the tiny models; everything else — the job store, the queue, WatchJob,
CancelJob, killing a worker's process — is what a GPU farm does.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from kvlock.editing.compositing import feather_matte
from kvlock.media.decode import probe, read_frames
from kvlock.sampling.loop import start_index
from kvlock.world.demo_clip import demo_clip
from kvlock_bridge import ArrayClip, Client, Params, RequestRejectedError
from kvlock_server.executors.ray import RayClusterUnreachable
from kvlock_server.executors.ray_options import RayOptions
from kvlock_server.executors.ray_pool import Worker, WorkerPool, choose_worker

from ..support.ray_cluster import LocalCluster
from ..support.server_helpers import client, start, states, step_of, total_of, wait_for

KVLOCK = [str(Path(sys.executable).with_name("kvlock"))]

# -- routing, alone ---------------------------------------------------------------------------------


def worker(name: str, loaded: list[str] = (), idle: float = 0.0, sees_store: bool = True) -> Worker:
    return Worker(name, None, "free", list(loaded), sees_store, idle_since=idle)


def test_a_job_goes_to_a_free_worker_holding_its_model():
    a, b = worker("a", ["wan"], idle=1.0), worker("b", ["ltx"], idle=5.0)
    assert choose_worker([a, b], "wan", False) is a
    assert choose_worker([a, b], "ltx", False) is b


def test_an_unloaded_model_goes_to_an_empty_worker_before_evicting_one():
    a, b, c = worker("a", ["wan"]), worker("b", []), worker("c", ["ltx"])
    assert choose_worker([a, b, c], "cog", False, [a, b, c]) is b


def test_eviction_spares_the_only_copy_of_a_model_then_takes_the_longest_idle():
    a, b, c = worker("a", ["wan"], idle=1.0), worker("b", ["wan"], idle=9.0), worker("c", ["ltx"], idle=0.5)
    busy = worker("d", ["ltx"])
    assert choose_worker([a, b], "cog", False, [a, b, c]) is a  # both hold a spare copy: longest idle goes
    assert choose_worker([a, c], "cog", False, [a, b, c]) is a  # c idled longer but holds the only ltx
    assert choose_worker([a, c], "cog", False, [a, b, c, busy]) is c  # ltx lives on elsewhere: c idled longest


def test_a_large_job_waits_for_a_worker_that_sees_the_store():
    blind, sighted = worker("a", ["wan"], sees_store=False), worker("b", [], sees_store=True)
    assert choose_worker([blind, sighted], "wan", needs_store=True) is sighted
    assert choose_worker([blind], "wan", needs_store=True) is None


# -- a real cluster ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    farm = LocalCluster(tmp_path_factory.mktemp("ray"), workers=2, cpus=1)
    yield farm.address
    farm.stop()


def test_an_unreachable_head_is_reported_in_seconds(cluster, tmp_path):
    # ``cluster`` only for its environment: Ray reads its auth mode once per process, so nothing here may
    # touch Ray before the cluster's token settings are in place
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"  # nothing listens once the socket closes
    began = time.monotonic()
    with pytest.raises(RayClusterUnreachable, match="ray start --head"):
        start(tmp_path / "state", executor="ray", ray=RayOptions(address=closed))
    assert time.monotonic() - began < 30


def test_waiting_for_workers_counts_one_the_watcher_has_heard_from_but_not_yet_marked_free(cluster):
    """The watcher drops a worker's start request a moment before marking it free; a wait that ended in
    between returned too few workers (a preload then skipped one). ``cluster`` only for its environment:
    the pool's watcher imports Ray, which reads its auth mode once per process."""
    pool = WorkerPool(spawn=lambda name: None, count=0)
    try:
        up, coming = Worker("worker-1", None, "free"), Worker("worker-2", None, "starting")
        with pool._cond:
            pool._workers.update({up.name: up, coming.name: coming})

        def come_up() -> None:
            time.sleep(0.5)
            with pool._cond:
                coming.state = "free"
                pool._cond.notify_all()

        threading.Thread(target=come_up).start()
        assert [w.name for w in pool.wait_ready(30)] == ["worker-1", "worker-2"]
    finally:
        with pool._cond:
            pool._workers.clear()  # no actors behind them: closing must not call Ray (it would start one here)
        pool.close()


@pytest.fixture(scope="module")
def clip():
    return demo_clip(frames=9, height=48, width=64)


def params(steps: int) -> Params:
    return Params("a red ball", settings={"steps": steps, "seed": 7})


def submit(app, clip, job_id: str, steps: int, model: str = "tiny"):
    frames, matte = clip
    p = Params("a red ball", settings={"steps": steps, "seed": 7}, model=model)
    return client(app).submit(ArrayClip("Source", frames), ArrayClip("Matte", matte), p, job_id=job_id)


def ran_on(app, job_id: str) -> dict:
    return json.loads((app.store.folder(job_id) / "trace.json").read_text())["execution"]["worker"]


def result_frames(app, job_id: str) -> np.ndarray:
    return read_frames(probe(app.store.folder(job_id) / "result.mkv"), 0, 9)


def busy_pid(app) -> int:
    busy = wait_for(lambda: [w for w in app.executor.pool.workers() if w.state == "busy"])
    return busy[0].pid


def all_free(app, count: int = 2) -> bool:
    return len([w for w in app.executor.pool.workers() if w.state == "free"]) == count


@pytest.fixture(scope="class")
def app(cluster, tmp_path_factory):
    server = start(
        tmp_path_factory.mktemp("state"), executor="ray", ray=RayOptions(address=cluster, workers=2), max_attempts=2
    )
    server.executor.pool.wait_ready(180)
    yield server
    server.stop(grace=0)


class TestSharedStore:
    """Workers that mount the job store (here: the same disk) read the upload and write results in place."""

    def test_two_jobs_run_in_parallel_with_progress_and_previews(self, app, clip):
        submit(app, clip, "a", steps=16, model="tiny")
        submit(app, clip, "b", steps=16, model="tiny-random")
        updates = []
        watcher = threading.Thread(target=lambda: updates.extend(client(app).watch("a", previews=True)))
        watcher.start()
        wait_for(lambda: states(app)["a"] == "succeeded" and states(app)["b"] == "succeeded", timeout=300)
        watcher.join(timeout=30)
        a, b = app.store.get("a"), app.store.get("b")
        assert a.started < b.finished and b.started < a.finished  # their runs overlapped in time
        assert ran_on(app, "a")["pid"] != ran_on(app, "b")["pid"]
        runs = 16 - start_index(16, 0.8)  # the embedded model's schedule starts at strength 0.8: 13 of 16 run
        steps = [u for u in updates if u.state == "running" and total_of(u) == runs]
        assert steps and any("running on worker-" in u.message for u in steps)
        assert any(u.denoising.preview_png[:4] == b"\x89PNG" for u in steps)
        assert updates[-1].state == "succeeded"
        assert ran_on(app, "a")["sees_store"] is True

    def test_jobs_follow_the_worker_that_holds_their_model(self, app, clip):
        wait_for(lambda: all_free(app))
        for job_id, model in (("c", "tiny"), ("d", "tiny-random")):
            submit(app, clip, job_id, steps=2, model=model)
            wait_for(lambda job_id=job_id: states(app)[job_id] == "succeeded", timeout=120)
        assert ran_on(app, "c")["pid"] == ran_on(app, "a")["pid"]
        assert ran_on(app, "d")["pid"] == ran_on(app, "b")["pid"]
        assert app.executor.loaded() == {"tiny", "tiny-random"}

    def test_a_killed_worker_s_job_runs_again_elsewhere_with_the_same_result(self, app, clip):
        submit(app, clip, "reference", steps=24)
        wait_for(lambda: states(app)["reference"] == "succeeded", timeout=300)
        wait_for(lambda: all_free(app))
        submit(app, clip, "victim", steps=24)
        wait_for(lambda: step_of(app.runner.status("victim")) >= 2, timeout=120)
        killed = busy_pid(app)
        os.kill(killed, signal.SIGKILL)
        wait_for(lambda: states(app)["victim"] == "succeeded", timeout=300)
        record = app.store.get("victim")
        assert record.attempts == 2
        assert ran_on(app, "victim")["pid"] != killed
        assert np.array_equal(result_frames(app, "victim"), result_frames(app, "reference"))
        assert not list(app.store.folder("victim").glob(".*partial*"))
        wait_for(lambda: all_free(app), timeout=180)  # the dead worker was replaced

    def test_a_job_that_keeps_killing_workers_fails_with_a_reason_and_the_server_serves_on(self, app, clip):
        wait_for(lambda: all_free(app), timeout=180)
        submit(app, clip, "deadly", steps=200)
        killed = set()
        for _ in range(2):
            wait_for(lambda: step_of(app.runner.status("deadly")) >= 1, timeout=180)
            pid = busy_pid(app)
            killed.add(pid)
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda pid=pid: step_of(app.runner.status("deadly")) == 0 or states(app)["deadly"] != "running")
        wait_for(lambda: states(app)["deadly"] == "failed", timeout=120)
        record = app.store.get("deadly")
        assert len(killed) == 2 and record.attempts == 2
        assert "interrupted 2 times" in record.message and "died while running the job" in record.message
        submit(app, clip, "after", steps=2)
        wait_for(lambda: states(app)["after"] == "succeeded", timeout=300)

    def test_cancel_reaches_the_running_worker_between_steps(self, app, clip):
        wait_for(lambda: all_free(app), timeout=180)
        submit(app, clip, "long", steps=400)
        wait_for(lambda: step_of(app.runner.status("long")) >= 1, timeout=120)
        assert client(app).cancel("long") == "running"  # it stops at the end of the current step
        wait_for(lambda: states(app)["long"] == "cancelled", timeout=60)
        message = app.store.get("long").message
        assert message.startswith("cancelled after step") and message.endswith("of 320")  # 400 from strength 0.8
        wait_for(lambda: all_free(app), timeout=60)
        submit(app, clip, "next", steps=2)
        wait_for(lambda: states(app)["next"] == "succeeded", timeout=120)

    def test_a_worker_that_dies_while_idle_is_replaced_before_any_job_meets_it(self, app):
        wait_for(lambda: all_free(app), timeout=180)
        victim = app.executor.pool.workers()[0].pid
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: victim not in [w.pid for w in app.executor.pool.workers()], timeout=30)
        wait_for(lambda: all_free(app), timeout=180)


def test_workers_without_the_store_get_small_jobs_through_the_object_store(cluster, clip, tmp_path):
    options = RayOptions(address=cluster, workers=2, store_path=str(tmp_path / "not-mounted"), object_limit_mb=0.5)
    app = start(tmp_path / "state", executor="ray", ray=options)
    try:
        assert len(app.executor.pool.wait_ready(180)) == 2
        submit(app, clip, "small", steps=2)
        wait_for(lambda: states(app)["small"] == "succeeded", timeout=180)
        assert ran_on(app, "small")["sees_store"] is False
        frames, matte = clip
        outside = np.stack([feather_matte(m / 255.0, 4) for m in matte]) == 0  # the locked background
        assert np.array_equal(result_frames(app, "small")[outside], frames[outside])
        big_frames, big_matte = demo_clip(frames=17, height=96, width=128)  # 0.8 MB decoded
        with pytest.raises(RequestRejectedError, match="object store"):
            client(app).submit(ArrayClip("Source", big_frames), ArrayClip("Matte", big_matte), params(2), job_id="big")
        assert "big" not in states(app)
    finally:
        app.stop(grace=0)


def test_a_worker_without_the_store_sends_back_the_takes_it_finished_before_a_cancel(cluster, tmp_path):
    """Two takes of a clip of two windows run one after another; cancelled during take 2, the job keeps take 1:
    its files come back from the worker with the cancel and are fetched as the job's results."""
    options = RayOptions(address=cluster, workers=2, store_path=str(tmp_path / "not-mounted"), object_limit_mb=0.5)
    app = start(tmp_path / "state", executor="ray", ray=options)
    try:
        assert len(app.executor.pool.wait_ready(180)) == 2
        frames, matte = demo_clip(frames=25, height=48, width=64)
        settings = {"steps": 200, "seed": 7, "takes": 2, "window_frames": 17}
        p = Params("a red ball", settings=settings)
        client(app).submit(ArrayClip("Source", frames), ArrayClip("Matte", matte), p, job_id="takes")

        def on_take_two() -> bool:
            live = app.runner.live("takes")
            return live is not None and live.progress is not None and live.progress.take == 1

        wait_for(on_take_two, timeout=600)
        client(app).cancel("takes")
        wait_for(lambda: states(app)["takes"] == "cancelled", timeout=120)
        assert "take 1 of 2 was finished and kept" in app.store.get("takes").message
        fetched = client(app).fetch_takes("takes", tmp_path / "fetched")
        assert sorted(fetched) == [1] and fetched[1]["video"].name == "result.take1.mkv"
        edited = read_frames(probe(fetched[1]["video"]), 0, 25)
        outside = np.stack([feather_matte(m / 255.0, 4) for m in matte]) == 0
        assert np.array_equal(edited[outside], frames[outside])
    finally:
        app.stop(grace=0)


def test_kvlock_serve_with_the_ray_executor(cluster, clip, tmp_path):
    log = (tmp_path / "serve.log").open("w")
    command = [*KVLOCK, "serve", "--port", "0", "--state-dir", str(tmp_path / "state"), "--executor", "ray"]
    command += ["--ray-address", cluster, "--ray-workers", "2", "--preload", "tiny"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        lines = []
        while not lines or "health:" not in lines[-1]:  # the last line the server prints at start
            lines.append(proc.stdout.readline())
            assert lines[-1], f"kvlock serve exited: {(tmp_path / 'serve.log').read_text()[-3000:]}"
        address = next(line for line in lines if "listening on" in line).rsplit(" ", 1)[1].strip()
        token = next(line for line in lines if "generated a token" in line).rsplit(" ", 1)[1].strip()
        with Client(address, token) as c:
            assert {m.name for m in c.list_models() if m.loaded} == {"tiny"}  # preloaded on the workers
            frames, matte = clip
            c.submit(ArrayClip("Source", frames), ArrayClip("Matte", matte), params(2), job_id="cli")
            assert list(c.watch("cli"))[-1].state == "succeeded"
            files = c.fetch("cli", tmp_path / "fetched")
            assert json.loads(files["trace"].read_text())["execution"]["worker"]["name"].startswith("worker-")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


def test_without_an_address_the_server_starts_its_own_ray_and_joins_no_running_cluster(cluster):
    """With ``cluster`` running on this machine (started by ``ray start``, as a studio's farm would be), a
    server given no --ray-address must not become a driver of it."""
    joined = {}
    for own in ("local", None):  # the server's choice, then Ray's own default as the guard of this test
        code = (
            "import ray; from kvlock_server.executors.ray import connect; "
            f"connect(None, own={own!r}); print(ray.get_runtime_context().gcs_address); ray.shutdown()"
        )
        env = dict(os.environ, RAY_ADDRESS=cluster)  # Ray's own default follows this
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        joined[own] = done.stdout.strip().splitlines()[-1].rpartition(":")[2]  # the head's port (its IP varies)
    port = cluster.rpartition(":")[2]
    assert joined[None] == port  # the cluster is there to be joined
    assert joined["local"] and joined["local"] != port

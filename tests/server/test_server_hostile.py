"""The server under hostile and heavy use, over real gRPC on loopback: no input may destroy, hang or starve
it. Each test names the failure it guards; every one of them failed on the server before these fixes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import tracemalloc
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kvlock import EditRequest, EditSettings
from kvlock.errors import EditCancelled
from kvlock.media.decode import probe, read_frames
from kvlock.media.encode import write_video
from kvlock.world.demo_clip import demo_clip
from kvlock_bridge import ArrayClip, BridgeError, FileClip, Params
from kvlock_server.jobs.media_roots import MediaRoots
from kvlock_server.jobs.model import ClipSpec, InvalidJobId, JobSpec
from kvlock_server.jobs.retention import Retention
from kvlock_server.jobs.store import JobStore
from kvlock_server.rpc.admission import CallLimits
from kvlock_wire import CHUNK_BYTES
from kvlock_wire import editor_pb2 as pb
from kvlock_wire import editor_pb2_grpc as pb_grpc

from ..support.server_helpers import chunks, client, raw_stub, start, states, step_of, submit_raw, upload, wait_for
from ..support.server_helpers import header as base_header
from .test_server_ops import spawn_server

TERMINAL = ("succeeded", "failed", "cancelled")
MODEL = "tiny-random"  # the fastest model to load and step: these tests are about the server, not the edit


@pytest.fixture()
def clip():
    return demo_clip(frames=9, height=48, width=64)


@pytest.fixture()
def media(tmp_path):
    folder = tmp_path / "media"
    folder.mkdir()
    return folder


@pytest.fixture()
def app(tmp_path, media):
    server = start(tmp_path / "state", media_roots=[str(media)])
    yield server
    server.stop(grace=0)


def params(**settings) -> Params:
    return Params("a red ball", model=MODEL, settings={"steps": 2, **settings})


def header(**fields) -> pb.EditHeader:
    return base_header(**{"model": MODEL, **fields})


def refused(app, messages, timeout: float = 30) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        submit_raw(app, messages, timeout)
    return info.value


def occupy(app, clip, job_id: str = "blocker") -> None:
    """Keep the only worker busy with a long job, so jobs submitted next stay queued."""
    c = client(app)
    c.submit(ArrayClip("Source", clip[0]), ArrayClip("Matte", clip[1]), params(steps=1000), job_id=job_id)
    wait_for(lambda: step_of(app.runner.status(job_id)) >= 1)


def health(app, timeout: float = 10) -> int:
    channel = grpc.insecure_channel(app.address)
    try:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout).status
    finally:
        channel.close()


# -- 1. one job-id rule, and a store that deletes only a job's own folder ----------------------------


BAD_IDS = ["..", ".", "...", "a\n", ".hidden", "a/b", "x" * 65, ""]


def test_ids_that_are_not_one_plain_folder_name_are_refused_and_the_store_survives(app, clip):
    frames, matte = clip
    c = client(app)
    c.submit(ArrayClip("Source", frames), ArrayClip("Matte", matte), params(), job_id="keep")
    wait_for(lambda: states(app).get("keep") == "succeeded")
    stub, metadata = raw_stub(app)
    calls = (
        lambda j: stub.CancelJob(pb.CancelJobRequest(job_id=j), metadata=metadata, timeout=10),
        lambda j: list(stub.WatchJob(pb.WatchJobRequest(job_id=j), metadata=metadata, timeout=10)),
        lambda j: list(stub.FetchResult(pb.FetchResultRequest(job_id=j), metadata=metadata, timeout=10)),
    )
    for job_id in BAD_IDS:
        error = refused(app, upload(header(job_id=job_id), frames, matte))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "job_id" in error.details(), job_id
        for call in calls:
            with pytest.raises(grpc.RpcError) as info:
                call(job_id)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, job_id
    assert list(states(app)) == ["keep"]
    assert (app.store.root / "jobs.sqlite3").is_file()
    assert (app.store.folder("keep") / "result.mkv").is_file()
    assert c.fetch("keep", app.store.root.parent / "fetched")["video"].is_file()


def test_the_store_never_removes_outside_a_job_s_own_folder(tmp_path):
    store = JobStore(tmp_path / "store")
    (store.jobs_dir / "sibling").mkdir()
    for bad in ("..", ".", "a\n"):
        with pytest.raises(InvalidJobId):
            store.remove(bad)
        with pytest.raises(InvalidJobId):
            store.folder(bad)
    with pytest.raises(InvalidJobId):
        store._remove_folder(store.root)
    assert (store.root / "jobs.sqlite3").is_file() and (store.jobs_dir / "sibling").is_dir()


# -- 2. long calls cost no thread; bounds refuse at once; FIFOs are refused ---------------------------


def test_hundreds_of_watchers_and_idle_uploads_leave_health_and_calls_answering(tmp_path, clip):
    frames, matte = clip
    app = start(tmp_path / "state", calls=CallLimits(upload_idle_timeout=5))
    try:
        occupy(app, demo_clip(frames=33, height=192, width=256))  # a minute of steps: outlasts the idle uploads
        client(app).submit(ArrayClip("S", frames), ArrayClip("M", matte), params(), job_id="waiting")
        stub, metadata = raw_stub(app)
        watchers = [
            stub.WatchJob(pb.WatchJobRequest(job_id=("blocker", "waiting")[i % 2]), metadata=metadata, timeout=120)
            for i in range(200)
        ]
        wait_for(lambda: app.admission.watchers.active == 200)
        release = threading.Event()

        def stall(job_id):
            yield pb.SubmitEditRequest(header=header(job_id=job_id))
            release.wait(60)

        idle = [stub.SubmitEdit.future(stall(f"idle-{i}"), metadata=metadata, timeout=60) for i in range(8)]
        wait_for(lambda: app.admission.uploads.active == 8)
        ninth = refused(app, [pb.SubmitEditRequest(header=header(job_id="ninth"))])
        assert ninth.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit of 8 uploads" in ninth.details()
        assert health(app) == health_pb2.HealthCheckResponse.SERVING
        listed = stub.ListJobs(pb.ListJobsRequest(), metadata=metadata, timeout=10)
        assert {j.job_id for j in listed.jobs} == {"blocker", "waiting"}
        for future in idle:  # dropped by the server after 5 s without a message, not by the client's deadline
            with pytest.raises(grpc.RpcError) as info:
                future.result(timeout=30)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "no message arrived for 5 s" in info.value.details()
        release.set()
        wait_for(lambda: not any(app.store.incoming_dir.iterdir()) and app.store.reserved_bytes() == 0)
        assert next(watchers[0]).state == pb.RUNNING  # every watcher is still served
        app.runner.cancel("waiting")
        app.runner.cancel("blocker")
        assert [list(w)[-1].state for w in watchers[:2]] == [pb.CANCELLED, pb.CANCELLED]
    finally:
        app.stop(grace=0)


def test_a_bound_on_watchers_refuses_the_next_with_resource_exhausted(tmp_path, clip):
    app = start(tmp_path / "state", calls=CallLimits(max_watchers=3))
    try:
        occupy(app, clip)
        stub, metadata = raw_stub(app)
        held = [stub.WatchJob(pb.WatchJobRequest(job_id="blocker"), metadata=metadata, timeout=60) for _ in range(3)]
        for stream in held:
            next(stream)
        with pytest.raises(grpc.RpcError) as info:
            next(stub.WatchJob(pb.WatchJobRequest(job_id="blocker"), metadata=metadata, timeout=10))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit of 3 watchers" in info.value.details()
        for stream in held:
            stream.cancel()
        wait_for(lambda: app.admission.watchers.active == 0)
        assert next(stub.WatchJob(pb.WatchJobRequest(job_id="blocker"), metadata=metadata, timeout=10)).state
        app.runner.cancel("blocker")
    finally:
        app.stop(grace=0)


def test_a_fifo_under_the_media_root_is_refused_at_once(app, media, clip):
    frames, matte = clip
    write_video(media / "matte.mkv", np.repeat(matte[..., None], 3, -1), 24, "ffv1")
    os.mkfifo(media / "pipe.mov")
    write_video(media / "seq", frames[:3], 24, "png")
    os.mkfifo(media / "seq" / "seq.000004.png")  # a FIFO posing as the next frame of a sequence
    for path in (media / "pipe.mov", media / "seq"):
        head = header(source_file=pb.FileClip(path=str(path)), matte_file=pb.FileClip(path=str(media / "matte.mkv")))
        error = refused(app, [pb.SubmitEditRequest(header=head)], timeout=20)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED and "FIFO" in error.details()
    assert health(app) == health_pb2.HealthCheckResponse.SERVING


# -- 3. every setting bounded at the header; a cancel reaches every stage; SIGTERM always exits -------


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"matte_options": pb.MatteOptions(dilate=10**9)}, "matte_options.dilate must be in [0, 64]"),
        ({"settings": pb.Settings(steps=2, feather=10**9)}, "feather must be in [0, 256]"),
        ({"settings": pb.Settings(steps=2, dilate_tokens=10**9)}, "dilate_tokens must be in [0, 64]"),
        ({"settings": pb.Settings(steps=10**6)}, "steps must be in [1, 1000]"),
        ({"settings": pb.Settings(steps=2, width=10**6)}, "width must be in [16, 8192]"),
        ({"settings": pb.Settings(steps=2, window_frames=10**6)}, "window_frames must be in [1, 1024]"),
        ({"settings": pb.Settings(steps=2, metric_window=10**9)}, "metric_window must be in [2, 1000]"),
        ({"settings": pb.Settings(steps=2, kappa=10**9)}, "kappa must be in [0, 1000]"),
        ({"settings": pb.Settings(steps=2, negative_prompt="x" * 20_000)}, "negative_prompt is 20000 characters"),
        ({"matte_options": pb.MatteOptions(threshold=float("nan"))}, "matte_options.threshold"),
    ],
)
def test_unbounded_settings_are_refused_at_the_header_naming_the_field(app, clip, fields, words):
    frames, matte = clip
    error = refused(app, upload(header(**fields), frames, matte))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and words in error.details()
    assert states(app) == {}


def test_a_stored_job_with_a_setting_out_of_range_fails_when_it_runs_instead_of_hanging(tmp_path, clip):
    frames, matte = clip
    store = JobStore(tmp_path / "state" / "store")  # as an older server would have accepted it
    source = ClipSpec("inline", "source.raw", 9, 64, 48, "rgb8")
    gray = ClipSpec("inline", "matte.raw", 9, 64, 48, "gray8")
    with store.staging() as folder:
        (folder / "source.raw").write_bytes(frames.tobytes())
        (folder / "matte.raw").write_bytes(matte.tobytes())
        store.accept(JobSpec("old", MODEL, "p", source, gray, settings=EditSettings(steps=2)), folder)
    # the setting as an older server stored it, before settings were checked where they enter
    stored = json.loads(store.get("old").spec.to_json())
    stored["settings"]["feather"] = 10**9
    with store._tx() as db:
        db.execute("UPDATE jobs SET spec = ? WHERE job_id = 'old'", (json.dumps(stored),))
    store.close()
    app = start(tmp_path / "state")
    try:
        wait_for(lambda: states(app)["old"] in TERMINAL, timeout=60)
        record = app.store.get("old")
        assert record.state.value == "failed" and "feather must be in [0, 256]" in record.message
    finally:
        app.stop(grace=0)


def test_a_cancel_set_after_the_last_step_stops_the_edit_before_compositing(editor):
    frames, matte = demo_clip(frames=5, height=32, width=32)
    cancel = threading.Event()

    def on_step(info):
        if info.step == info.total - 1:
            cancel.set()  # the sampler has no step left to notice it in

    with pytest.raises(EditCancelled):
        editor.edit(EditRequest(frames, matte, "x", EditSettings(steps=2)), progress=on_step, cancel=cancel)


def test_sigterm_exits_after_hostile_calls(tmp_path, clip):
    frames, matte = clip
    proc, address, token = spawn_server(tmp_path / "state", "--grace", "1")
    try:
        channel = grpc.insecure_channel(address)
        stub = pb_grpc.EditorStub(channel)
        metadata = (("authorization", f"Bearer {token}"),)
        bad = header(matte_options=pb.MatteOptions(dilate=10**9))
        with pytest.raises(grpc.RpcError) as info:
            stub.SubmitEdit(iter(upload(bad, frames, matte)), metadata=metadata, timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        release = threading.Event()

        def stall():
            yield pb.SubmitEditRequest(header=header(job_id="stalled"))
            release.wait(120)

        half_open = stub.SubmitEdit.future(stall(), metadata=metadata, timeout=120)
        long = upload(header(job_id="long", settings=pb.Settings(steps=1000)), frames, matte)
        stub.SubmitEdit(iter(long), metadata=metadata, timeout=60)
        watcher = stub.WatchJob(pb.WatchJobRequest(job_id="long"), metadata=metadata, timeout=120)
        next(watcher)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
        release.set()
        half_open.cancel()
        channel.close()
    finally:
        if proc.poll() is None:
            proc.kill()


# -- 4. files are opened once, judged by descriptor, and must be the files accepted --------------------


def test_a_file_swapped_after_acceptance_is_never_read(app, media, clip, tmp_path):
    frames, matte = clip
    for name in ("linked.mkv", "rewritten.mkv"):
        write_video(media / name, frames, 24, "ffv1")
    write_video(media / "matte.mkv", np.repeat(matte[..., None], 3, -1), 24, "ffv1")
    write_video(tmp_path / "secret.mkv", np.full_like(frames, 7), 24, "ffv1")
    occupy(app, clip)
    c = client(app)
    for name in ("linked", "rewritten"):
        c.submit(FileClip("S", str(media / f"{name}.mkv")), FileClip("M", str(media / "matte.mkv")), params(), name)
    (media / "linked.mkv").unlink()
    (media / "linked.mkv").symlink_to(tmp_path / "secret.mkv")  # same name, now a link out of the media root
    write_video(media / "rewritten.mkv", frames[::-1].copy(), 24, "ffv1", overwrite=True)  # another file in
    c.cancel("blocker")
    wait_for(lambda: all(states(app)[n] in TERMINAL for n in ("linked", "rewritten")), timeout=120)
    expected = {"linked": "outside the server's media roots", "rewritten": "not the file (or sequence) this job"}
    for name, words in expected.items():
        record = app.store.get(name)
        assert record.state.value == "failed" and words in record.message, record.message
        assert not (app.store.folder(name) / "result.mkv").exists()


def test_a_pinned_file_is_read_through_its_descriptor_even_if_the_name_is_swapped(media, tmp_path):
    frames, _ = demo_clip(frames=3, height=32, width=32)
    write_video(media / "shot.mkv", frames, 24, "ffv1")
    write_video(tmp_path / "secret.mkv", np.zeros_like(frames), 24, "ffv1")
    roots = MediaRoots([media])
    with roots.pinned(str(media / "shot.mkv"), where=tmp_path) as pinned:
        (media / "shot.mkv").unlink()
        (media / "shot.mkv").symlink_to(tmp_path / "secret.mkv")
        assert np.array_equal(read_frames(probe(pinned.path), 0, 3), frames)
    assert not list(tmp_path.glob(".media-view-*"))  # the view and its descriptors are gone


# -- 5. models are named by the list, never by a server path -----------------------------------------


def test_model_names_are_never_server_paths_and_reveal_nothing_about_them(app, tmp_path):
    answers = {}
    for name in ("/etc", "~", "../../etc", "/nonexistent/x", str(tmp_path), "tiny/.."):
        error = refused(app, [pb.SubmitEditRequest(header=header(model=name))])
        answers[name] = (error.code(), error.details().replace(repr(name), "NAME"))
    assert len(set(answers.values())) == 1, answers
    code, details = next(iter(answers.values()))
    assert code == grpc.StatusCode.NOT_FOUND and "ListModels" in details and "tiny-random" in details
    long = refused(app, [pb.SubmitEditRequest(header=header(model="m" * 10_000))])
    assert long.code() == grpc.StatusCode.INVALID_ARGUMENT and "model is 10000 characters" in long.details()


# -- 6. space is reserved at the header ---------------------------------------------------------------


def test_concurrent_uploads_reserve_their_space_at_the_header(tmp_path, clip):
    frames, matte = clip
    job_bytes = frames.nbytes + matte.nbytes
    app = start(tmp_path / "state", retention=Retention(max_bytes=int(4.6 * job_bytes)))
    try:
        occupy(app, clip)  # one job's worth in the store, and nothing else runs
        stub, metadata = raw_stub(app)
        gates = [threading.Event() for _ in range(3)]

        def held(job_id, gate):
            messages = upload(header(job_id=job_id), frames, matte, size=8192)
            yield from messages[:3]
            gate.wait(60)
            yield from messages[3:]

        futures = [stub.SubmitEdit.future(held(f"u{i}", g), metadata=metadata, timeout=90) for i, g in enumerate(gates)]
        wait_for(lambda: app.store.reserved_bytes() == 3 * job_bytes)
        full = refused(app, upload(header(job_id="fourth"), frames, matte))
        assert full.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "promised to uploads in progress" in full.details()
        futures[0].cancel()  # an abandoned upload gives its space back
        wait_for(lambda: app.store.reserved_bytes() == 2 * job_bytes)
        assert submit_raw(app, upload(header(job_id="fourth"), frames, matte)).job_id == "fourth"
        for gate in gates[1:]:
            gate.set()
        assert sorted(f.result(timeout=60).job_id for f in futures[1:]) == ["u1", "u2"]
        assert app.store.reserved_bytes() == 0 and app.store.usage_bytes() <= 4.6 * job_bytes
        assert sorted(states(app)) == ["blocker", "fourth", "u1", "u2"]
        app.runner.cancel("blocker")
    finally:
        app.stop(grace=0)


# -- 7. checking an upload streams it --------------------------------------------------------------------


def test_checking_an_upload_holds_a_batch_not_copies_of_the_whole_matte(tmp_path, clip):
    frames_n, side = 48, 384
    app = start(tmp_path / "state")
    try:
        occupy(app, clip)
        rng = np.random.default_rng(0)
        source = rng.integers(0, 255, (frames_n, side, side, 3), dtype=np.uint8)
        matte = np.zeros((frames_n, side, side), np.uint8)
        matte[-1, 100:200, 100:200] = 255  # only the last frame is non-empty: every batch is read
        head = header(job_id="big", frames=frames_n, height=side, width=side)
        messages = upload(head, source, matte, size=CHUNK_BYTES)
        float_bytes = matte.size * 4  # what one float copy of the whole matte costs (28 MiB)
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            assert submit_raw(app, messages).job_id == "big"
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < float_bytes / 2, f"{peak / 2**20:.1f} MiB traced while checking"
        app.runner.cancel("big")
        app.runner.cancel("blocker")
    finally:
        app.stop(grace=0)


# -- 8. a client's mistakes are INVALID_ARGUMENT at submission, never INTERNAL ------------------------


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"output": pb.OutputSpec(codec=99)}, "output.codec 99"),
        ({"rate": pb.Rational(num=10**18, den=1)}, "rate 1000000000000000000/1"),
        ({"rate": pb.Rational(num=24, den=0)}, "rate 24/0"),
        ({"rate": pb.Rational(num=1, den=100)}, "frames per second"),
        ({"timecode": "zz:99:99:99"}, "timecode"),
        ({"timecode": "01:00:00:30"}, "out of range for 24 fps"),
        ({"prompt": "p" * 20_000}, "prompt is 20000 characters"),
        ({"source_file": pb.FileClip(path="/" + "a" * 10_000)}, "file path is 10001 bytes"),
        ({"source_file": pb.FileClip(path="/media/" + "b" * 300 + ".mov")}, "longer than 255 bytes"),
    ],
)
def test_client_mistakes_are_invalid_argument_at_submission(app, clip, fields, words):
    frames, matte = clip
    error = refused(app, upload(header(**fields), frames, matte))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and words in error.details(), error.details()
    assert states(app) == {}


def test_unknown_delivery_is_invalid_argument(app):
    stub, metadata = raw_stub(app)
    with pytest.raises(grpc.RpcError) as info:
        list(stub.FetchResult(pb.FetchResultRequest(job_id="x", delivery=7), metadata=metadata, timeout=10))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "delivery 7" in info.value.details()


# -- 9. lost results are a loud error; a crash's orphan folder is adopted ------------------------------


def test_fetching_a_finished_job_whose_files_are_gone_is_data_loss(app, clip):
    frames, matte = clip
    c = client(app)
    c.submit(ArrayClip("Source", frames), ArrayClip("Matte", matte), params(), job_id="done")
    wait_for(lambda: states(app)["done"] == "succeeded")
    folder = app.store.folder("done")
    stub, metadata = raw_stub(app)
    for remove in (lambda: (folder / "result.mkv").unlink(), lambda: (folder / "results.json").unlink(),
                   lambda: shutil.rmtree(folder)):  # fmt: skip
        remove()
        for delivery in (pb.STREAM, pb.PATH):
            with pytest.raises(grpc.RpcError) as info:
                list(stub.FetchResult(pb.FetchResultRequest(job_id="done", delivery=delivery), metadata=metadata))
            assert info.value.code() == grpc.StatusCode.DATA_LOSS and "results are gone" in info.value.details()


CRASH_IN_ACCEPT = """
import os, signal, sys
from pathlib import Path
from kvlock_server.jobs.model import ClipSpec, JobSpec
from kvlock_server.jobs.store import JobStore
from kvlock.settings import EditSettings

store = JobStore(Path(sys.argv[1]))
real_rename = Path.rename

def rename_then_die(self, target):
    real_rename(self, target)
    os.kill(os.getpid(), signal.SIGKILL)  # after the move, before the row is committed

Path.rename = rename_then_die
source = ClipSpec("inline", "source.raw", 9, 64, 48, "rgb8")
matte = ClipSpec("inline", "matte.raw", 9, 64, 48, "gray8")
with store.staging() as folder:
    (folder / "source.raw").write_bytes(Path(sys.argv[2]).read_bytes())
    (folder / "matte.raw").write_bytes(Path(sys.argv[3]).read_bytes())
    store.accept(JobSpec("orphan", "tiny-random", "a red ball", source, matte, settings=EditSettings(steps=2)), folder)
"""


def test_a_crash_between_moving_a_job_in_and_committing_it_is_adopted_at_start(tmp_path, clip):
    frames, matte = clip
    (tmp_path / "s.raw").write_bytes(frames.tobytes())
    (tmp_path / "m.raw").write_bytes(matte.tobytes())
    store_root = tmp_path / "state" / "store"
    crash = subprocess.run(
        [sys.executable, "-c", CRASH_IN_ACCEPT, str(store_root), str(tmp_path / "s.raw"), str(tmp_path / "m.raw")],
        capture_output=True,
    )
    assert crash.returncode == -signal.SIGKILL, crash.stderr
    assert (store_root / "jobs" / "orphan" / "source.raw").is_file()
    (store_root / "jobs" / "junk").mkdir()  # a folder no accepted job left: removed
    app = start(tmp_path / "state")
    try:
        assert "orphan" in states(app) and not (store_root / "jobs" / "junk").exists()
        assert app.store.get("orphan").size_bytes >= frames.nbytes + matte.nbytes
        wait_for(lambda: states(app)["orphan"] == "succeeded")
        again = client(app).submit(ArrayClip("S", frames), ArrayClip("M", matte), params(), job_id="orphan")
        assert again.duplicate and list(states(app)) == ["orphan"]
    finally:
        app.stop(grace=0)


# -- 10. private state, an honest token file, no path for strangers, chunks of at most 1 MiB --------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_is_private_to_the_server_s_user(tmp_path, clip):
    frames, matte = clip
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    app = start(state)
    try:
        client(app).submit(ArrayClip("S", frames), ArrayClip("M", matte), params(), job_id="private")
        wait_for(lambda: states(app)["private"] == "succeeded")
        folder = app.store.folder("private")
        for path in (state, app.store.root, app.store.jobs_dir, app.store.incoming_dir, folder):
            assert mode(path) == 0o700, path
        for path in (app.store.root / "jobs.sqlite3", app.token_path, *folder.iterdir()):
            assert mode(path) & 0o077 == 0, (path, oct(mode(path)))
    finally:
        app.stop(grace=0)


def test_a_token_file_others_can_read_is_made_private_and_strangers_learn_no_path(tmp_path, caplog):
    state = tmp_path / "state"
    state.mkdir()
    (state / "token").write_text("secret-token\n")
    os.chmod(state / "token", 0o644)
    app = start(state)
    try:
        assert app.token == "secret-token" and mode(state / "token") == 0o600
        assert "was readable by others" in caplog.text
        stub, _ = raw_stub(app)
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            with pytest.raises(grpc.RpcError) as info:
                stub.ListJobs(pb.ListJobsRequest(), metadata=metadata, timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "Bearer" in info.value.details() and str(tmp_path) not in info.value.details()
    finally:
        app.stop(grace=0)


def test_chunks_over_one_mib_are_refused_by_server_and_bridge(app, clip):
    frames, matte = clip
    big = np.zeros((1, 1024, 1024 + 8, 3), np.uint8)  # one frame is more than 1 MiB
    head = header(job_id="chunky", frames=1, height=1024, width=1024 + 8)
    messages = [pb.SubmitEditRequest(header=head), *chunks(pb.SOURCE, big.tobytes(), CHUNK_BYTES + 1)]
    error = refused(app, messages)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and f"at most {CHUNK_BYTES}" in error.details()
    with pytest.raises(BridgeError, match="1 MiB"):
        client(app).submit(ArrayClip("S", frames), ArrayClip("M", matte), params(), chunk_bytes=CHUNK_BYTES + 1)
    assert states(app) == {}

"""The gRPC server on loopback with the tiny model, driven by the real bridge and by raw stubs."""

from __future__ import annotations

import os
import stat
import threading

import grpc
import numpy as np
import pytest
import torch

from kvlock.editing.compositing import feather_matte
from kvlock.media.decode import probe, read_frames
from kvlock.media.encode import write_video
from kvlock.world.demo_clip import demo_clip
from kvlock_bridge import (
    ArrayClip,
    AuthenticationError,
    FileClip,
    JobFailedError,
    Params,
    RequestRejectedError,
    render,
)
from kvlock_server.jobs.store import JobStore
from kvlock_server.rpc.wire import Limits
from kvlock_wire import editor_pb2 as pb

from ..support.server_helpers import (
    chunks,
    client,
    done_steps,
    header,
    raw_stub,
    start,
    states,
    step_of,
    stop_after_take_one,
    submit_raw,
    total_of,
    wait_for,
)


@pytest.fixture()
def clip():
    frames, matte = demo_clip(frames=9, height=48, width=64)
    return frames, matte


@pytest.fixture()
def app(tmp_path):
    (tmp_path / "media").mkdir()
    server = start(tmp_path / "state", media_roots=[str(tmp_path / "media")])
    yield server
    server.stop(grace=0)


def params(**settings) -> Params:
    return Params("a red ball", settings={"steps": 2, **settings})


def test_submit_watch_fetch_with_byte_exact_transfer_over_manychunks(app, clip, tmp_path):
    frames, matte = clip
    c = client(app)
    seen = []
    result = c.submit(
        ArrayClip("Source", frames), ArrayClip("Matte", matte), params(), job_id="exact", chunk_bytes=4096
    )
    stored = app.store.folder("exact") / "source.raw"
    assert stored.read_bytes() == frames.tobytes()  # 82 944 bytes in 21 chunks, nothing lost or reordered
    assert (app.store.folder("exact") / "matte.raw").read_bytes() == matte.tobytes()
    for update in c.watch(result.job_id):
        seen.append(update)
    assert seen[-1].state == "succeeded" and any(total_of(u) == 2 for u in seen)
    files = c.fetch("exact", tmp_path / "fetched")
    edited = read_frames(probe(files["video"]), 0, 9)
    outside = np.stack([feather_matte(m / 255.0, 4) for m in matte]) == 0
    assert np.array_equal(edited[outside], frames[outside])
    assert files["trace"].read_text().startswith("{") and files["plot"].read_bytes()[:4] == b"\x89PNG"
    assert app.store.get("exact").fetched is not None


def test_sixteen_bit_upload_is_exact_and_result_stays_deep(app, clip, tmp_path):
    frames, matte = clip
    deep = frames.astype(np.uint16) * 257 + 3
    out = tmp_path / "deep.mkv"
    render(client(app), ArrayClip("Source", deep), ArrayClip("Matte", matte), params(), out, job_id="deep")
    assert (app.store.folder("deep") / "source.raw").read_bytes() == deep.astype("<u2").tobytes()
    edited = read_frames(probe(out), 0, 9)
    outside = np.stack([feather_matte(m / 255.0, 4) for m in matte]) == 0
    assert edited.dtype == np.uint16 and np.array_equal(edited[outside], deep[outside])


def test_previews_arrive_when_asked(app, clip):
    frames, matte = clip
    c = client(app)
    c.submit(ArrayClip("Source", frames), ArrayClip("Matte", matte), params(steps=6), job_id="preview")
    previews = [
        u.denoising.preview_png for u in c.watch("preview", previews=True) if u.denoising and u.denoising.preview_png
    ]
    assert previews and all(p[:4] == b"\x89PNG" for p in previews)


def test_cancel_mid_run_then_the_server_keeps_serving(app, clip, tmp_path):
    frames, matte = clip
    c = client(app)
    c.submit(ArrayClip("Source", frames), ArrayClip("Matte", matte), params(steps=400), job_id="long")
    for update in c.watch("long"):
        if done_steps(update) >= 1:
            c.cancel("long")
        if update.done:
            break
    assert app.store.get("long").state.value == "cancelled"
    assert "cancelled after step" in app.store.get("long").message
    done = render(c, ArrayClip("Source", frames), ArrayClip("Matte", matte), params(), tmp_path / "after.mkv")
    assert done.output.exists()


def test_cancel_through_render_raises_job_failed(app, clip, tmp_path):
    frames, matte = clip
    cancel = threading.Event()

    def stop_soon(update):
        if done_steps(update) >= 1:
            cancel.set()

    with pytest.raises(JobFailedError) as info:
        render(
            client(app),
            ArrayClip("Source", frames),
            ArrayClip("Matte", matte),
            params(steps=400),
            tmp_path / "x.mkv",
            progress=stop_soon,
            cancel=cancel,
        )
    assert info.value.state == "cancelled" and not (tmp_path / "x.mkv").exists()


def test_restart_runs_queued_and_parked_jobs(tmp_path, clip):
    frames, matte = clip
    first = start(tmp_path / "state")
    c = client(first)
    c.submit(ArrayClip("Source", frames), ArrayClip("Matte", matte), params(steps=400), job_id="running")
    c.submit(ArrayClip("Source", frames), ArrayClip("Matte", matte), params(), job_id="waiting")
    wait_for(lambda: step_of(first.runner.status("running")) >= 1)
    parked = first.stop(grace=0)
    assert parked == ["running"]
    between = JobStore(tmp_path / "state" / "store")
    assert {r.job_id: r.state.value for r in between.list()} == {"running": "queued", "waiting": "queued"}
    assert "parked at server shutdown" in between.get("running").message
    between.close()
    second = start(tmp_path / "state")
    try:
        wait_for(lambda: step_of(second.runner.status("running")) >= 1)  # the parked job runs again first
        second.runner.cancel("running")  # it would take 400 steps; the queue moves on to the next
        wait_for(lambda: states(second)["waiting"] == "succeeded")
        assert second.store.get("running").attempts == 2
    finally:
        second.stop(grace=0)


def test_interrupted_job_is_rerun_then_failed_after_max_attempts(tmp_path, clip):
    frames, matte = clip
    first = start(tmp_path / "state", max_attempts=2)
    client(first).submit(ArrayClip("Source", frames), ArrayClip("Matte", matte), params(), job_id="crashy")
    wait_for(lambda: states(first)["crashy"] == "succeeded")
    first.stop(grace=0)
    # what a killed process leaves behind: the row still says running, with its attempt counted
    store = JobStore(tmp_path / "state" / "store")
    store._db.execute("UPDATE jobs SET state = 'running', attempts = 1 WHERE job_id = 'crashy'")
    assert store.recover() == ["crashy"]
    store._db.execute("UPDATE jobs SET state = 'running', attempts = 2 WHERE job_id = 'crashy'")
    assert store.recover() == []
    record = store.get("crashy")
    assert record.state.value == "failed" and "restart 2 times" in record.message


def test_two_clients_at_once_and_two_slots(tmp_path, clip):
    frames, matte = clip
    app = start(tmp_path / "state", concurrency=2)
    try:
        results, errors = {}, []
        both_running = threading.Event()

        def watch_both():
            wait_for(lambda: sum(1 for s in states(app).values() if s == "running") == 2)
            both_running.set()

        def run(name):
            try:
                results[name] = render(
                    client(app),
                    ArrayClip("Source", frames),
                    ArrayClip("Matte", matte),
                    params(steps=40),
                    tmp_path / f"{name}.mkv",
                    job_id=name,
                )
            except Exception as error:  # collected and asserted below
                errors.append(error)

        threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
        observer = threading.Thread(target=watch_both)
        observer.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        observer.join(timeout=5)
        assert not errors and set(results) == {"a", "b"}
        assert both_running.is_set()
        assert np.array_equal(
            read_frames(probe(results["a"].output), 0, 9), read_frames(probe(results["b"].output), 0, 9)
        )
    finally:
        app.stop(grace=0)


def test_resubmitting_an_id_is_idempotent(app, clip):
    frames, matte = clip
    c = client(app)
    first = c.submit(ArrayClip("Source", frames), ArrayClip("Matte", matte), params(), job_id="same")
    again = c.submit(ArrayClip("Source", frames), ArrayClip("Matte", matte), params(), job_id="same")
    assert not first.duplicate and again.duplicate and again.job_id == "same"
    assert list(states(app)) == ["same"]


def test_token_is_required_except_for_health(app):
    mode = stat.S_IMODE(os.stat(app.token_path).st_mode)
    assert mode == 0o600
    for token in (None, "wrong"):
        anonymous = client(app, token)
        assert anonymous.health() is True
        with pytest.raises(AuthenticationError, match="token"):
            anonymous.list_models()
        with pytest.raises(AuthenticationError):
            list(anonymous.watch("x"))
    assert [m.name for m in client(app).list_models()] == ["tiny", "tiny-random"]


def test_file_paths_only_under_media_roots(app, clip, tmp_path):
    frames, matte = clip
    media = tmp_path / "media"
    write_video(media / "shot.mkv", frames, 24, "ffv1")
    write_video(media / "matte.mkv", np.repeat(matte[..., None], 3, -1), 24, "ffv1")
    outside = tmp_path / "secret.mkv"
    write_video(outside, frames, 24, "ffv1")
    (media / "link.mkv").symlink_to(outside)
    c = client(app)
    for path in (str(outside), f"{media}/../secret.mkv", str(media / "link.mkv"), "relative.mkv"):
        with pytest.raises(RequestRejectedError) as info:
            c.submit(FileClip("Source", path), FileClip("Matte", str(media / "matte.mkv")), params())
        assert info.value.code == "PERMISSION_DENIED"
    done = render(
        c,
        FileClip("Source", str(media / "shot.mkv"), 2, 7),
        FileClip("Matte", str(media / "matte.mkv")),
        params(),
        tmp_path / "from_path.mkv",
    )
    edited = read_frames(probe(done.output), 0, 5)
    outside_mask = np.stack([feather_matte(m / 255.0, 4) for m in matte[2:7]]) == 0
    assert np.array_equal(edited[outside_mask], frames[2:7][outside_mask])
    shared = c.fetch(done.job_id, tmp_path / "shared", delivery="path")
    assert shared["video"].read_bytes() == done.output.read_bytes()


@pytest.mark.parametrize(
    ("build", "code", "words"),
    [
        (lambda f, m: [header(model="no-such-model")], grpc.StatusCode.NOT_FOUND, "no-such-model"),
        (
            lambda f, m: [header(), *chunks(pb.SOURCE, f.tobytes()), *chunks(pb.MATTE, np.zeros_like(m).tobytes())],
            grpc.StatusCode.INVALID_ARGUMENT,
            "matte is empty",
        ),
        (
            lambda f, m: [header(matte_inline=pb.InlineClip(frames=9, width=32, height=48, format=pb.GRAY8))],
            grpc.StatusCode.INVALID_ARGUMENT,
            "matte frames are 32×48",
        ),
        (
            lambda f, m: [header(), *chunks(pb.SOURCE, f.tobytes())[::-1]],
            grpc.StatusCode.INVALID_ARGUMENT,
            "out of order",
        ),
        (
            lambda f, m: [header(), *chunks(pb.SOURCE, f.tobytes() + b"extra")],
            grpc.StatusCode.INVALID_ARGUMENT,
            "more bytes",
        ),
        (
            lambda f, m: [header(), *chunks(pb.SOURCE, f.tobytes()[:-10])],
            grpc.StatusCode.INVALID_ARGUMENT,
            "incomplete",
        ),
        (
            lambda f, m: [header(source_inline=pb.InlineClip(frames=9, width=9000, height=48, format=pb.RGB8))],
            grpc.StatusCode.INVALID_ARGUMENT,
            "frame size",
        ),
        (lambda f, m: [header(frames=5000, height=512, width=512)], grpc.StatusCode.RESOURCE_EXHAUSTED, "GB"),
        (lambda f, m: [header(job_id="no spaces!")], grpc.StatusCode.INVALID_ARGUMENT, "job_id"),
        (lambda f, m: [header(settings=pb.Settings(tau=-1))], grpc.StatusCode.INVALID_ARGUMENT, "tau"),
        (
            lambda f, m: [pb.SubmitEditRequest(chunk=pb.MediaChunk(track=pb.SOURCE))],
            grpc.StatusCode.INVALID_ARGUMENT,
            "header",
        ),
    ],
)
def test_bad_requests_fail_before_work_with_the_right_code(tmp_path, clip, build, code, words):
    frames, matte = clip
    app = start(tmp_path / "state", limits=Limits(max_upload_bytes=100 * 1024**2))
    try:
        messages = [
            m if isinstance(m, pb.SubmitEditRequest) else pb.SubmitEditRequest(header=m) for m in build(frames, matte)
        ]
        with pytest.raises(grpc.RpcError) as info:
            submit_raw(app, messages)
        assert info.value.code() == code and words in info.value.details()
        assert states(app) == {} and list((tmp_path / "state" / "store" / "incoming").iterdir()) == []
    finally:
        app.stop(grace=0)


def test_unknown_jobs_and_unfinished_results(app, clip):
    stub, metadata = raw_stub(app)
    for call, request in ((stub.CancelJob, pb.CancelJobRequest(job_id="ghost")),):
        with pytest.raises(grpc.RpcError) as info:
            call(request, metadata=metadata)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND and "ghost" in info.value.details()
    for stream in (
        stub.WatchJob(pb.WatchJobRequest(job_id="ghost"), metadata=metadata),
        stub.FetchResult(pb.FetchResultRequest(job_id="ghost"), metadata=metadata),
    ):
        with pytest.raises(grpc.RpcError) as info:
            list(stream)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    frames, matte = clip
    c = client(app)
    c.submit(ArrayClip("Source", frames), ArrayClip("Matte", matte), params(steps=300), job_id="busy")
    with pytest.raises(RequestRejectedError) as info:
        c.fetch("busy", app.store.root / "nowhere")
    assert info.value.code == "FAILED_PRECONDITION" and "only succeeded jobs" in str(info.value)
    c.cancel("busy")


def test_client_disconnect_mid_upload_leaves_no_half_job(app, clip):
    frames, _ = clip
    stub, metadata = raw_stub(app)
    arrived = threading.Event()

    def messages():
        yield pb.SubmitEditRequest(header=header(job_id="half"))
        yield from chunks(pb.SOURCE, frames.tobytes())[:5]
        arrived.set()
        threading.Event().wait(1.0)
        raise RuntimeError("client went away")

    future = stub.SubmitEdit.future(messages(), metadata=metadata)
    arrived.wait(30)
    future.cancel()
    wait_for(lambda: not any((app.store.root / "incoming").iterdir()))
    assert states(app) == {}


def test_a_failing_model_fails_the_job_and_the_server_keeps_serving(app, clip, tmp_path, monkeypatch):
    frames, matte = clip
    real_editor = app.executor.editor

    class ExhaustedEditor:
        def edit_takes(self, *args, **kwargs):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(app.executor, "editor", lambda model, slot=0: ExhaustedEditor())
    with pytest.raises(JobFailedError) as info:
        render(client(app), ArrayClip("Source", frames), ArrayClip("Matte", matte), params(), tmp_path / "oom.mkv")
    assert info.value.state == "failed" and "ran out of memory" in info.value.reason
    monkeypatch.setattr(app.executor, "editor", real_editor)
    done = render(client(app), ArrayClip("Source", frames), ArrayClip("Matte", matte), params(), tmp_path / "ok.mkv")
    assert done.output.exists()


def test_takes_arrive_side_by_side_with_their_traces(app, clip, tmp_path):
    frames, matte = clip
    tmp_path = tmp_path / "out"  # beside the server's own folders
    tmp_path.mkdir()
    seen = []
    source, matte_clip = ArrayClip("Source", frames), ArrayClip("Matte", matte)
    done = render(client(app), source, matte_clip, params(takes=3, seed=4), tmp_path / "shot.mkv", seen.append)
    assert done.output == tmp_path / "shot.take1.mkv" and not done.cancelled
    assert [(t.take, t.output.name, t.trace.name) for t in done.takes] == [
        (k, f"shot.take{k}.mkv", f"shot.take{k}.trace.json") for k in (1, 2, 3)
    ]
    assert {p.name for p in tmp_path.iterdir()} == {
        f"shot.take{k}{suffix}" for k in (1, 2, 3) for suffix in (".mkv", ".trace.json", ".trace.png")
    }
    assert [(t.trace_data()["take"], t.trace_data()["takes"]) for t in done.takes] == [(1, 3), (2, 3), (3, 3)]
    assert any(u.denoising is not None and u.denoising.takes == 3 for u in seen)  # progress per take, on the wire
    outside = np.stack([feather_matte(m / 255.0, 4) for m in matte]) == 0
    edited = [read_frames(probe(t.output), 0, 9) for t in done.takes]
    for version in edited:
        assert np.array_equal(version[outside], frames[outside])
    assert not np.array_equal(edited[0], edited[1]) and not np.array_equal(edited[1], edited[2])
    one = render(client(app), source, matte_clip, params(seed=4), tmp_path / "one.mkv")
    assert np.array_equal(read_frames(probe(one.output), 0, 9), edited[0])  # take 1 is the one-take edit
    fetched = client(app).fetch_takes(done.job_id, tmp_path / "again")
    assert sorted(fetched) == [1, 2, 3] and fetched[2]["video"].name == "result.take2.mkv"


def test_a_cancelled_job_delivers_the_takes_it_finished(app, clip, tmp_path, monkeypatch):
    stop_after_take_one(app, monkeypatch)
    frames, matte = clip
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    done = render(
        client(app), ArrayClip("Source", frames), ArrayClip("Matte", matte), params(takes=3), tmp_path / "s.mkv",
        job_id="kept",
    )  # fmt: skip
    assert "take 1 of 3 was finished and kept" in done.cancelled and [t.take for t in done.takes] == [1]
    assert app.store.get("kept").state.value == "cancelled"
    assert {p.name for p in tmp_path.iterdir()} == {"s.take1.mkv", "s.take1.trace.json", "s.take1.trace.png"}
    outside = np.stack([feather_matte(m / 255.0, 4) for m in matte]) == 0
    assert np.array_equal(read_frames(probe(done.output), 0, 9)[outside], frames[outside])
    stub, metadata = raw_stub(app)
    kinds = [(c.take, c.kind) for c in stub.FetchResult(pb.FetchResultRequest(job_id="kept"), metadata=metadata)]
    assert {take for take, _ in kinds} == {1} and {kind for _, kind in kinds} == {"video", "trace", "plot"}

"""Running the server as an operator would: the real `kvlock serve` process, sockets, TLS, retention,
the stubs' freshness, and fuzzed requests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvlock.media.encode import write_video
from kvlock.world.demo_clip import demo_clip
from kvlock_bridge import ArrayClip, Client, Params, ServerUnavailableError, render
from kvlock_server.app import ConfigError
from kvlock_server.jobs.model import ClipSpec, JobSpec, JobState
from kvlock_server.jobs.retention import Retention
from kvlock_server.jobs.store import JobStore, StoreFullError
from kvlock_wire import editor_pb2 as pb

from ..support.server_helpers import client, header, raw_stub, start, states, wait_for

ROOT = Path(__file__).resolve().parents[2]
KVLOCK = [str(Path(sys.executable).with_name("kvlock"))]


def spawn_server(state: Path, *extra: str) -> tuple[subprocess.Popen, str, str | None]:
    proc = subprocess.Popen(
        [*KVLOCK, "serve", "--port", "0", "--state-dir", str(state), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    address, token = None, None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"server exited: {proc.stderr.read()}")
        if "listening on" in line:
            address = line.rsplit(" ", 1)[1].strip()
        if "generated a token" in line:
            token = line.rsplit(" ", 1)[1].strip()
        if "health:" in line:  # the last line the server prints at start
            break
    return proc, address, token


def kvlock(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*KVLOCK, *args], capture_output=True, text=True, timeout=300, env=env)


def test_serve_submit_jobs_cancel_and_a_killed_server_reruns_its_job(tmp_path):
    frames, matte = demo_clip(frames=9, height=48, width=64)
    write_video(tmp_path / "shot.mkv", frames, 24, "ffv1")
    write_video(tmp_path / "matte.mkv", np.repeat(matte[..., None], 3, -1), 24, "ffv1")
    state = tmp_path / "state"
    proc, address, token = spawn_server(state)
    assert token and (state / "token").read_text().strip() == token
    env = {**os.environ, "KVLOCK_TOKEN": token}
    common = [
        "--server",
        address,
        "--input",
        str(tmp_path / "shot.mkv"),
        "--matte",
        str(tmp_path / "matte.mkv"),
        "--prompt",
        "a red ball",
    ]
    try:
        done = kvlock("submit", *common, "--steps", "2", "--wait", "--out", str(tmp_path / "r.mkv"), env=env)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "r.mkv").exists() and (tmp_path / "r.trace.json").exists()
        queued = kvlock("submit", *common, "--steps", "500", "--job-id", "slow", "--json", env=env)
        assert json.loads(queued.stdout.splitlines()[-1])["job_id"] == "slow"
        wait_for(lambda: "running" in kvlock("jobs", "--server", address, env=env).stdout)
        time.sleep(1.0)
    finally:
        proc.send_signal(signal.SIGKILL)  # a crash: no chance to park the job
        proc.wait()
    proc, address, _ = spawn_server(state)
    try:
        listed = json.loads(kvlock("jobs", "--server", address, "--json", env=env).stdout)
        slow = next(j for j in listed if j["job_id"] == "slow")
        assert slow["state"] in ("queued", "running") and "re-run after a server restart" in slow["message"]
        assert kvlock("cancel", "slow", "--server", address, env=env).returncode == 0
        wait_for(lambda: "cancelled" in kvlock("jobs", "--server", address, "--state", "cancelled", env=env).stdout)
        refused = kvlock("jobs", "--server", address, env={**env, "KVLOCK_TOKEN": "wrong"})
        assert refused.returncode == 10 and "token" in refused.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    gone = kvlock("jobs", "--server", address, env=env)
    assert gone.returncode == 9 and "kvlock serve" in gone.stderr


def test_unix_socket(tmp_path):
    frames, matte = demo_clip(frames=5, height=32, width=32)
    app = start(tmp_path / "state", unix_socket=str(tmp_path / "kv.sock"))
    try:
        assert app.address == f"unix:{tmp_path / 'kv.sock'}"
        done = render(
            Client(app.address, app.token),
            ArrayClip("S", frames),
            ArrayClip("M", matte),
            Params("x", settings={"steps": 1}),
            tmp_path / "u.mkv",
        )
        assert done.output.exists()
    finally:
        app.stop(grace=0)


def test_exposure_rules_and_tls(tmp_path, caplog):
    with pytest.raises(ConfigError, match="without a token"):
        start(tmp_path / "a", host="0.0.0.0", auth=False)
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )
    app = start(tmp_path / "b", host="127.0.0.1", tls_cert=str(cert), tls_key=str(key))
    try:
        port = app.address.rsplit(":", 1)[1]
        secure = Client(f"localhost:{port}", app.token, root_certificates=cert.read_bytes())
        assert [m.name for m in secure.list_models()] == ["tiny", "tiny-random"]
        with pytest.raises(ServerUnavailableError):
            Client(f"localhost:{port}", app.token, timeout=3).list_models()  # plain text to a TLS port
    finally:
        app.stop(grace=0)


def _spec(job_id: str) -> JobSpec:
    clip = ClipSpec("inline", "source.raw", 1, 8, 8)
    return JobSpec(job_id, "tiny", "p", clip, clip)


def _finished(store: JobStore, job_id: str, size: int) -> None:
    with store.staging() as folder:
        (folder / "result.mkv").write_bytes(b"x" * size)
        store.accept(_spec(job_id), folder)
    store.claim_next()
    store.finish(job_id, JobState.SUCCEEDED)


def test_retention_by_fetch_age_and_size_never_touches_queued_jobs(tmp_path):
    store = JobStore(tmp_path / "store", Retention(max_bytes=30_000, keep_after_fetch=10, max_age=100))
    for name in ("old", "fetched", "big", "kept"):
        _finished(store, name, 10_000)
    with store.staging() as folder:
        (folder / "source.raw").write_bytes(b"q" * 15_000)
        store.accept(_spec("queued"), folder)
    now = time.time()
    store._db.execute("UPDATE jobs SET finished = ? WHERE job_id = 'old'", (now - 1000,))
    store.mark_fetched("fetched")
    store._db.execute("UPDATE jobs SET fetched = ? WHERE job_id = 'fetched'", (now - 60,))
    removed = store.sweep(now)
    assert set(removed[:2]) == {"fetched", "old"} and removed[2:] == ["big"]  # then the oldest finished, by size
    assert "queued" not in removed and store.get("queued").state == JobState.QUEUED
    assert store.usage_bytes() <= 30_000
    assert not (store.jobs_dir / "old").exists()
    with pytest.raises(StoreFullError, match="job store is full"):
        store.ensure_room(50_000)


def test_committed_proto_and_built_stubs_agree(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate_stubs.py"), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    sys.path.insert(0, str(ROOT / "proto"))
    try:
        import generate_stubs
    finally:
        sys.path.pop(0)
    changed = tmp_path / "kvlock" / "v1"
    changed.mkdir(parents=True)
    text = (ROOT / "proto" / "kvlock" / "v1" / "editor.proto").read_text()
    (changed / "editor.proto").write_text(
        text.replace("uint32 queue_position = 4;", "uint32 queue_position = 4;\n  string note = 5;")
    )
    original = (generate_stubs.PROTO_ROOT, generate_stubs.PROTOS)
    generate_stubs.PROTO_ROOT, generate_stubs.PROTOS = tmp_path, [changed / "editor.proto"]
    try:
        assert "editor_pb2.py" in generate_stubs.stale(generate_stubs.generate())
    finally:
        generate_stubs.PROTO_ROOT, generate_stubs.PROTOS = original


# -- fuzzing -----------------------------------------------------------------------------------------

KNOWN = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.FAILED_PRECONDITION,
}

sizes = st.integers(min_value=0, max_value=40)
settings_messages = st.builds(
    pb.Settings,
    steps=st.integers(-3, 2),
    tau=st.floats(allow_nan=True, allow_infinity=True, width=32),
    method=st.sampled_from(["kvlock", "no_lock", "fixed_alpha=2", "", "bogus"]),
    strength=st.floats(-1, 2),
    geometry=st.sampled_from(["fit", "crop_to_matte", "x"]),
)
clips = st.builds(
    pb.InlineClip, frames=st.integers(0, 3), width=sizes, height=sizes, format=st.sampled_from([0, 1, 2, 3, 4, 99])
)
headers = st.builds(
    pb.EditHeader,
    job_id=st.text(max_size=8),
    model=st.sampled_from(["tiny", "", "nope"]),
    prompt=st.text(max_size=5),
    settings=settings_messages,
    source_inline=clips,
    matte_inline=clips,
    priority=st.integers(-5, 5),
)
chunks = st.builds(
    pb.MediaChunk, track=st.sampled_from([0, 1, 2, 7]), sequence=st.integers(0, 3), data=st.binary(max_size=64)
)
streams = st.lists(
    st.one_of(
        headers.map(lambda h: pb.SubmitEditRequest(header=h)), chunks.map(lambda c: pb.SubmitEditRequest(chunk=c))
    ),
    max_size=6,
)


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    app = start(tmp_path_factory.mktemp("fuzz") / "state")
    yield app
    app.stop(grace=0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=streams)
def test_fuzzed_submissions_never_crash_or_leave_a_half_job(fuzz_server, messages):
    stub, metadata = raw_stub(fuzz_server)
    try:
        reply = stub.SubmitEdit(iter(messages), metadata=metadata, timeout=60)
        assert reply.job_id
    except grpc.RpcError as error:
        assert error.code() in KNOWN, (error.code(), error.details())
    assert not any((fuzz_server.store.root / "incoming").iterdir())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    job_id=st.text(max_size=10),
    states_=st.lists(st.integers(-1, 9), max_size=3),
    limit=st.integers(0, 5),
    delivery=st.integers(0, 5),
)
def test_fuzzed_job_calls_answer_with_known_codes(fuzz_server, job_id, states_, limit, delivery):
    stub, metadata = raw_stub(fuzz_server)
    calls = [
        lambda: stub.CancelJob(pb.CancelJobRequest(job_id=job_id), metadata=metadata, timeout=10),
        lambda: list(
            stub.FetchResult(pb.FetchResultRequest(job_id=job_id, delivery=delivery), metadata=metadata, timeout=10)
        ),
        lambda: stub.ListJobs(pb.ListJobsRequest(states=states_, limit=limit), metadata=metadata, timeout=10),
    ]
    for call in calls:
        try:
            call()
        except grpc.RpcError as error:
            assert error.code() in KNOWN, (error.code(), error.details())


def test_after_fuzzing_no_job_is_stuck_and_the_server_is_healthy(fuzz_server):
    wait_for(lambda: all(s in ("succeeded", "failed", "cancelled") for s in states(fuzz_server).values()), 300)
    assert client(fuzz_server).health()
    stub, metadata = raw_stub(fuzz_server)
    frames, matte = demo_clip(frames=5, height=32, width=32)
    ok = header(job_id="after-fuzz", frames=5, height=32, width=32)
    reply = stub.SubmitEdit(
        iter(
            [
                pb.SubmitEditRequest(header=ok),
                pb.SubmitEditRequest(chunk=pb.MediaChunk(track=pb.SOURCE, data=frames.tobytes())),
                pb.SubmitEditRequest(chunk=pb.MediaChunk(track=pb.MATTE, data=matte.tobytes())),
            ]
        ),
        metadata=metadata,
    )
    assert reply.job_id == "after-fuzz"
    wait_for(lambda: states(fuzz_server)["after-fuzz"] == "succeeded")

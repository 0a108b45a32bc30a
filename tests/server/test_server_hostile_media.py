"""Hostile files, clients that give up and bytes that do not parse, against the server over real gRPC on
loopback: every one is refused with a status a client can act on (never UNKNOWN or INTERNAL), nothing is
left behind, and the server keeps answering health and ListJobs. Each test failed before these guards."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import kvlock_server.jobs.checks as checks
from kvlock_server.rpc.admission import CallLimits
from kvlock_server.rpc.malformed import RateLimitedLog
from kvlock_wire import editor_pb2 as pb

from ..support import hostile_media as hostile
from ..support.server_helpers import header as base_header
from ..support.server_helpers import raw_stub, start, states, submit_raw, wait_for
from .test_server_ops import spawn_server

MODEL = "tiny-random"


@pytest.fixture()
def media(tmp_path):
    folder = tmp_path / "media"
    folder.mkdir()
    hostile.still_matte(folder / "matte.png")
    hostile.ffv1_clip(folder / "source.mkv", 9)  # a clean source, for hostile files in the matte's place
    return folder


@pytest.fixture()
def app(tmp_path, media):
    server = start(tmp_path / "state", media_roots=[str(media)])
    yield server
    server.stop(grace=0)


def by_path(source: Path, matte: Path, job_id: str = "job-1", **fields) -> list[pb.SubmitEditRequest]:
    head = base_header(
        job_id=job_id,
        model=MODEL,
        settings=pb.Settings(steps=2),
        source_file=pb.FileClip(path=str(source)),
        matte_file=pb.FileClip(path=str(matte)),
        **fields,
    )
    return [pb.SubmitEditRequest(header=head)]


def healthy(app) -> bool:
    channel = grpc.insecure_channel(app.address)
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        stub, metadata = raw_stub(app)
        stub.ListJobs(pb.ListJobsRequest(), metadata=metadata, timeout=10)
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        channel.close()


HOSTILE = {
    "png_claims_16000": (lambda m: hostile.lying_png(m / "lying.png"), "16000×16000"),
    "png_bomb": (lambda m: hostile.png_bomb(m / "bomb.png", 9000, 2000, colour=0), "9000×2000"),
    "gif_screen": (lambda m: hostile.gif_screen(m / "screen.gif"), "8000×8000"),
    "exr_claims_20000": (lambda m: hostile.exr_claiming(m / "claim.exr"), "20000×20000"),
    "exr_wide_display": (lambda m: hostile.exr_wide_display(m / "wide.exr"), "30000×30000"),
    "exr_damaged": (lambda m: hostile.exr_damaged(m / "damaged.exr"), "pixel data is damaged"),
    "ffv1_flipped": (lambda m: hostile.ffv1_flipped(m / "flipped.mkv"), "frame 1 is damaged"),
    "ffv1_claims_8192": (lambda m: hostile.ffv1_claiming(m / "claims.mkv"), "8192x8192"),
    "avi_claims_99999": (lambda m: hostile.avi_claiming(m / "many.avi"), "claims 99999 frames, but 9"),
}
ONLY_AS_SOURCE = {"avi_claims_99999"}  # as a matte it is read over the source's 9 frames, which it holds


@pytest.mark.parametrize("case", HOSTILE)
def test_a_hostile_file_named_by_path_is_refused_naming_the_client_s_path(app, media, case):
    build, words = HOSTILE[case]
    path = build(media)
    roles = [by_path(path, media / "matte.png")]
    if case not in ONLY_AS_SOURCE:
        roles.append(by_path(media / "source.mkv", path))
    for messages in roles:
        with pytest.raises(grpc.RpcError) as refused:
            submit_raw(app, messages, timeout=60)
        error = refused.value
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
        assert words in error.details() and str(path) in error.details()
        assert ".media-view" not in error.details() and str(app.store.root) not in error.details()
    assert states(app) == {} and not any(app.store.incoming_dir.iterdir()) and app.store.reserved_bytes() == 0
    assert app.admission.validating == 0 and healthy(app)


def test_a_client_that_gives_up_while_its_file_is_checked_leaves_no_job_and_no_busy_worker(
    tmp_path, media, monkeypatch
):
    hostile.long_gop(media / "gop.mp4", frames=300)
    app = start(tmp_path / "state", media_roots=[str(media)], calls=CallLimits(max_validations=1))
    real = checks.iter_frames
    checking, gone = threading.Event(), threading.Event()
    events: list[str] = []

    def gated(info, start, end):
        """The first check decodes one frame, then waits for the test; every check says when it runs."""
        first = not events
        events.append("start")
        for count, frame in enumerate(real(info, start, end)):
            yield frame
            if first and count == 0:
                checking.set()
                gone.wait(60)
            events.append("frame" if first else "other")

    monkeypatch.setattr(checks, "iter_frames", gated)
    stub, metadata = raw_stub(app)
    try:
        gives_up = stub.SubmitEdit.future(
            iter(by_path(media / "gop.mp4", media / "matte.png", "gives-up")), metadata=metadata, timeout=60
        )
        assert checking.wait(60)
        gives_up.cancel()
        wait_for(lambda: app.admission.uploads.active == 0)  # the call is over for the server too
        assert app.admission.validating == 1  # but its thread is still in the check: the slot stays taken
        patient = stub.SubmitEdit.future(
            iter(by_path(media / "gop.mp4", media / "matte.png", "patient")), metadata=metadata, timeout=120
        )
        wait_for(lambda: app.admission.validations_waiting == 1)
        assert events == ["start"] and healthy(app)  # nothing else reads files meanwhile; the server answers
        gone.set()
        assert patient.result(timeout=120).job_id == "patient"
        assert (
            events[:3] == ["start", "frame", "start"] and events.count("frame") == 1
        )  # one frame of 300, then stopped
        assert "gives-up" not in states(app) and app.store.reserved_bytes() == 0
        assert app.admission.validating == 0 and not any(app.store.incoming_dir.iterdir())
        app.runner.cancel("patient")
    finally:
        gone.set()
        app.stop(grace=0)


def test_bytes_that_do_not_parse_get_invalid_argument_and_one_log_line(app, caplog):
    caplog.set_level(logging.INFO)
    channel = grpc.insecure_channel(app.address)
    _, metadata = raw_stub(app)
    calls = {
        "/grpc.health.v1.Health/Check": channel.unary_unary("/grpc.health.v1.Health/Check"),
        "/kvlock.v1.Editor/ListJobs": channel.unary_unary("/kvlock.v1.Editor/ListJobs"),
        "/kvlock.v1.Editor/CancelJob": channel.unary_unary("/kvlock.v1.Editor/CancelJob"),
        "/kvlock.v1.Editor/WatchJob": lambda data, **kw: list(
            channel.unary_stream("/kvlock.v1.Editor/WatchJob")(data, **kw)
        ),
        "/kvlock.v1.Editor/SubmitEdit": lambda data, **kw: channel.stream_unary("/kvlock.v1.Editor/SubmitEdit")(
            iter([data]), **kw
        ),
    }
    try:
        for _ in range(4):
            for method, call in calls.items():
                with pytest.raises(grpc.RpcError) as refused:
                    call(b"\xff\xff\xff\xff", metadata=metadata, timeout=10)
                assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
                assert "is not a valid" in refused.value.details()
    finally:
        channel.close()
    lines = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(lines) == 1 and len(lines[0].getMessage()) < 300 and lines[0].exc_info is None
    assert not [r for r in caplog.records if r.exc_info is not None or "Traceback" in r.getMessage()]
    assert healthy(app)


def test_the_rate_limited_log_counts_what_it_leaves_out():
    now = [0.0]
    logged: list[str] = []

    class Sink:
        def warning(self, fmt, *args):
            logged.append(fmt % args)

    note = RateLimitedLog(Sink(), every=60.0, clock=lambda: now[0])
    assert [note("bad") for _ in range(5)] == [True, False, False, False, False]
    now[0] = 61.0
    assert note("bad again") and logged == ["bad", "bad again (4 more not logged in the last 60 s)"]


@pytest.mark.parametrize("tag", ["zz:99:99:99", "x" * 9_000_000])
def test_a_file_s_bad_timecode_is_ignored_with_a_warning_and_never_stored(app, media, tag):
    source = hostile.ffv1_clip(media / "tagged.mkv", 5, timecode=tag)
    submit_raw(app, by_path(source, media / "matte.png", "tagged"))
    wait_for(lambda: states(app)["tagged"] in ("succeeded", "failed"), timeout=300)
    record = app.store.get("tagged")
    assert record.state.value == "succeeded", record.message
    assert record.spec.timecode is None and len(record.spec.to_json()) < 10_000
    trace = json.loads((app.store.folder("tagged") / "trace.json").read_text())
    assert trace["timecode"] is None
    assert any("is not a timecode at 24 fps" in w and len(w) < 300 for w in trace["warnings"]), trace["warnings"]
    stub, metadata = raw_stub(app)
    listed = stub.ListJobs(pb.ListJobsRequest(), metadata=metadata, timeout=10)
    assert [j.job_id for j in listed.jobs] == ["tagged"]
    assert list(stub.WatchJob(pb.WatchJobRequest(job_id="tagged"), metadata=metadata, timeout=10))[-1].state


def test_a_header_timecode_that_is_not_one_is_refused(app, media):
    for text, words in (("zz:99:99:99", "not a timecode"), ("1" * 10_000, "timecode is 10000 characters")):
        with pytest.raises(grpc.RpcError) as refused:
            submit_raw(app, by_path(media / "matte.png", media / "matte.png", timecode=text))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in refused.value.details()


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="the kernel's own accounting is read from /proc")
def test_hostile_files_cost_the_server_almost_no_memory(tmp_path, media):
    for build, _ in HOSTILE.values():
        build(media)
    proc, address, token = spawn_server(tmp_path / "state", "--media-root", str(media))
    try:
        channel = grpc.insecure_channel(address)
        from kvlock_wire import editor_pb2_grpc as pb_grpc

        stub, metadata = pb_grpc.EditorStub(channel), (("authorization", f"Bearer {token}"),)
        stub.ListJobs(pb.ListJobsRequest(), metadata=metadata, timeout=30)
        idle = _peak_rss(proc.pid)
        for path in sorted(media.iterdir()):
            if path.name in ("matte.png", "source.mkv") or ".clean." in path.name:
                continue
            with pytest.raises(grpc.RpcError) as refused:
                stub.SubmitEdit(iter(by_path(path, media / "matte.png", "x")), metadata=metadata, timeout=120)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (path, refused.value.details())
        grown = _peak_rss(proc.pid) - idle
        assert grown < 256 * 1024**2, f"{grown / 2**20:.0f} MiB over idle"
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        channel.close()
    finally:
        proc.kill()
        proc.wait()


def test_kvlock_submit_by_path_takes_a_file_whose_timecode_tag_is_not_one(app, media, capfd):
    from kvlock_cli.main import main as kvlock_main

    source = hostile.ffv1_clip(media / "tagged.mkv", 5, timecode="99:99:99:99")
    code = kvlock_main(
        [
            "submit", "--server", app.address, "--token", app.token, "--input", str(source),
            "--matte", str(media / "matte.png"), "--prompt", "a red ball", "--model", MODEL, "--steps", "2",
            "--path", "--job-id", "cli-tagged", "--json",
        ]
    )  # fmt: skip
    events = [json.loads(line) for line in capfd.readouterr().out.splitlines()]
    assert code == 0 and "cli-tagged" in states(app)
    assert any("'99:99:99:99' is not a timecode" in e.get("text", "") for e in events)
    app.runner.cancel("cli-tagged")

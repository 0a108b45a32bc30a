"""A live server on loopback for tests, and raw stub access for requests the bridge would never send."""

from __future__ import annotations

import time
from pathlib import Path

import grpc

from kvlock_bridge import Client
from kvlock_server.app import App, ServerConfig, create_server
from kvlock_wire import editor_pb2 as pb
from kvlock_wire import editor_pb2_grpc as pb_grpc


def start(state_dir: Path, **options) -> App:
    return create_server(ServerConfig(port=0, state_dir=state_dir, **options))


def client(app: App, token: str | None = "use-app") -> Client:
    return Client(app.address, app.token if token == "use-app" else token)


def raw_stub(app: App) -> tuple[pb_grpc.EditorStub, tuple]:
    channel = grpc.insecure_channel(app.address)
    return pb_grpc.EditorStub(channel), (("authorization", f"Bearer {app.token}"),)


def wait_for(predicate, timeout: float = 120.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not reached in time")


def step_of(live) -> int:
    """The step a running job reported last (0 before its first, as a fresh run reads)."""
    return live.progress.step if live.progress is not None else 0


def done_steps(update) -> int:
    """The bridge's update as the number of its denoising step (-1 while not denoising)."""
    return update.denoising.step if update.denoising is not None else -1


def total_of(update) -> int:
    return update.denoising.total if update.denoising is not None else 0


def states(app: App) -> dict[str, str]:
    return {r.job_id: r.state.value for r in app.store.list(limit=10_000)}


def header(job_id: str = "job-1", frames: int = 9, height: int = 48, width: int = 64, **fields) -> pb.EditHeader:
    base = dict(
        job_id=job_id,
        model="tiny",
        prompt="a red ball",
        settings=pb.Settings(steps=2),
        source_inline=pb.InlineClip(frames=frames, width=width, height=height, format=pb.RGB8),
        matte_inline=pb.InlineClip(frames=frames, width=width, height=height, format=pb.GRAY8),
    )
    base.update(fields)
    return pb.EditHeader(**base)


def chunks(track: int, data: bytes, size: int = 4096) -> list[pb.SubmitEditRequest]:
    return [
        pb.SubmitEditRequest(chunk=pb.MediaChunk(track=track, sequence=i, data=data[o : o + size]))
        for i, o in enumerate(range(0, len(data), size))
    ]


def upload(head: pb.EditHeader, frames, matte, size: int = 65536) -> list[pb.SubmitEditRequest]:
    """A whole submission: the header, then every byte of an inline source and matte."""
    messages = [pb.SubmitEditRequest(header=head)]
    if head.WhichOneof("source") == "source_inline":
        messages += chunks(pb.SOURCE, frames.tobytes(), size)
    if head.WhichOneof("matte") == "matte_inline":
        messages += chunks(pb.MATTE, matte.tobytes(), size)
    return messages


def submit_raw(app: App, messages, timeout: float = 60):
    stub, metadata = raw_stub(app)
    return stub.SubmitEdit(iter(messages), metadata=metadata, timeout=timeout)


class StopsAfterTakeOne:
    """An editor that, like an editor clicking Cancel while take 1 is saved, asks to stop once take 1 is done."""

    def __init__(self, editor) -> None:
        self.editor = editor

    def edit_takes(self, request, progress=None, cancel=None, previews=None, finished=None):
        def handed(result):
            finished(result)
            cancel.set()

        return self.editor.edit_takes(request, progress, cancel, previews, handed)


def stop_after_take_one(app: App, monkeypatch) -> None:
    """Make the server's jobs cancel themselves right after their first take is written."""
    real = app.executor.editor
    monkeypatch.setattr(app.executor, "editor", lambda model, slot=0: StopsAfterTakeOne(real(model, slot)))

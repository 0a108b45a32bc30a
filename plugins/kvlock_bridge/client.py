"""A connection to a KV-Lock server: every call of the contract, with errors a host can show."""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from kvlock.progress import StepProgress
from kvlock.settings import EditSettings, LoraChoice
from kvlock_wire import CHUNK_BYTES, DEFAULT_ADDRESS, MAX_MESSAGE_BYTES, default_token_file
from kvlock_wire import editor_pb2 as pb
from kvlock_wire import editor_pb2_grpc as pb_grpc

from .clips import ArrayClip, Clip, FileClip, Params, frame_bytes
from .errors import BridgeError, translate

PIXEL_ENUM = {"rgb8": pb.RGB8, "rgb16": pb.RGB16, "gray8": pb.GRAY8, "gray16": pb.GRAY16}
CODEC_ENUM = {"ffv1": pb.FFV1, "prores": pb.PRORES, "png": pb.PNG, "h264": pb.H264, "exr": pb.EXR}
STATE_NAMES = {
    pb.QUEUED: "queued",
    pb.RUNNING: "running",
    pb.SUCCEEDED: "succeeded",
    pb.FAILED: "failed",
    pb.CANCELLED: "cancelled",
}
TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass(frozen=True)
class SubmitResult:
    job_id: str
    state: str
    duplicate: bool
    queue_position: int


@dataclass(frozen=True)
class Progress:
    """A job's state as the server reports it; ``denoising`` is the engine's own step event while it runs
    (None while queued, loading, or finished)."""

    job_id: str
    state: str
    message: str
    queue_position: int
    denoising: StepProgress | None = None

    @property
    def done(self) -> bool:
        return self.state in TERMINAL


def step_progress(u: pb.JobUpdate) -> StepProgress | None:
    """The engine's step event from the wire's message (NaN h on the wire: not measured yet)."""
    if not u.total_steps:
        return None
    return StepProgress(
        window=u.window,
        windows=u.windows,
        step=u.step,
        total=u.total_steps,
        sigma=u.sigma,
        h=None if math.isnan(u.h) else u.h,
        alpha=u.alpha,
        omega=u.omega,
        s_star=u.s_star,
        mode=u.mode,
        seconds=0.0,
        eta_seconds=u.eta_seconds,
        preview_png=u.preview_png,
        take=u.take,
        takes=max(1, u.takes),
        in_turn=u.takes_in_turn,
    )


def read_token(token: str | None = None, token_file: str | os.PathLike | None = None) -> str | None:
    """The token from an argument, ``KVLOCK_TOKEN``, a file, or the local server's default token file."""
    if token:
        return token
    if os.environ.get("KVLOCK_TOKEN"):
        return os.environ["KVLOCK_TOKEN"]
    path = Path(token_file) if token_file else default_token_file()
    return path.read_text().strip() if path.is_file() else None


def settings_message(chosen: EditSettings | dict[str, Any]) -> pb.Settings:
    """The wire's Settings for an ``EditSettings`` or a host's dict of the fields it sets; LoRAs as
    ``LoraChoice``, ``{"name", "weight"}`` or ``"NAME:WEIGHT"`` (checked here, so a typo fails before the upload)."""
    values = dict(chosen.to_dict() if isinstance(chosen, EditSettings) else chosen)
    loras = [LoraChoice.of(item) for item in values.pop("loras", None) or ()]
    settings = pb.Settings(**{k: v for k, v in values.items() if v is not None})
    settings.loras.extend(pb.LoraChoice(name=c.name, weight=c.weight) for c in loras)
    return settings


def _header(job_id: str, source: Clip | FileClip, matte: Clip | FileClip, params: Params) -> pb.EditHeader:
    settings = settings_message(params.settings)
    options = pb.MatteOptions(**{k: v for k, v in params.matte_options.items() if v is not None})
    header = pb.EditHeader(
        job_id=job_id,
        model=params.model,
        prompt=params.prompt,
        settings=settings,
        priority=params.priority,
        matte_options=options,
        rate=pb.Rational(num=params.rate.numerator, den=params.rate.denominator),
        timecode=params.timecode,
        output=pb.OutputSpec(codec=CODEC_ENUM[params.codec], region=params.region, plate=params.plate),
    )
    for clip, inline, file in (
        (source, header.source_inline, header.source_file),
        (matte, header.matte_inline, header.matte_file),
    ):
        if isinstance(clip, FileClip):  # unset bounds stay unset: "no range of its own" is part of the contract
            bounds = {"start": clip.start} if clip.start is not None else {}
            file.CopyFrom(pb.FileClip(path=clip.path, **bounds, **({"end": clip.end} if clip.end else {})))
        else:
            inline.CopyFrom(
                pb.InlineClip(frames=clip.frames, width=clip.width, height=clip.height, format=PIXEL_ENUM[clip.pixel])
            )
    return header


def _chunks(track: int, clip: Clip, chunk_bytes: int) -> Iterator[pb.SubmitEditRequest]:
    sequence = 0
    pending = b""
    for index in range(clip.frames):
        pending += frame_bytes(clip, index)
        while len(pending) >= chunk_bytes:
            yield pb.SubmitEditRequest(chunk=pb.MediaChunk(track=track, sequence=sequence, data=pending[:chunk_bytes]))
            pending, sequence = pending[chunk_bytes:], sequence + 1
    if pending:
        yield pb.SubmitEditRequest(chunk=pb.MediaChunk(track=track, sequence=sequence, data=pending))


class Client:
    """One channel to one server. Thread-safe, like the gRPC channel under it."""

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        token: str | None = None,
        root_certificates: bytes | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.address = address
        self.timeout = timeout
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        if root_certificates is not None:
            self.channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates), options)
        else:
            self.channel = grpc.insecure_channel(address, options)
        self.stub = pb_grpc.EditorStub(self.channel)
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Callable[..., Any], request: Any, timeout: float | None = None) -> Any:
        try:
            return method(request, metadata=self.metadata, timeout=timeout or self.timeout)
        except grpc.RpcError as error:
            raise translate(error, self.address) from None

    def health(self) -> bool:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        try:
            reply = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.RpcError as error:
            raise translate(error, self.address) from None
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def list_models(self) -> list[pb.Model]:
        return list(self._call(self.stub.ListModels, pb.ListModelsRequest()).models)

    def list_loras(self, model: str = "") -> list[pb.Lora]:
        """The LoRAs the server offers; with ``model``, each one's ``loadable`` says whether it fits that model."""
        return list(self._call(self.stub.ListLoras, pb.ListLorasRequest(model=model)).loras)

    def submit(
        self,
        source: Clip | FileClip,
        matte: Clip | FileClip,
        params: Params,
        job_id: str | None = None,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> SubmitResult:
        """Upload the header and any inline frames; return once the server accepted (or refused) the job.

        ``chunk_bytes`` is at most the contract's 1 MiB (``CHUNK_BYTES``): servers refuse larger chunks.
        """
        if not 1 <= chunk_bytes <= CHUNK_BYTES:
            raise BridgeError(f"chunk_bytes must be in [1, {CHUNK_BYTES}] (1 MiB, the contract's limit): {chunk_bytes}")
        job_id = job_id or uuid.uuid4().hex
        header = _header(job_id, source, matte, params)

        def requests() -> Iterator[pb.SubmitEditRequest]:
            yield pb.SubmitEditRequest(header=header)
            for track, clip in ((pb.SOURCE, source), (pb.MATTE, matte)):
                if not isinstance(clip, FileClip):
                    yield from _chunks(track, clip, chunk_bytes)

        reply = self._call(self.stub.SubmitEdit, requests(), timeout=max(self.timeout, 3600))
        return SubmitResult(reply.job_id, STATE_NAMES[reply.state], reply.duplicate, reply.queue_position)

    def watch(self, job_id: str, previews: bool = False) -> Iterator[Progress]:
        """Progress updates until the job ends (the last one has ``done`` true)."""
        try:
            for u in self.stub.WatchJob(pb.WatchJobRequest(job_id=job_id, previews=previews), metadata=self.metadata):
                yield Progress(u.job_id, STATE_NAMES[u.state], u.message, u.queue_position, step_progress(u))
        except grpc.RpcError as error:
            raise translate(error, self.address) from None

    def status(self, job_id: str) -> Progress | None:
        """The job's state now, or None when the server does not know the id (the first update of a watch)."""
        call = self.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=self.metadata, timeout=self.timeout)
        try:
            u = next(call, None)
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise translate(error, self.address) from None
        finally:
            call.cancel()
        if u is None:
            raise BridgeError(f"the server ended the watch of {job_id} without a status")
        return Progress(u.job_id, STATE_NAMES[u.state], u.message, u.queue_position, step_progress(u))

    def cancel(self, job_id: str) -> str:
        return STATE_NAMES[self._call(self.stub.CancelJob, pb.CancelJobRequest(job_id=job_id)).state]

    def jobs(self, states: list[str] | None = None, limit: int = 100) -> list[pb.JobInfo]:
        wanted = [k for k, v in STATE_NAMES.items() if states and v in states]
        return list(self._call(self.stub.ListJobs, pb.ListJobsRequest(states=wanted, limit=limit)).jobs)

    def fetch(self, job_id: str, folder: Path, delivery: str = "stream") -> dict[str, Path]:
        """Receive every result file into ``folder`` (created), verifying sizes and checksums; {kind: path}
        of a job of one take (of several: the first take's — :meth:`fetch_takes` has every take's).

        With ``delivery="path"`` the server only names its files, which are copied.
        """
        takes = self.fetch_takes(job_id, folder, delivery)
        return takes[min(takes)] if takes else {}

    def fetch_takes(self, job_id: str, folder: Path, delivery: str = "stream") -> dict[int, dict[str, Path]]:
        """Every result file into ``folder``, as {take: {kind: path}} (take 0: a job of one take; 1…N of
        several). A cancelled job of several takes delivers the takes it finished before the cancel."""
        folder.mkdir(parents=True, exist_ok=True)
        request = pb.FetchResultRequest(job_id=job_id, delivery=pb.PATH if delivery == "path" else pb.STREAM)
        written: dict[int, dict[str, Path]] = {}
        handle, digest, current = None, None, None
        try:
            for chunk in self.stub.FetchResult(request, metadata=self.metadata):
                target = folder / chunk.name
                target.parent.mkdir(parents=True, exist_ok=True)
                top = folder / Path(chunk.name).parts[0]
                written.setdefault(chunk.take, {}).setdefault(chunk.kind, top)
                if chunk.path:
                    shutil.copyfile(chunk.path, target)
                    continue
                if chunk.name != current:
                    handle, digest, current = target.open("wb"), hashlib.sha256(), chunk.name
                if chunk.offset != handle.tell():
                    raise BridgeError(f"{chunk.name}: piece at offset {chunk.offset}, expected {handle.tell()}")
                handle.write(chunk.data)
                digest.update(chunk.data)
                if chunk.last:
                    handle.close()
                    if target.stat().st_size != chunk.size or digest.hexdigest() != chunk.sha256:
                        raise BridgeError(f"{chunk.name} arrived damaged (size or checksum differs); fetch again")
                    handle, current = None, None
        except grpc.RpcError as error:
            raise translate(error, self.address) from None
        finally:
            if handle is not None:
                handle.close()
        if current is not None:
            raise BridgeError(f"{current} was cut short; fetch again")
        return written


__all__ = ["ArrayClip", "Client", "Progress", "SubmitResult", "read_token"]

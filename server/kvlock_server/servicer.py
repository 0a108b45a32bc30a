"""The ``kvlock.v1.Editor`` service: thin translation between messages and the job store and runner."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import grpc

from kvlock.catalog import list_models
from kvlock.errors import InvalidRequest
from kvlock_wire import CHUNK_BYTES
from kvlock_wire import editor_pb2 as pb
from kvlock_wire import editor_pb2_grpc as pb_grpc

from .executor import Executor
from .job_media import build_request, result_files
from .jobs import ClipSpec, JobSpec, JobState
from .runner import JobRunner
from .security import MediaRoots
from .status_codes import JobNotReadyError, ServerStoppingError, streaming, unary
from .store import JobStore, UnknownJobError
from .wire import STATES, STATES_BACK, Limits, job_info, spec_from_header, update_message

WATCH_POLL = 1.0


def receive_tracks(requests: Iterator[pb.SubmitEditRequest], spec: JobSpec, folder: Path) -> None:
    """Write the uploaded raw frames of each inline track, checking order and size as they arrive."""
    tracks: dict[int, ClipSpec] = {}
    if spec.source.kind == "inline":
        tracks[pb.SOURCE] = spec.source
    if spec.matte.kind == "inline":
        tracks[pb.MATTE] = spec.matte
    handles = {track: open(folder / clip.path, "wb") for track, clip in tracks.items()}  # noqa: SIM115
    received = dict.fromkeys(tracks, 0)
    next_sequence = dict.fromkeys(tracks, 0)
    try:
        for message in requests:
            if message.HasField("header"):
                raise InvalidRequest("a submission has exactly one header, sent first")
            chunk = message.chunk
            name = pb.Track.Name(chunk.track) if chunk.track in pb.Track.values() else str(chunk.track)
            if chunk.track not in tracks:
                raise InvalidRequest(f"chunk for track {name}, which this header does not upload inline")
            if chunk.sequence != next_sequence[chunk.track]:
                raise InvalidRequest(
                    f"{name} chunk out of order: expected sequence {next_sequence[chunk.track]}, got {chunk.sequence}"
                )
            if received[chunk.track] + len(chunk.data) > tracks[chunk.track].nbytes:
                raise InvalidRequest(f"{name} sends more bytes than the header declares ({tracks[chunk.track].nbytes})")
            handles[chunk.track].write(chunk.data)
            received[chunk.track] += len(chunk.data)
            next_sequence[chunk.track] += 1
    finally:
        for handle in handles.values():
            handle.close()
    for track, clip in tracks.items():
        if received[track] != clip.nbytes:
            raise InvalidRequest(
                f"{pb.Track.Name(track)} is incomplete: {received[track]} of {clip.nbytes} bytes arrived"
            )


class EditorServicer(pb_grpc.EditorServicer):
    def __init__(
        self,
        store: JobStore,
        runner: JobRunner,
        executor: Executor,
        roots: MediaRoots,
        limits: Limits,
        model_dirs: list[str],
    ) -> None:
        self.store, self.runner, self.executor = store, runner, executor
        self.roots, self.limits, self.model_dirs = roots, limits, model_dirs

    @unary
    def ListModels(self, request: pb.ListModelsRequest, context: grpc.ServicerContext) -> pb.ListModelsResponse:
        loaded = self.executor.loaded()
        models = [
            pb.Model(
                name=e.name,
                family=e.family,
                location=e.location,
                loadable=e.status.startswith("ok"),
                status=e.status,
                loaded=(e.location if e.location != "embedded" else e.name) in loaded,
            )
            for e in list_models(self.model_dirs)
        ]
        return pb.ListModelsResponse(models=models)

    @unary
    def SubmitEdit(
        self, requests: Iterator[pb.SubmitEditRequest], context: grpc.ServicerContext
    ) -> pb.SubmitEditResponse:
        if not self.runner.accepting:
            raise ServerStoppingError("the server is shutting down and accepts no new jobs; submit again after restart")
        first = next(requests, None)
        if first is None or not first.HasField("header"):
            raise InvalidRequest("the first message of a submission must be its header")
        spec = spec_from_header(first.header, self.roots, self.limits, self.executor.resolve)
        try:
            record = self.store.get(spec.job_id)
            return self._accepted(record.job_id, record.state, duplicate=True)
        except UnknownJobError:
            pass
        self.executor.admit(spec)
        self.store.ensure_room(spec.source.nbytes + spec.matte.nbytes)
        with self.store.staging() as folder:
            receive_tracks(requests, spec, folder)
            build_request(spec, folder)  # the engine's own checks: empty matte, NaN, sizes …
            record, duplicate = self.store.accept(spec, folder)
        self.runner.wake()
        return self._accepted(record.job_id, record.state, duplicate)

    def _accepted(self, job_id: str, state: JobState, duplicate: bool) -> pb.SubmitEditResponse:
        queue = self.store.queue()
        position = queue.index(job_id) + 1 if job_id in queue else 0
        return pb.SubmitEditResponse(job_id=job_id, state=STATES[state], duplicate=duplicate, queue_position=position)

    @streaming
    def WatchJob(self, request: pb.WatchJobRequest, context: grpc.ServicerContext) -> Iterator[pb.JobUpdate]:
        live = self.runner.status(request.job_id)
        if request.previews:
            self.runner.watch_previews(request.job_id, True)
        try:
            yield update_message(request.job_id, live)
            while not live.state.terminal and context.is_active():
                seen = live.version
                live = self.runner.wait_change(request.job_id, seen, WATCH_POLL)
                if live.version != seen or live.state.terminal:
                    yield update_message(request.job_id, live)
        finally:
            if request.previews:
                self.runner.watch_previews(request.job_id, False)

    @streaming
    def FetchResult(self, request: pb.FetchResultRequest, context: grpc.ServicerContext) -> Iterator[pb.ResultChunk]:
        record = self.store.get(request.job_id)
        if record.state != JobState.SUCCEEDED:
            reason = f": {record.message}" if record.message else ""
            raise JobNotReadyError(
                f"job {record.job_id} is {record.state.value}{reason}; only succeeded jobs have results"
            )
        folder = self.store.folder(record.job_id)
        rate = pb.Rational(num=record.spec.rate[0], den=record.spec.rate[1])
        for item in result_files(folder):
            path = folder / item.name
            files = sorted(path.iterdir()) if path.is_dir() else [path]
            for f in files:
                name = str(f.relative_to(folder))
                if request.delivery == pb.PATH:
                    yield pb.ResultChunk(
                        name=name,
                        kind=item.kind,
                        path=str(f.resolve()),
                        size=f.stat().st_size,
                        last=True,
                        rate=rate,
                        timecode=record.spec.timecode or "",
                    )
                    continue
                yield from self._stream_file(f, name, item.kind, rate, record.spec.timecode or "")
        self.store.mark_fetched(record.job_id)

    @staticmethod
    def _stream_file(path: Path, name: str, kind: str, rate: pb.Rational, timecode: str) -> Iterator[pb.ResultChunk]:
        digest = hashlib.sha256()
        size = path.stat().st_size
        offset = 0
        with path.open("rb") as handle:
            while True:
                data = handle.read(CHUNK_BYTES)
                digest.update(data)
                last = offset + len(data) >= size
                yield pb.ResultChunk(
                    name=name,
                    kind=kind,
                    offset=offset,
                    data=data,
                    size=size,
                    last=last,
                    sha256=digest.hexdigest() if last else "",
                    rate=rate,
                    timecode=timecode,
                )
                offset += len(data)
                if last:
                    break

    @unary
    def CancelJob(self, request: pb.CancelJobRequest, context: grpc.ServicerContext) -> pb.CancelJobResponse:
        return pb.CancelJobResponse(state=STATES[self.runner.cancel(request.job_id)])

    @unary
    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsResponse:
        states = {STATES_BACK[s] for s in request.states if s in STATES_BACK} or None
        records = self.store.list(states, request.limit or 100)
        return pb.ListJobsResponse(jobs=[job_info(r) for r in records])

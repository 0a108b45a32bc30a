"""The ``kvlock.v1.Editor`` service: thin translation between messages and the job store and runner.

Every method is a coroutine on the server's event loop (see ``admission`` for the bounds and the pool
that blocking work runs on). Streams are written with ``context.write`` under ``write_timeout``, so a
client that stops reading is dropped instead of holding its slot for good.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import grpc

from kvlock.errors import InvalidRequest, KVLockError
from kvlock.loading.catalog import list_models
from kvlock.loading.lora_catalog import LoraCatalog
from kvlock.loading.lora_check import check_loras_for_model
from kvlock.settings import LoraChoice
from kvlock_wire import CHUNK_BYTES
from kvlock_wire import editor_pb2 as pb
from kvlock_wire import editor_pb2_grpc as pb_grpc

from ..jobs.checks import CheckCancelled, check_upload
from ..jobs.contract import Executor
from ..jobs.media import ResultsMissingError, result_files
from ..jobs.media_roots import MediaRoots
from ..jobs.model import JobRecord, JobSpec, JobState, check_job_id
from ..jobs.runner import JobRunner, LiveStatus
from ..jobs.store import JobStore, Reservation, UnknownJobError
from .admission import Admission, CallTimeoutError
from .malformed import Malformed, MalformedMessageError
from .status_codes import ClientGone, JobNotReadyError, ServerStoppingError, rpc
from .upload import StagedUpload, TrackReceiver
from .watch_feed import ChangeFeed
from .wire import STATES, STATES_BACK, Limits, job_info, lora_message, spec_from_header, update_message

Context = grpc.aio.ServicerContext
HEARTBEAT = 30.0  # a watcher re-reads its job at least this often, whatever it was told
MAX_LIST = 10_000
DELIVERIES = (pb.DELIVERY_UNSPECIFIED, pb.STREAM, pb.PATH)


class EditorServicer(pb_grpc.EditorServicer):
    def __init__(
        self,
        store: JobStore,
        runner: JobRunner,
        executor: Executor,
        roots: MediaRoots,
        limits: Limits,
        model_dirs: list[str],
        admission: Admission,
        feed: ChangeFeed,
        loras: LoraCatalog | None = None,
    ) -> None:
        self.store, self.runner, self.executor = store, runner, executor
        self.loras = loras if loras is not None else LoraCatalog((), tuple(model_dirs))
        self.roots, self.limits, self.model_dirs = roots, limits, model_dirs
        self.admission, self.feed = admission, feed
        self._updates: dict[tuple[str, bool], tuple[LiveStatus, pb.JobUpdate]] = {}

    async def _write(self, context: Context, message: object) -> None:
        try:
            async with asyncio.timeout(self.admission.limits.write_timeout):  # inline: no task per write
                await context.write(message)
        except TimeoutError:
            raise CallTimeoutError(
                f"the client read nothing for {self.admission.limits.write_timeout:g} s; the stream is closed"
            ) from None
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:  # the stream broke under the write: its client went away
            raise ClientGone() from None

    # -- short calls --------------------------------------------------------------------------------

    @rpc
    async def ListModels(self, request: pb.ListModelsRequest, context: Context) -> pb.ListModelsResponse:
        with self.admission.calls.enter():
            return await self.admission.call("ListModels", self._models)

    def _models(self) -> pb.ListModelsResponse:
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

    @rpc
    async def ListLoras(self, request: pb.ListLorasRequest, context: Context) -> pb.ListLorasResponse:
        model = request.model[: self.limits.max_model_name]
        with self.admission.calls.enter():
            return await self.admission.call("ListLoras", self._loras, model)

    def _loras(self, model: str) -> pb.ListLorasResponse:
        location = self.executor.resolve(model) if model else None  # an unknown model: NOT_FOUND, as elsewhere
        listed = []
        for entry in self.loras.entries():
            status, loadable = entry.status, entry.ok
            if location is not None and loadable:
                try:
                    check_loras_for_model(location, (LoraChoice(entry.name),), self.loras)
                    status = f"ok, fits {model}"
                except KVLockError as error:
                    status, loadable = f"does not fit {model}: {error}", False
            listed.append(lora_message(entry, status, loadable))
        return pb.ListLorasResponse(loras=listed)

    def _check_loras(self, location: str, choices: tuple[LoraChoice, ...]) -> None:
        check_loras_for_model(location, choices, self.loras)

    @rpc
    async def CancelJob(self, request: pb.CancelJobRequest, context: Context) -> pb.CancelJobResponse:
        job_id = check_job_id(request.job_id)
        with self.admission.calls.enter():
            state = await self.admission.call("CancelJob", self.runner.cancel, job_id)
        return pb.CancelJobResponse(state=STATES[state])

    @rpc
    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        states = {STATES_BACK[s] for s in request.states if s in STATES_BACK} or None
        limit = min(request.limit or 100, MAX_LIST)
        with self.admission.calls.enter():
            records = await self.admission.call("ListJobs", self.store.list, states, limit)
        return pb.ListJobsResponse(jobs=[job_info(r) for r in records])

    # -- uploads ------------------------------------------------------------------------------------

    @rpc
    async def SubmitEdit(self, requests: object, context: Context) -> pb.SubmitEditResponse:
        limits = self.admission.limits
        with self.admission.uploads.enter():
            try:
                async with asyncio.timeout(limits.upload_timeout):
                    return await self._submit(context)
            except TimeoutError:
                raise CallTimeoutError(
                    f"the upload took longer than {limits.upload_timeout:g} s and was dropped; send a shorter "
                    "range, or name a file the server can read"
                ) from None

    async def _next(self, context: Context) -> pb.SubmitEditRequest | None:
        idle = self.admission.limits.upload_idle_timeout
        try:
            async with asyncio.timeout(idle):
                message = await context.read()
        except TimeoutError:
            raise CallTimeoutError(
                f"no message arrived for {idle:g} s; the upload was dropped (send its chunks without long pauses)"
            ) from None
        if message is grpc.aio.EOF:
            return None
        if isinstance(message, Malformed):
            raise MalformedMessageError(message)
        return message

    async def _submit(self, context: Context) -> pb.SubmitEditResponse:
        if not self.runner.accepting:
            raise ServerStoppingError("the server is shutting down and accepts no new jobs; submit again after restart")
        first = await self._next(context)
        if first is None or not first.HasField("header"):
            raise InvalidRequest("the first message of a submission must be its header")
        run = self.admission.run
        if first.header.HasField("source_file") or first.header.HasField("matte_file"):
            # the server opens and probes the client's files: within the bound on validations
            spec = await self.admission.validate(self.admission.pool.submit, self._spec, first.header)
        else:
            spec = await run(self._spec, first.header)
        try:
            record = await run(self.store.get, spec.job_id)
            return await self._accepted(record.job_id, record.state, duplicate=True)
        except UnknownJobError:
            pass
        await run(self.executor.admit, spec)
        reservation = await run(self.store.reserve, spec.source.nbytes + spec.matte.nbytes)
        receiver = TrackReceiver(spec)
        try:
            folder = await run(self.store.new_staging)
        except BaseException:
            self.store.release(reservation)
            raise
        upload = StagedUpload(self.admission.pool, folder, receiver.tracks)
        cancelled = False
        try:
            await upload.open()
            while (message := await self._next(context)) is not None:
                await upload.write(*receiver.take(message))
            receiver.finish()
            await upload.close()
            record, duplicate = await self.admission.validate(
                upload.submit, self._check_and_accept, spec, folder, reservation
            )
        except asyncio.CancelledError:
            cancelled = True  # the client went away: clean up behind it, without waiting
            raise
        finally:
            cleaned = upload.clean_up(self.store.discard, lambda: self.store.release(reservation))
            if not cancelled:
                await asyncio.wrap_future(cleaned)  # a refused upload has left nothing when the client hears
        await self.admission.run(self.runner.wake)  # it reads the new queue: not on the loop
        return await self._accepted(record.job_id, record.state, duplicate)

    def _spec(self, header: pb.EditHeader, cancel: threading.Event | None = None) -> JobSpec:
        """The header judged (``cancel`` is not looked at: the files it names are read for their headers only)."""
        return spec_from_header(
            header, self.roots, self.limits, self.executor.resolve, self.store.incoming_dir, self._check_loras
        )

    def _check_and_accept(
        self, spec: JobSpec, folder: Path, reservation: Reservation, cancel: threading.Event
    ) -> tuple[JobRecord, bool]:
        """Check the media (empty matte, damaged file …), then accept the job unless its client gave up: a
        cancelled check stops between frames and never reaches the store."""
        check_upload(spec, folder, self.roots, cancel)
        if cancel.is_set():
            raise CheckCancelled()
        return self.store.accept(spec, folder, reservation)

    async def _accepted(self, job_id: str, state: JobState, duplicate: bool) -> pb.SubmitEditResponse:
        live = await self._status(job_id)
        position = live.queue_position if live.state == JobState.QUEUED else 0
        return pb.SubmitEditResponse(job_id=job_id, state=STATES[state], duplicate=duplicate, queue_position=position)

    # -- streams ------------------------------------------------------------------------------------

    async def _status(self, job_id: str) -> LiveStatus:
        """From memory when it can be (running, or queued as of the current queue), else from the store."""
        return self.runner.cached_status(job_id) or await self.admission.run(self.runner.status, job_id)

    @rpc
    async def WatchJob(self, request: pb.WatchJobRequest, context: Context) -> None:
        job_id = check_job_id(request.job_id)
        with self.admission.watchers.enter():
            await self._status(job_id)  # NOT_FOUND before anything else
            if request.previews:
                self.runner.watch_previews(job_id, True)
            try:
                await self._follow(job_id, request.previews, context)
            finally:
                if request.previews:
                    self.runner.watch_previews(job_id, False)

    def _update(self, job_id: str, live: LiveStatus, previews: bool) -> pb.JobUpdate:
        """The message for ``live``, built once and shared by every watcher of the job that sees it."""
        key = (job_id, previews)
        cached = self._updates.get(key)
        if cached is not None and cached[0] is live:
            return cached[1]
        shown = live if previews or live.progress is None else replace(live, progress=live.progress.without_preview())
        message = update_message(job_id, shown)
        if live.state.terminal:
            self._updates.pop(key, None)
        else:
            self._updates[key] = (live, message)
        return message

    async def _follow(self, job_id: str, previews: bool, context: Context) -> None:
        last = None
        while True:
            waiter = self.feed.waiter(job_id)  # before the read: a change after it still wakes us
            try:
                live = await self._status(job_id)
                message = self._update(job_id, live, previews)
                if message is not last and message != last:
                    await self._write(context, message)
                    last = message
                if live.state.terminal:
                    return
            except BaseException:
                self.feed.forget(job_id, waiter)
                raise
            await self.feed.wait(job_id, waiter, HEARTBEAT)

    @rpc
    async def FetchResult(self, request: pb.FetchResultRequest, context: Context) -> None:
        job_id = check_job_id(request.job_id)
        if request.delivery not in DELIVERIES:
            raise InvalidRequest(f"delivery {request.delivery} is unknown; use STREAM or PATH")
        with self.admission.fetches.enter():
            record = await self.admission.call("FetchResult", self.store.get, job_id)
            folder = self.store.folder(job_id)
            kept = record.state == JobState.CANCELLED and await self.admission.call("FetchResult", _kept, folder)
            if record.state != JobState.SUCCEEDED and not kept:
                reason = f": {record.message}" if record.message else ""
                raise JobNotReadyError(
                    f"job {job_id} is {record.state.value}{reason}; only succeeded jobs have results (and "
                    "cancelled jobs, the takes they finished)"
                )
            files = await self.admission.call("FetchResult", _listing, folder, job_id)
            rate = pb.Rational(num=record.spec.rate[0], den=record.spec.rate[1])
            timecode = record.spec.timecode or ""
            for path, name, kind, take in files:
                if request.delivery == pb.PATH:
                    size = await self.admission.run(_size, path, job_id)
                    chunk = pb.ResultChunk(
                        name=name,
                        kind=kind,
                        path=str(path),
                        size=size,
                        last=True,
                        rate=rate,
                        timecode=timecode,
                        take=take,
                    )
                    await self._write(context, chunk)
                    continue
                await self._stream_file(context, path, name, kind, take, rate, timecode, job_id)
            await self.admission.run(self.store.mark_fetched, job_id)

    async def _stream_file(
        self,
        context: Context,
        path: Path,
        name: str,
        kind: str,
        take: int,
        rate: pb.Rational,
        timecode: str,
        job_id: str,
    ) -> None:
        handle = await self.admission.run(_open_result, path, job_id)
        try:
            size = await self.admission.run(_fd_size, handle)
            digest, offset = hashlib.sha256(), 0
            while True:
                data = await self.admission.run(handle.read, CHUNK_BYTES)
                digest.update(data)
                last = offset + len(data) >= size or not data
                await self._write(
                    context,
                    pb.ResultChunk(
                        name=name,
                        kind=kind,
                        take=take,
                        offset=offset,
                        data=data,
                        size=size,
                        last=last,
                        sha256=digest.hexdigest() if last else "",
                        rate=rate,
                        timecode=timecode,
                    ),
                )
                offset += len(data)
                if last:
                    return
        finally:
            self.admission.pool.submit(handle.close)


def _listing(folder: Path, job_id: str) -> list[tuple[Path, str, str, int]]:
    """Every result file as (absolute path, name relative to the job folder, kind, take), or DATA_LOSS."""
    out = []
    for item in result_files(folder, job_id):
        path = folder / item.name
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        out += [(f.resolve(), str(f.relative_to(folder)), item.kind, item.take) for f in files]
    return out


def _kept(folder: Path) -> bool:
    """Whether a cancelled job finished takes before its cancel (they are listed as its results)."""
    return (folder / "results.json").is_file()


def _open_result(path: Path, job_id: str) -> BinaryIO:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise ResultsMissingError(
            f"job {job_id}: {path.name} was removed while it was being fetched (retention, or removed by hand); "
            "nothing more can be fetched: submit the edit again under a new job id"
        ) from None


def _size(path: Path, job_id: str) -> int:
    _open_result(path, job_id).close()
    return path.stat().st_size


def _fd_size(handle: BinaryIO) -> int:
    return os.fstat(handle.fileno()).st_size

"""Receiving a submission's raw frames: the chunk rules, and the staged files they are written to.

The rules are the contract's (``MediaChunk``): chunks of a track arrive in sequence from 0, none larger
than ``CHUNK_BYTES`` (1 MiB), together exactly as many bytes as the header declares. The files are
written on the server's work pool one call after another, so the event loop never waits on a disk;
cleaning up always runs after the last of those calls, so it can never race with a write or with the
move of the folder into the store.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

from kvlock.errors import InvalidRequest
from kvlock_wire import CHUNK_BYTES
from kvlock_wire import editor_pb2 as pb

from ..jobs.model import ClipSpec, JobSpec


def _track_name(track: int) -> str:
    return pb.Track.Name(track) if track in pb.Track.values() else str(track)


class TrackReceiver:
    """Checks each chunk against the header; knows nothing of files or gRPC calls."""

    def __init__(self, spec: JobSpec) -> None:
        self.tracks: dict[int, ClipSpec] = {}
        if spec.source.kind == "inline":
            self.tracks[pb.SOURCE] = spec.source
        if spec.matte.kind == "inline":
            self.tracks[pb.MATTE] = spec.matte
        self.received = dict.fromkeys(self.tracks, 0)
        self.next_sequence = dict.fromkeys(self.tracks, 0)

    def take(self, message: pb.SubmitEditRequest) -> tuple[int, bytes]:
        """The track and bytes of one message, or the error that refuses the submission."""
        if message.HasField("header"):
            raise InvalidRequest("a submission has exactly one header, sent first")
        chunk = message.chunk
        name = _track_name(chunk.track)
        if chunk.track not in self.tracks:
            raise InvalidRequest(f"chunk for track {name}, which this header does not upload inline")
        if chunk.sequence != self.next_sequence[chunk.track]:
            raise InvalidRequest(
                f"{name} chunk out of order: expected sequence {self.next_sequence[chunk.track]}, got {chunk.sequence}"
            )
        if len(chunk.data) > CHUNK_BYTES:
            raise InvalidRequest(
                f"{name} chunk {chunk.sequence} is {len(chunk.data)} bytes; chunks are at most {CHUNK_BYTES} (1 MiB)"
            )
        declared = self.tracks[chunk.track].nbytes
        if self.received[chunk.track] + len(chunk.data) > declared:
            raise InvalidRequest(f"{name} sends more bytes than the header declares ({declared})")
        self.received[chunk.track] += len(chunk.data)
        self.next_sequence[chunk.track] += 1
        return chunk.track, chunk.data

    def finish(self) -> None:
        for track, clip in self.tracks.items():
            if self.received[track] != clip.nbytes:
                raise InvalidRequest(
                    f"{_track_name(track)} is incomplete: {self.received[track]} of {clip.nbytes} bytes arrived"
                )


class StagedUpload:
    """An upload's folder in ``incoming/``, written in order on ``pool``; see the module docstring."""

    def __init__(self, pool: Executor, folder: Path, tracks: dict[int, ClipSpec]) -> None:
        self.pool, self.folder, self.tracks = pool, folder, tracks
        self._handles: dict[int, int] = {}
        self._last: Future | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        """Put ``fn(*args)`` on the pool after every call before it; clean-up waits for it too."""
        self._last = self.pool.submit(fn, *args)
        return self._last

    async def _do(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.wrap_future(self.submit(fn, *args))

    async def open(self) -> None:
        await self._do(self._open_all)

    def _open_all(self) -> None:
        for track, clip in self.tracks.items():
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            self._handles[track] = os.open(self.folder / clip.path, flags, 0o600)

    async def write(self, track: int, data: bytes) -> None:
        await self._do(_write_all, self._handles[track], data)

    async def close(self) -> None:
        await self._do(self._close_all)

    def _close_all(self) -> None:
        while self._handles:
            os.close(self._handles.popitem()[1])

    def clean_up(self, discard: Callable[[Path], None], after: Callable[[], None] = lambda: None) -> Future:
        """Close the files, ``discard`` the folder (a no-op once it was accepted) and call ``after`` —
        once whatever ran last on the pool is done, even if the call was cancelled while it ran. Returns
        a future of that clean-up, for a caller that can wait for it."""
        done: Future = Future()

        def finish() -> None:
            try:
                self._close_all()
                discard(self.folder)
            finally:
                after()
                done.set_result(None)

        def submit() -> None:
            try:
                self.pool.submit(finish)
            except RuntimeError:  # the pool is shut down: the server is stopping
                finish()

        last = self._last
        if last is None or last.done():
            submit()
        else:
            last.add_done_callback(lambda _: submit())
        return done


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]

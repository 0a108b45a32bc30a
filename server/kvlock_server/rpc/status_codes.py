"""One table from the domain's errors to gRPC status codes, and the decorator that applies it."""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from kvlock.errors import InvalidRequest, LoraUnusableError, MediaNotFoundError, ModelLoadError, UnreadableMediaError

from ..jobs.media import ResultsMissingError
from ..jobs.media_roots import TooManyFilesError
from ..jobs.store import StoreFullError, UnknownJobError
from .admission import CallTimeoutError, ServerBusyError
from .wire import OversizedError

log = logging.getLogger("kvlock.server")


class JobNotReadyError(Exception):
    """The job exists but is not in a state that allows the call (e.g. fetching an unfinished job)."""


class ServerStoppingError(Exception):
    """The server is shutting down and takes no new work."""


class ClientGone(Exception):
    """The client of a stream went away; there is nobody left to answer."""


# most specific first
STATUS_CODES: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (UnknownJobError, grpc.StatusCode.NOT_FOUND),
    (MediaNotFoundError, grpc.StatusCode.NOT_FOUND),
    (ModelLoadError, grpc.StatusCode.NOT_FOUND),
    (PermissionError, grpc.StatusCode.PERMISSION_DENIED),
    (StoreFullError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (OversizedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ServerBusyError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (TooManyFilesError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (CallTimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (LoraUnusableError, grpc.StatusCode.FAILED_PRECONDITION),  # the server's LoRA file, not the request, must change
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (UnreadableMediaError, grpc.StatusCode.INVALID_ARGUMENT),
    (JobNotReadyError, grpc.StatusCode.FAILED_PRECONDITION),
    (ResultsMissingError, grpc.StatusCode.DATA_LOSS),
    (ServerStoppingError, grpc.StatusCode.UNAVAILABLE),
)


def status_for(error: BaseException) -> grpc.StatusCode | None:
    for kind, code in STATUS_CODES:
        if isinstance(error, kind):
            return code
    if isinstance(error, OSError) and error.errno == errno.ENAMETOOLONG:
        return grpc.StatusCode.INVALID_ARGUMENT  # a client's name the file system cannot hold
    return None


async def _abort(context: grpc.aio.ServicerContext, error: Exception) -> None:
    code = status_for(error)
    if code is None:
        log.error("internal error", exc_info=error)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}")
    await context.abort(code, str(error))


def rpc(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Answer a handler's typed errors with their status code and message (unary and streaming alike)."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError, grpc.RpcError):
            raise
        except ClientGone:
            return None
        except Exception as error:
            # gRPC keeps the answered error (as the context of its AbortError) after the call: drop the locals
            # of every finished frame it passed through, which may hold a decoded frame of a client's file
            traceback.clear_frames(error.__traceback__)
            if context.done():  # finished under us (the client cancelled): nobody to answer
                return None
            await _abort(context, error)

    return wrapper

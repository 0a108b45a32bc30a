"""One table from the domain's errors to gRPC status codes, and the decorators that apply it."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from kvlock.errors import InvalidRequest, MediaNotFoundError, ModelLoadError, UnreadableMediaError

from .store import StoreFullError, UnknownJobError
from .wire import OversizedError

log = logging.getLogger("kvlock.server")


class JobNotReadyError(Exception):
    """The job exists but is not in a state that allows the call (e.g. fetching an unfinished job)."""


class ServerStoppingError(Exception):
    """The server is shutting down and takes no new work."""


# most specific first
STATUS_CODES: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (UnknownJobError, grpc.StatusCode.NOT_FOUND),
    (MediaNotFoundError, grpc.StatusCode.NOT_FOUND),
    (ModelLoadError, grpc.StatusCode.NOT_FOUND),
    (PermissionError, grpc.StatusCode.PERMISSION_DENIED),
    (StoreFullError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (OversizedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (InvalidRequest, grpc.StatusCode.INVALID_ARGUMENT),
    (UnreadableMediaError, grpc.StatusCode.INVALID_ARGUMENT),
    (JobNotReadyError, grpc.StatusCode.FAILED_PRECONDITION),
    (ServerStoppingError, grpc.StatusCode.UNAVAILABLE),
)


def status_for(error: BaseException) -> grpc.StatusCode | None:
    for kind, code in STATUS_CODES:
        if isinstance(error, kind):
            return code
    return None


def _abort(context: grpc.ServicerContext, error: Exception) -> None:
    code = status_for(error)
    if code is None:
        log.exception("internal error")
        context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}")
    context.abort(code, str(error))


def unary(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except Exception as error:
            if isinstance(error, grpc.RpcError) or type(error).__name__ == "_AbortError":
                raise
            _abort(context, error)

    return wrapper


def streaming(method: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    @functools.wraps(method)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from method(self, request, context)
        except Exception as error:
            if isinstance(error, grpc.RpcError) or type(error).__name__ == "_AbortError":
                raise
            _abort(context, error)

    return wrapper

"""Request bytes that do not parse: one status and one short, rate-limited log line, whatever the method.

gRPC's Python server parses a request with the method's deserializer before the handler runs; when
protobuf refuses the bytes it logs a full traceback (about 700 bytes) and answers UNKNOWN (INTERNAL for a
message read from a stream), for every such request — on the unauthenticated health check too, so anyone who
can reach the port could grow the server's log at will. Here every method's deserializer is wrapped (one
interceptor, for the editor, health and reflection services alike): bytes that do not parse become a
:class:`Malformed` marker instead of an exception, the call is answered INVALID_ARGUMENT ("the request is not
a valid … message"), and the server logs one line, at most once every ``every`` seconds, counting the ones it
left out since.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

from kvlock.errors import InvalidRequest

log = logging.getLogger("kvlock.server")
SHOWN = 160  # characters of the parser's complaint kept in the answer and the log


@dataclass(frozen=True)
class Malformed:
    """What a request's bytes became when they did not parse as ``what``."""

    what: str
    reason: str

    @property
    def message(self) -> str:
        return f"the request is not a valid {self.what} message ({self.reason}); nothing was done"


class MalformedMessageError(InvalidRequest):
    """A message of a stream did not parse (raised where the stream is read)."""

    def __init__(self, malformed: Malformed) -> None:
        super().__init__(malformed.message)


class RateLimitedLog:
    """``log.warning`` at most once every ``every`` seconds; the lines left out are counted in the next."""

    def __init__(self, logger: logging.Logger, every: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.logger, self.every, self.clock = logger, every, clock
        self._lock = threading.Lock()
        self._next = float("-inf")
        self._left_out = 0

    def __call__(self, message: str) -> bool:
        """Log ``message`` now, or count it; return whether it was logged."""
        with self._lock:
            now = self.clock()
            if now < self._next:
                self._left_out += 1
                return False
            left_out, self._left_out, self._next = self._left_out, 0, now + self.every
        more = f" ({left_out} more not logged in the last {self.every:g} s)" if left_out else ""
        self.logger.warning("%s%s", message, more)
        return True


def _parser(parse: Callable[[bytes], Any], method: str, note: RateLimitedLog) -> Callable[[bytes], Any]:
    what = getattr(getattr(getattr(parse, "__self__", None), "DESCRIPTOR", None), "full_name", "request")

    def checked(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as error:  # protobuf's DecodeError, or whatever a parser raises on bad bytes
            said = " ".join(str(error).split()).split(f"'{what}': ", 1)[-1]  # protobuf repeats the type name
            malformed = Malformed(what, said[:SHOWN] or type(error).__name__)
            note(f"refused a malformed {what} on {method} ({len(data)} bytes): {malformed.reason}")
            return malformed

    return checked


def _unary(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behaviour):

        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            if isinstance(request, Malformed):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            async for item in behaviour(request, context):
                yield item

        return stream

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        result = behaviour(request, context)
        return await result if inspect.isawaitable(result) else result

    return call


async def _checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Malformed):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)
        yield request


def _streamed(behaviour: Callable[..., Any]) -> Callable[..., Any]:
    """A handler reading its requests from the iterator gets the refusal from it; one that reads with
    ``context.read()`` meets the :class:`Malformed` marker itself (see ``servicer._next``)."""
    if inspect.isasyncgenfunction(behaviour):

        async def stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async for item in behaviour(_checked(requests, context), context):
                yield item

        return stream

    async def call(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
        result = behaviour(_checked(requests, context), context)
        return await result if inspect.isawaitable(result) else result

    return call


def guarded(handler: Any, method: str, note: RateLimitedLog) -> Any:
    """``handler`` with its requests parsed by :func:`_parser` and :class:`Malformed` ones refused."""
    if handler is None or handler.request_deserializer is None:
        return handler
    kind = (
        ("stream" if handler.request_streaming else "unary")
        + "_"
        + ("stream" if handler.response_streaming else "unary")
    )
    wrap = _streamed if handler.request_streaming else _unary
    return handler._replace(
        request_deserializer=_parser(handler.request_deserializer, method, note),
        **{kind: wrap(getattr(handler, kind))},
    )


class MalformedMessages(grpc.aio.ServerInterceptor):
    """The interceptor: every method of every service gets :func:`guarded`."""

    def __init__(self, every: float = 60.0) -> None:
        self.note = RateLimitedLog(log, every)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        return guarded(await continuation(details), details.method, self.note)

"""The server's guard at the door: the bearer token every call but health must carry.

(Which files the server reads for a client is the other guard: ``media_roots``.)
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import secrets
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from ..jobs.media_roots import MediaRoots

log = logging.getLogger("kvlock.server")
PUBLIC_METHODS = ("/grpc.health.v1.Health/",)
DENIED = (
    "{reason} token: send the metadata 'authorization: Bearer <token>'; the token is in the server's token "
    "file, which `kvlock serve` names when it starts (ask whoever runs the server)"
)


class TokenFileError(Exception):
    """The token file cannot be trusted (another user's, or not a regular file)."""


def load_or_create_token(path: Path) -> tuple[str, bool]:
    """Read the token, or create one readable by this user only. Returns (token, created).

    An existing file must be this user's regular file; one that others could read is made private (0600)
    with a warning, since its token may have been seen: delete the file to get a new one.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        fd = None
    except OSError as error:
        raise TokenFileError(f"cannot use the token file {path} ({error}); it must be a regular file") from None
    if fd is not None:
        with os.fdopen(fd) as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise TokenFileError(f"the token file {path} is not a regular file; remove it")
            if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
                raise TokenFileError(f"the token file {path} belongs to another user; remove it or use --state-dir")
            mode = stat.S_IMODE(info.st_mode)
            if mode & 0o077:
                os.fchmod(handle.fileno(), 0o600)
                log.warning(
                    "the token file %s was readable by others (mode %04o); it is now 0600. Anyone who read it "
                    "has the token: delete the file and restart to make a new one",
                    path,
                    mode,
                )
            token = handle.read().strip()
        if token:
            return token, False
    token = secrets.token_urlsafe(32)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    os.replace(temporary, path)
    return token, True


def token_file_private(path: Path) -> bool:
    """Whether the token file is readable by its owner only (what the server tells its operator)."""
    return not stat.S_IMODE(path.stat().st_mode) & 0o077


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _abort_handler(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny)
    return grpc.unary_unary_rpc_method_handler(deny)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuse every call without ``authorization: Bearer <token>``, health checks excepted.

    The refusal says how to authenticate, not where the token lives on the server's disk.
    """

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method.startswith(PUBLIC_METHODS):
            return await continuation(details)
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        if isinstance(given, bytes):
            given = given.decode(errors="replace")
        if hmac.compare_digest(given.encode(), self._expected):
            return await continuation(details)
        handler = await continuation(details)
        message = DENIED.format(reason="missing" if not given else "wrong")
        return _abort_handler(handler, message) if handler is not None else None


__all__ = ["BearerTokenInterceptor", "MediaRoots", "is_loopback", "load_or_create_token"]

"""The server's two guards: the bearer token every call but health must carry, and the media roots that
bound which files the server will read on a client's behalf.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import grpc

PUBLIC_METHODS = ("/grpc.health.v1.Health/",)


def load_or_create_token(path: Path) -> tuple[str, bool]:
    """Read the token, or create one readable by this user only. Returns (token, created)."""
    if path.is_file():
        token = path.read_text().strip()
        if token:
            return token, False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    os.chmod(path, 0o600)
    return token, True


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _abort_handler(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    def deny(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny)
    return grpc.unary_unary_rpc_method_handler(deny)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    """Refuse every call without ``authorization: Bearer <token>``, health checks excepted."""

    def __init__(self, token: str, where: str) -> None:
        self._expected = f"Bearer {token}".encode()
        self._where = where

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method.startswith(PUBLIC_METHODS):
            return continuation(details)
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(given.encode(), self._expected):
            return continuation(details)
        handler = continuation(details)
        reason = "missing" if not given else "wrong"
        message = f"{reason} token: send 'authorization: Bearer <token>'; the server's token is in {self._where}"
        return _abort_handler(handler, message) if handler is not None else None


class MediaRoots:
    """Folders the server may read from; paths must be absolute, free of '..', and stay inside after
    every symlink is resolved."""

    def __init__(self, roots: Iterable[str | Path]) -> None:
        self.roots = [Path(os.path.realpath(Path(r).expanduser())) for r in roots]

    def check(self, path: str) -> Path:
        if not self.roots:
            raise PermissionError("this server reads no files (it has no --media-root); upload the frames instead")
        candidate = Path(path)
        if not candidate.is_absolute():
            raise PermissionError(f"{path!r}: file paths must be absolute")
        if ".." in candidate.parts:
            raise PermissionError(f"{path!r}: '..' is not allowed in file paths")
        real = Path(os.path.realpath(candidate))
        if not any(real == root or root in real.parents for root in self.roots):
            raise PermissionError(f"{path} is outside the server's media roots")
        return candidate

    def check_all(self, files: Iterable[Path]) -> None:
        for f in files:
            self.check(str(f))

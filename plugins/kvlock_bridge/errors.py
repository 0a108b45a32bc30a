"""Errors a host shows to a person, one per thing they can do about it.

BridgeError
├── ServerUnavailableError   the server is not running or not reachable (start it, check the address)
├── AuthenticationError      the token is missing or wrong (copy it from the server's token file)
├── RequestRejectedError     the server refused the request (its message says what to fix); .code
└── JobFailedError           the job ran and failed or was cancelled; .state, .reason
"""

from __future__ import annotations

import grpc


class BridgeError(Exception):
    pass


class ServerUnavailableError(BridgeError):
    pass


class AuthenticationError(BridgeError):
    pass


class RequestRejectedError(BridgeError):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class JobFailedError(BridgeError):
    def __init__(self, job_id: str, state: str, reason: str) -> None:
        super().__init__(f"job {job_id} {state}: {reason}")
        self.job_id, self.state, self.reason = job_id, state, reason


def translate(error: grpc.RpcError, address: str) -> BridgeError:
    """Map a gRPC failure to the bridge's error a host can explain."""
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    if code == grpc.StatusCode.UNAVAILABLE:
        return ServerUnavailableError(
            f"cannot reach the KV-Lock server at {address} ({details}); is `kvlock serve` running?"
        )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return AuthenticationError(details)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ServerUnavailableError(f"the server at {address} did not answer in time ({details})")
    return RequestRejectedError(details or str(error), code.name if code else "UNKNOWN")

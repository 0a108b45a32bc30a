"""The client side of the KV-Lock contract, shared by every host adapter and headless client.

It knows gRPC and nothing of hosts: a host hands it clips (Source, Matte), parameters and an output path;
it uploads, streams progress, cancels, fetches and writes the result atomically. Importing it never pulls
torch or diffusers.
"""

from .client import Client, Progress, SubmitResult
from .clips import ArrayClip, Clip, FileClip, Params, frames_needed
from .errors import AuthenticationError, BridgeError, JobFailedError, RequestRejectedError, ServerUnavailableError
from .render import RenderResult, TakeOutput, render

__all__ = [
    "ArrayClip",
    "AuthenticationError",
    "BridgeError",
    "Client",
    "Clip",
    "FileClip",
    "JobFailedError",
    "Params",
    "Progress",
    "RenderResult",
    "RequestRejectedError",
    "ServerUnavailableError",
    "SubmitResult",
    "TakeOutput",
    "frames_needed",
    "render",
]

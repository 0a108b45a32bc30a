"""Assembling and running the server: ``create_server(config) -> App`` (address, store, runner …).

The model is loaded once (optionally at start with ``preload``) and kept by the executor; the job store
survives restarts; shutdown stops taking jobs, lets the running one finish for ``grace`` seconds, then
parks it (queued again, so it runs after the next start). The gRPC service runs on an asyncio loop of its
own thread (``event_loop``), with the bounds of ``admission``; everything it creates on disk is private
to the server's user (umask 077 while it runs).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from kvlock.execution.acceleration import Acceleration
from kvlock.loading.lora_catalog import LoraCatalog
from kvlock_wire import MAX_MESSAGE_BYTES, default_state_dir
from kvlock_wire import editor_pb2 as pb
from kvlock_wire import editor_pb2_grpc as pb_grpc

from .executors.inprocess import InProcessExecutor
from .executors.ray_options import RayOptions
from .jobs.contract import Executor
from .jobs.files import private_dir
from .jobs.media_roots import MediaRoots
from .jobs.retention import Retention
from .jobs.runner import JobRunner
from .jobs.store import JobStore
from .rpc.admission import Admission, CallLimits
from .rpc.event_loop import LoopThread
from .rpc.malformed import MalformedMessages
from .rpc.security import BearerTokenInterceptor, TokenFileError, is_loopback, load_or_create_token
from .rpc.servicer import EditorServicer
from .rpc.watch_feed import ChangeFeed
from .rpc.wire import Limits

log = logging.getLogger("kvlock.server")
SERVICE = pb.DESCRIPTOR.services_by_name["Editor"].full_name


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    unix_socket: str | None = None
    state_dir: Path = field(default_factory=default_state_dir)
    model_dirs: list[str] = field(default_factory=list)
    lora_dirs: list[str] = field(default_factory=list)
    media_roots: list[str] = field(default_factory=list)
    device: str = "cpu"
    dtype: str = "float32"
    concurrency: int = 1
    auth: bool = True
    tls_cert: str | None = None
    tls_key: str | None = None
    retention: Retention = field(default_factory=Retention)
    limits: Limits = field(default_factory=Limits)
    calls: CallLimits = field(default_factory=CallLimits)
    max_attempts: int = 3
    preview_every: int = 5
    preload: list[str] = field(default_factory=list)
    acceleration: Acceleration = field(default_factory=Acceleration)
    executor: str = "inprocess"  # or "ray"
    ray: RayOptions = field(default_factory=RayOptions)
    group: list[str] = field(default_factory=list)  # devices that share every job (kvlock serve --gpus)


class ConfigError(Exception):
    """The server refuses to start with this configuration."""


@dataclass
class App:
    server: grpc.aio.Server
    address: str
    store: JobStore
    runner: JobRunner
    executor: Executor
    health: health.aio.HealthServicer
    token: str | None
    token_created: bool
    token_path: Path
    loop: LoopThread
    admission: Admission

    def stop(self, grace: float = 30.0) -> list[str]:
        """Graceful stop: no new jobs, the running one finishes within ``grace`` or is parked."""
        self.loop.run(_set_health(self.health, health_pb2.HealthCheckResponse.NOT_SERVING), timeout=10)
        parked = self.runner.stop(grace)
        self.loop.run(self.server.stop(2.0), timeout=30)
        self.loop.stop()
        self.admission.close()
        self.executor.close()
        self.store.close()
        _PRIVATE.leave()
        return parked


class _PrivateFiles:
    """umask 077 while any server of this process runs; the process's own umask again after the last."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._servers = 0
        self._saved = 0

    def enter(self) -> None:
        with self._lock:
            if self._servers == 0:
                self._saved = os.umask(0o077)
            self._servers += 1

    def leave(self) -> None:
        with self._lock:
            self._servers -= 1
            if self._servers == 0:
                os.umask(self._saved)


_PRIVATE = _PrivateFiles()


async def _set_health(servicer: health.aio.HealthServicer, status: int) -> None:
    await servicer.set(SERVICE, status)
    await servicer.set("", status)


def _raise_open_file_limit() -> None:
    """A job on an image sequence holds every frame's file open while it reads them (``media_roots``)."""
    try:
        import resource
    except ImportError:  # Windows: no such limit
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        with contextlib.suppress(ValueError, OSError):  # as many as it may have, or what it has
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _check_exposure(config: ServerConfig) -> None:
    if config.unix_socket:
        return
    if not is_loopback(config.host):
        if not config.auth:
            raise ConfigError(f"refusing to listen on {config.host} without a token; drop --no-auth")
        if not (config.tls_cert and config.tls_key):
            log.warning(
                "listening on %s without TLS: the token and media cross the network in clear; "
                "pass --tls-cert and --tls-key",
                config.host,
            )


def make_executor(config: ServerConfig, store_root: Path, roots: MediaRoots) -> Executor:
    if config.group:
        if config.executor != "inprocess":
            raise ConfigError(
                "--gpus spreads each job over this machine's GPUs; it does not combine with --executor ray"
            )
        if len(config.group) < 2:
            raise ConfigError(f"--gpus needs at least two GPUs, got {config.group}")
        from .executors.group import GroupExecutor

        return GroupExecutor(
            config.group, config.dtype, config.model_dirs, config.acceleration, roots, config.lora_dirs
        )
    if config.executor == "inprocess":
        return InProcessExecutor(
            config.device,
            config.dtype,
            config.model_dirs,
            config.acceleration,
            config.concurrency,
            roots,
            config.lora_dirs,
        )
    if config.executor == "ray":
        from .executors.ray import RayExecutor  # Ray is needed only by servers that use it

        return RayExecutor(
            config.ray,
            store_root,
            config.device,
            config.dtype,
            config.model_dirs,
            config.acceleration,
            roots,
            config.lora_dirs,
        )
    raise ConfigError(f"unknown executor {config.executor!r}; choose inprocess or ray")


def create_server(config: ServerConfig) -> App:
    _check_exposure(config)
    _PRIVATE.enter()  # the database, uploads and results: this user's only
    try:
        return _create(config)
    except BaseException:
        _PRIVATE.leave()
        raise


def _create(config: ServerConfig) -> App:
    state = private_dir(Path(config.state_dir).expanduser())
    token_path = state / "token"
    try:
        token, created = load_or_create_token(token_path) if config.auth else (None, False)
    except TokenFileError as error:
        raise ConfigError(str(error)) from None
    _raise_open_file_limit()
    store = JobStore(state / "store", config.retention, config.max_attempts)
    requeued = store.recover()
    if requeued:
        log.info("re-queued after restart: %s", ", ".join(requeued))
    roots = MediaRoots(config.media_roots, config.limits.media)  # every file read for a client: these limits
    executor = make_executor(config, store.root, roots)
    for model in config.preload:
        executor.preload(model)
    runner = JobRunner(store, executor, config.preview_every)
    loop = LoopThread()
    admission = Admission(config.calls)
    feed = ChangeFeed(loop)
    runner.subscribe(feed.notify)
    loras = LoraCatalog(tuple(config.lora_dirs), tuple(config.model_dirs))
    servicer = EditorServicer(store, runner, executor, roots, config.limits, config.model_dirs, admission, feed, loras)
    try:
        server, address, health_servicer = loop.run(_start_grpc(config, servicer, token), timeout=60)
    except BaseException:
        loop.stop()
        admission.close()
        executor.close()
        store.close()
        raise
    # torch, diffusers and a loaded model are ~400 000 long-lived objects; a full collection that scans
    # them holds the interpreter for about a second (measured 0.8–1.7 s on a 2-core VM), stalling every
    # call. Frozen, they are never scanned again; what calls allocate is collected as usual.
    gc.freeze()
    # The event loop answers every call; the job threads run long stretches of Python (the engine, the
    # store). Handing the interpreter over every 1 ms instead of 5 keeps the loop's waits short.
    sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))
    runner.start()
    loop.run(_set_health(health_servicer, health_pb2.HealthCheckResponse.SERVING), timeout=10)
    return App(server, address, store, runner, executor, health_servicer, token, created, token_path, loop, admission)


async def _start_grpc(
    config: ServerConfig, servicer: EditorServicer, token: str | None
) -> tuple[grpc.aio.Server, str, health.aio.HealthServicer]:
    calls = config.calls
    server = grpc.aio.server(
        # bytes that do not parse: one status and a rate-limited line, for every service (health included)
        interceptors=[MalformedMessages(), *([BearerTokenInterceptor(token)] if token else [])],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 60_000),  # finds clients that vanished without closing
            ("grpc.keepalive_timeout_ms", 20_000),
        ],
        # a last backstop above the per-kind gates, so health checks always find room
        maximum_concurrent_rpcs=calls.max_watchers + calls.max_uploads + calls.max_fetches + calls.max_calls + 256,
    )
    pb_grpc.add_EditorServicer_to_server(servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    if config.unix_socket:
        address = f"unix:{config.unix_socket}"
        server.add_insecure_port(address)  # under the umask of 077: the socket is this user's only
    else:
        bind = f"{config.host}:{config.port}" if ":" not in config.host else f"[{config.host}]:{config.port}"
        if config.tls_cert and config.tls_key:
            credentials = grpc.ssl_server_credentials(
                [(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())]
            )
            port = server.add_secure_port(bind, credentials)
        else:
            port = server.add_insecure_port(bind)
        address = f"{bind.rsplit(':', 1)[0]}:{port}"
    await server.start()
    return server, address, health_servicer


STOP_MARGIN = 60.0  # seconds beyond --grace that a stop may take before the process exits regardless


def _exit_now(code: int, why: str) -> None:
    """Exit without waiting for anything; the log line is best effort (from a signal handler, the stream may be
    half-way through a write of the main thread's and refuse to be entered again), the exit is not."""
    try:
        log.error("%s; exiting now", why)
        logging.shutdown()
    finally:
        os._exit(code)


def serve_forever(app: App, grace: float) -> None:
    """Block until SIGINT/SIGTERM, then stop gracefully; the process always exits.

    A second signal exits at once; a stop that takes ``STOP_MARGIN`` seconds longer than ``grace`` (a
    job stuck outside any step, a disk that does not answer) exits without waiting further, and so does
    an interpreter that would wait for a stuck thread after the stop. Accepted jobs are safe either way:
    the store is committed, and an interrupted job runs again after the next start.
    """
    done = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        if done.is_set():
            _exit_now(1, f"second {signal.Signals(signum).name} while stopping")
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not done.wait(timeout=3600):
        app.store.sweep()
    watchdog = threading.Timer(grace + STOP_MARGIN, _exit_now, (1, f"the stop took over {grace + STOP_MARGIN:g} s"))
    watchdog.daemon = True
    watchdog.start()
    parked = app.stop(grace)
    watchdog.cancel()
    if parked:
        log.info("parked at shutdown (will run after restart): %s", ", ".join(parked))
    late = threading.Timer(10.0, _exit_now, (0, "a thread outlived the stop"))
    late.daemon = True  # runs while the interpreter waits for other threads at exit, if ever it does
    late.start()

"""Assembling and running the server: ``create_server(config) -> (server, address, app)``.

The model is loaded once (optionally at start with ``preload``) and kept by the executor; the job store
survives restarts; shutdown stops taking jobs, lets the running one finish for ``grace`` seconds, then
parks it (queued again, so it runs after the next start).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from kvlock.acceleration import Acceleration
from kvlock_wire import MAX_MESSAGE_BYTES, default_state_dir
from kvlock_wire import editor_pb2 as pb
from kvlock_wire import editor_pb2_grpc as pb_grpc

from .executor import Executor, InProcessExecutor
from .ray_options import RayOptions
from .runner import JobRunner
from .security import BearerTokenInterceptor, MediaRoots, is_loopback, load_or_create_token
from .servicer import EditorServicer
from .store import JobStore, Retention
from .wire import Limits

log = logging.getLogger("kvlock.server")
SERVICE = pb.DESCRIPTOR.services_by_name["Editor"].full_name


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 50051
    unix_socket: str | None = None
    state_dir: Path = field(default_factory=default_state_dir)
    model_dirs: list[str] = field(default_factory=list)
    media_roots: list[str] = field(default_factory=list)
    device: str = "cpu"
    dtype: str = "float32"
    concurrency: int = 1
    auth: bool = True
    tls_cert: str | None = None
    tls_key: str | None = None
    retention: Retention = field(default_factory=Retention)
    limits: Limits = field(default_factory=Limits)
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
    server: grpc.Server
    address: str
    store: JobStore
    runner: JobRunner
    executor: Executor
    health: health.HealthServicer
    token: str | None
    token_created: bool
    token_path: Path

    def stop(self, grace: float = 30.0) -> list[str]:
        """Graceful stop: no new jobs, the running one finishes within ``grace`` or is parked."""
        self.health.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        parked = self.runner.stop(grace)
        self.server.stop(grace=2.0).wait()
        self.executor.close()
        self.store.close()
        return parked


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


def make_executor(config: ServerConfig, store_root: Path) -> Executor:
    if config.group:
        if config.executor != "inprocess":
            raise ConfigError(
                "--gpus spreads each job over this machine's GPUs; it does not combine with --executor ray"
            )
        if len(config.group) < 2:
            raise ConfigError(f"--gpus needs at least two GPUs, got {config.group}")
        from .group_executor import GroupExecutor

        return GroupExecutor(config.group, config.dtype, config.model_dirs, config.acceleration)
    if config.executor == "inprocess":
        return InProcessExecutor(
            config.device, config.dtype, config.model_dirs, config.acceleration, concurrency=config.concurrency
        )
    if config.executor == "ray":
        from .ray_executor import RayExecutor  # Ray is needed only by servers that use it

        return RayExecutor(config.ray, store_root, config.device, config.dtype, config.model_dirs, config.acceleration)
    raise ConfigError(f"unknown executor {config.executor!r}; choose inprocess or ray")


def create_server(config: ServerConfig) -> App:
    _check_exposure(config)
    state = Path(config.state_dir).expanduser()
    state.mkdir(parents=True, exist_ok=True)
    token_path = state / "token"
    token, created = load_or_create_token(token_path) if config.auth else (None, False)
    store = JobStore(state / "store", config.retention, config.max_attempts)
    requeued = store.recover()
    if requeued:
        log.info("re-queued after restart: %s", ", ".join(requeued))
    executor = make_executor(config, store.root)
    for model in config.preload:
        executor.preload(model)
    runner = JobRunner(store, executor, config.preview_every)
    interceptors = [BearerTokenInterceptor(token, str(token_path))] if token else []
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix="kvlock-rpc"),
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    pb_grpc.add_EditorServicer_to_server(
        EditorServicer(store, runner, executor, MediaRoots(config.media_roots), config.limits, config.model_dirs),
        server,
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    if config.unix_socket:
        address = f"unix:{config.unix_socket}"
        old_umask = os.umask(0o077)
        try:
            server.add_insecure_port(address)
        finally:
            os.umask(old_umask)
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
    server.start()
    runner.start()
    health_servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return App(server, address, store, runner, executor, health_servicer, token, created, token_path)


def serve_forever(app: App, grace: float) -> None:
    """Block until SIGINT/SIGTERM, then stop gracefully."""
    done = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not done.wait(timeout=3600):
        app.store.sweep()
    parked = app.stop(grace)
    if parked:
        log.info("parked at shutdown (will run after restart): %s", ", ".join(parked))

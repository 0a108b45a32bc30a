"""How the server uses a Ray cluster; plain data so the in-process server never imports Ray."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RayOptions:
    address: str | None = None  # None: start a Ray instance on this machine only
    workers: int = 0  # 0: one per GPU in the cluster (CPU device: one per ``cpus_per_worker`` cores)
    cpus_per_worker: float = 1.0
    store_path: str | None = None  # where workers find the job store; default: the server's own path
    object_limit_mb: float = 512  # largest decoded clip + matte sent through the object store
    keep_models: int = 1  # models a worker keeps loaded (GPU memory is the limit)
    start_timeout: float = 300.0  # how long preload waits for workers to come up

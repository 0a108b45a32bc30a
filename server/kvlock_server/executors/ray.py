"""Running jobs on a Ray cluster of GPU workers (``kvlock serve --executor ray``).

The server stays the one place that knows about jobs: the SQLite store holds their state, the queue
decides their order, WatchJob and CancelJob talk to the server as before. Ray only supplies processes on
other machines (one actor per GPU, see ``ray_worker``) and the means to reach them. A job's media takes
the cheapest road that exists: a worker that mounts the job store reads the upload and writes the result
in place, so pixels never pass through the server; a worker that does not gets the decoded clip through
Ray's object store, which is allowed only up to ``object_limit_mb`` so large clips never go that way.
"""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kvlock.errors import InvalidRequest
from kvlock.execution.acceleration import Acceleration
from kvlock.loading.catalog import find_model
from kvlock.media.atomic import atomic_path

from ..jobs.contract import JobControl, ResultFile, WorkerLost
from ..jobs.media import load_job_media, remove_partials
from ..jobs.media_roots import MediaRoots
from ..jobs.model import JobSpec
from .base import Final, JobCancelled, JobDone, Noted, Progressed, WorkOrder, results_of
from .ray_options import RayOptions
from .ray_pool import NoWorkerForJob, Ticket, Worker, WorkerPool
from .ray_worker import STORE_ID_FILE, EditWorker

log = logging.getLogger("kvlock.server")
MB = 1024**2


def media_bytes(spec: JobSpec) -> int:
    """Decoded size of the job's clip and matte, known from the header before any pixel is read."""
    return spec.source.nbytes + spec.matte.nbytes


def store_identity(store_root: Path) -> str:
    """A random id written into the store, so a worker can tell the same store from a look-alike folder."""
    marker = Path(store_root) / STORE_ID_FILE
    if not marker.is_file():
        marker.write_text(uuid.uuid4().hex + "\n")
    return marker.read_text().strip()


class RayClusterUnreachable(ConnectionError):
    """The Ray head named by --ray-address does not answer."""


def connect(address: str | None, own: str = "local") -> None:
    """Join the head at ``address``, or with none start a Ray instance of this server's own.

    Ray's own default (no address) joins whatever cluster ``ray start`` left running on the machine, or the
    one ``RAY_ADDRESS`` names: another user's farm, with their workers and jobs. "local" always starts a
    new instance, which is what docs/ray.md promises for a server without ``--ray-address``.
    """
    import ray

    if address:
        check_reachable(address)
        ray.init(address=address, namespace="kvlock", log_to_driver=True)
    else:
        ray.init(address=own, namespace="kvlock", include_dashboard=False)


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds when the head is not there; Ray itself keeps retrying for minutes."""
    target = address.removeprefix("ray://")
    if target == "auto":
        return
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise RayClusterUnreachable(f"--ray-address {address!r} is not HOST:PORT (e.g. 10.0.0.2:6379)")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise RayClusterUnreachable(
            f"cannot reach the Ray head at {address} ({exc}); start it there with "
            f"`ray start --head --port {port}` (docs/ray.md), or check the address and the firewall"
        ) from None


def _ray_failures() -> tuple[type[BaseException], ...]:
    from ray import exceptions as rx

    return (rx.RayActorError, rx.WorkerCrashedError, rx.ObjectLostError, rx.NodeDiedError)


class RayExecutor:
    def __init__(
        self,
        options: RayOptions,
        store_root: Path,
        device: str = "cuda",
        dtype: str = "bfloat16",
        model_dirs: Iterable[str] = (),
        acceleration: Acceleration | None = None,
        roots: MediaRoots | None = None,
        lora_dirs: Iterable[str] = (),
    ) -> None:
        import ray

        self.options = options
        self.roots = roots or MediaRoots(())
        self.model_dirs = list(model_dirs)
        self.store_root = Path(store_root)
        self.store_path = options.store_path or str(self.store_root)
        self.store_id = store_identity(self.store_root)
        if not ray.is_initialized():
            connect(options.address)
        gpu = device.startswith("cuda")
        resources = ray.cluster_resources()
        count = options.workers or (
            int(resources.get("GPU", 0)) if gpu else int(resources.get("CPU", 0) // options.cpus_per_worker)
        )
        if count < 1:
            raise RuntimeError(
                f"the Ray cluster at {options.address or 'this machine'} offers no "
                f"{'GPU' if gpu else 'CPU'} for a worker; start GPU workers (`ray start --address …`) or pass "
                "--ray-workers"
            )
        actor = ray.remote(EditWorker)
        placement = (
            {"num_gpus": 1, "num_cpus": options.cpus_per_worker} if gpu else {"num_cpus": options.cpus_per_worker}
        )
        worker_device = "cuda" if gpu else device  # Ray shows each actor only its own GPU, as cuda:0

        def spawn(name: str) -> Any:
            return actor.options(max_concurrency=4, max_restarts=0, **placement).remote(
                name,
                worker_device,
                dtype,
                self.model_dirs,
                acceleration,
                self.store_path,
                self.store_id,
                options.keep_models,
                0 if gpu else max(1, int(options.cpus_per_worker)),
                tuple(lora_dirs),
            )

        self.capacity = count
        self.pool = WorkerPool(spawn, count, options.keep_models)
        log.info("Ray executor: %d workers on %s", count, options.address or "a local Ray instance")

    # -- what the service asks ----------------------------------------------------------------------

    def resolve(self, model: str) -> str:
        return find_model(model, self.model_dirs)

    def loaded(self) -> set[str]:
        return self.pool.loaded()

    def preload(self, model: str) -> None:
        """Load ``model`` on every worker that is up within ``start_timeout``."""
        import ray

        key = self.resolve(model)
        workers = self.pool.wait_ready(self.options.start_timeout)
        results = ray.get([w.handle.preload.remote(key, model) for w in workers])
        for worker, loaded in zip(workers, results, strict=True):
            self.pool.note_loaded(worker, loaded)

    def admit(self, spec: JobSpec) -> None:
        """Refuse, before the upload, a clip too large for the object store when no worker sees the store."""
        size = media_bytes(spec)
        if size > self.options.object_limit_mb * MB and self.pool.any_sees_store() is False:
            raise InvalidRequest(
                f"this job's media is {size / MB:.0f} MB decoded; without a job store shared with the Ray "
                f"workers the server sends at most {self.options.object_limit_mb} MB per job through Ray's object "
                f"store. Mount the store ({self.store_root}) on the workers (--ray-store-path if it lies elsewhere "
                "there), send a shorter range, or raise --ray-object-limit-mb"
            )

    # -- what the queue asks ------------------------------------------------------------------------

    def reserve(self, slot: int, timeout: float) -> Ticket | None:
        return self.pool.reserve(timeout)

    def release(self, ticket: Ticket) -> None:
        self.pool.release(ticket)

    def close(self) -> None:
        import ray

        self.pool.close()
        ray.shutdown()

    def run(self, spec: JobSpec, folder: Path, ticket: Ticket, control: JobControl) -> list[ResultFile]:
        import ray

        key = self.resolve(spec.model)
        too_big = media_bytes(spec) > self.options.object_limit_mb * MB
        try:
            worker = self.pool.assign(ticket, key, needs_store=too_big)
        except NoWorkerForJob as reason:
            raise InvalidRequest(
                f"{reason}: this job's media ({media_bytes(spec) / MB:.0f} MB) is over the object-store limit "
                f"({self.options.object_limit_mb} MB); mount the job store on the workers"
            ) from None
        # a worker judges named files as the server does
        order = WorkOrder(
            spec,
            key,
            self.roots.names(),
            "",
            control.preview_every,
            control.previews_wanted(),
            media_limits=self.roots.limits,
        )
        media = None
        if not worker.sees_store:
            media = ray.put(load_job_media(spec, folder, self.roots))  # small by the admission rule
        control.note(f"starting on {worker.label}")
        try:
            final = self._follow(worker, order, media, control)
        except _ray_failures() as error:
            self.pool.lost(worker, _first_line(error))
            remove_partials(folder)
            raise WorkerLost(f"{worker.label} died while running the job ({_first_line(error)})") from None
        self.pool.release(ticket, list(final.loaded))
        # the files of every take finished (all of them, or those before a cancel), where no store is shared
        for name, data in (final.blobs if isinstance(final, JobDone | JobCancelled) else {}).items():
            with atomic_path(folder / name, overwrite=True) as temp:
                temp.write_bytes(data)
        return results_of(final, worker.label)

    def _follow(self, worker: Worker, order: WorkOrder, media: Any, control: JobControl) -> Final:
        """Relay the worker's events to the queue until its final one; relay cancel and previews to it."""
        import ray

        stream = worker.handle.run.options(num_returns="streaming").remote(order, media)
        done = threading.Event()
        relay = threading.Thread(target=self._relay_controls, args=(worker, order, control, done), daemon=True)
        relay.start()
        try:
            for ref in stream:
                event = ray.get(ref)
                if isinstance(event, Progressed):
                    control.note(f"running on {worker.label}")
                    control.progress(event.progress)
                elif isinstance(event, Noted):
                    control.note(event.message)
                else:
                    return event
            raise WorkerLost(f"{worker.label} ended the job without a result")
        finally:
            done.set()
            relay.join()

    @staticmethod
    def _relay_controls(worker: Worker, order: WorkOrder, control: JobControl, done: threading.Event) -> None:
        job_id, previews, cancelled = order.spec.job_id, order.previews, False
        while not done.wait(0.1):
            wanted = control.previews_wanted()
            if control.cancel.is_set() and not cancelled:
                cancelled = True
                worker.handle.control.remote(job_id, cancel=True)
            if wanted != previews:
                previews = wanted
                worker.handle.control.remote(job_id, previews=wanted)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__

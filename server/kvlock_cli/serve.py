"""``kvlock serve``: run the gRPC server until SIGINT/SIGTERM, then stop gracefully."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields
from pathlib import Path

from kvlock.execution.acceleration import PARALLEL_LAYOUTS
from kvlock_server.app import ServerConfig, create_server, serve_forever
from kvlock_server.executors.ray_options import RayOptions
from kvlock_server.jobs.retention import Retention
from kvlock_server.rpc.admission import CallLimits
from kvlock_server.rpc.security import token_file_private
from kvlock_server.rpc.wire import Limits
from kvlock_wire import DEFAULT_PORT, default_state_dir

from .acceleration import acceleration_from_args, add_acceleration_arguments
from .media_flags import add_media_limit_arguments, media_limits_from_args

GB = 1024**3
BOUND_FLAGS = (  # one flag per field of CallLimits
    ("workers", int, "threads for store, file and check work"),
    ("max_calls", int, "short calls at once (ListJobs, CancelJob, ListModels)"),
    ("max_uploads", int, "SubmitEdit streams at once"),
    ("max_fetches", int, "FetchResult streams at once"),
    ("max_watchers", int, "WatchJob streams at once"),
    ("max_validations", int, "uploads whose pixels are checked at once"),
    ("call_timeout", float, "seconds a short call may take"),
    ("upload_idle_timeout", float, "seconds between two messages of an upload"),
    ("upload_timeout", float, "seconds for a whole upload"),
    ("write_timeout", float, "seconds a stream waits for its client to read"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--unix", help="listen on this Unix socket instead of TCP")
    parser.add_argument("--state-dir", type=Path, default=None, help=f"store and token (default {default_state_dir()})")
    parser.add_argument("--model-dir", action="append", default=[], help="folder of models (repeatable)")
    parser.add_argument("--lora-dir", action="append", default=[], help="folder of LoRAs (repeatable)")
    parser.add_argument("--media-root", action="append", default=[], help="folder clients may name files in")
    parser.add_argument("--preload", action="append", default=[], help="load this model at start (repeatable)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--concurrency", type=int, default=1, help="jobs at once on this GPU")
    parser.add_argument("--no-auth", action="store_true", help="no token (refused unless on loopback)")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--max-store-gb", type=float, default=20.0)
    parser.add_argument("--keep-hours", type=float, default=24.0, help="keep fetched results this long")
    parser.add_argument("--max-age-hours", type=float, default=168.0, help="drop unfetched results after this")
    parser.add_argument("--grace", type=float, default=30.0, help="seconds a running job may finish at shutdown")
    parser.add_argument("--preview-every", type=int, default=5)
    parser.add_argument(
        "--max-attempts", type=int, default=3, help="runs of a job interrupted by restarts or lost workers"
    )
    bounds = parser.add_argument_group("bounds on concurrent and long calls (past one: RESOURCE_EXHAUSTED at once)")
    defaults = CallLimits()
    for name, kind, text in BOUND_FLAGS:
        flag = "--" + name.replace("_", "-")
        bounds.add_argument(flag, type=kind, default=getattr(defaults, name), help=f"{text} [%(default)s]")
    add_media_limit_arguments(parser)  # with --max-validations, what checking clients' files may cost at once
    add_acceleration_arguments(parser, compile_default="auto")
    farm = parser.add_argument_group("Ray cluster (--executor ray)")
    farm.add_argument(
        "--executor", choices=("inprocess", "ray"), default="inprocess", help="run jobs here, or on Ray workers"
    )
    farm.add_argument("--ray-address", help="head node, e.g. 10.0.0.2:6379 (default: a Ray instance on this machine)")
    farm.add_argument("--ray-workers", type=int, default=0, help="workers to start (default: one per GPU)")
    farm.add_argument("--ray-cpus-per-worker", type=float, default=1.0, help="CPU cores each worker reserves")
    farm.add_argument("--ray-store-path", help="where the workers see this server's job store, if not the same path")
    farm.add_argument(
        "--ray-object-limit-mb", type=float, default=512, help="largest job sent through Ray's object store"
    )
    farm.add_argument("--ray-keep-models", type=int, default=1, help="models each worker keeps loaded")
    group = parser.add_argument_group("several GPUs, one edit (--gpus)")
    group.add_argument(
        "--gpus",
        type=gpu_list,
        default=[],
        help="spread every job over these CUDA devices of this machine, e.g. 0,1,2,3 (one process per GPU)",
    )
    group.add_argument(
        "--parallel",
        choices=sorted(PARALLEL_LAYOUTS),
        default="ulysses",
        help="how the GPUs share attention: ulysses (all-to-all over heads) or ring (needs --attention cudnn/flash)",
    )


def gpu_list(text: str) -> list[int]:
    """``0,1,2,3`` → [0, 1, 2, 3]; refused unless at least two distinct non-negative indices."""
    try:
        indices = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--gpus takes CUDA device numbers like 0,1,2,3, not {text!r}") from None
    if len(indices) < 2 or len(set(indices)) != len(indices) or min(indices) < 0:
        raise argparse.ArgumentTypeError(f"--gpus needs at least two different device numbers, got {text!r}")
    return indices


def _limits(args: argparse.Namespace) -> Limits:
    media = media_limits_from_args(args)
    return Limits(media=media, max_upload_bytes=media.max_clip_bytes)


def run_serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = ServerConfig(
        host=args.host,
        port=args.port,
        unix_socket=args.unix,
        state_dir=args.state_dir or default_state_dir(),
        model_dirs=args.model_dir,
        lora_dirs=args.lora_dir,
        media_roots=args.media_root,
        device=args.device,
        dtype=args.dtype,
        concurrency=args.concurrency,
        auth=not args.no_auth,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        retention=Retention(int(args.max_store_gb * GB), args.keep_hours * 3600, args.max_age_hours * 3600),
        calls=CallLimits(**{f.name: getattr(args, f.name) for f in fields(CallLimits)}),  # flags of the same names
        limits=_limits(args),
        max_attempts=args.max_attempts,
        preview_every=args.preview_every,
        preload=args.preload,
        acceleration=acceleration_from_args(args, parallel=args.parallel if args.gpus else None),
        executor=args.executor,
        ray=RayOptions(
            address=args.ray_address,
            workers=args.ray_workers,
            cpus_per_worker=args.ray_cpus_per_worker,
            store_path=args.ray_store_path,
            object_limit_mb=args.ray_object_limit_mb,
            keep_models=args.ray_keep_models,
        ),
        group=[f"cuda:{index}" for index in args.gpus],
    )
    app = create_server(config)
    print(f"kvlock: listening on {app.address}", flush=True)
    if app.token_created:
        print(f"kvlock: generated a token (shown once): {app.token}", flush=True)
    if app.token:
        private = "readable by you only" if token_file_private(app.token_path) else "WARNING: readable by others"
        print(f"kvlock: the token is stored in {app.token_path} ({private})", flush=True)
    print("kvlock: health: grpc.health.v1.Health/Check on the same address", flush=True)
    sys.stdout.flush()
    serve_forever(app, args.grace)
    return 0

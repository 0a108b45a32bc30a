"""A soak of the server under heavy and hostile use, on loopback (a benchmark, not a test).

    python bench/soak.py [--seconds 150] [--watchers 500] [--uploaders 3] [--kill-at 0.55] [--json]
    python bench/soak.py --report docs/benchmarks/soak-cpu-2026-12-01.json

Starts ``kvlock serve`` (the tiny model, CPU) as a separate process with a fresh state folder, then from
one asyncio client process, for ``--seconds``:

- ``--watchers`` WatchJob streams, each following a queued or running job to its end, then another
  (a few ask for previews);
- ``--uploaders`` clients submitting small jobs (9×48×64, raw frames, idempotent ids), ``--slow`` clients
  uploading in small chunks with pauses, ``--abandoned`` clients that send a header and a chunk and then
  nothing (the server drops them after ``--idle`` s), ``--vanishing`` clients that disconnect mid-upload;
- a cancel of a random job every ``--cancel-every`` s; and, from a separate prober process (so the load
  generator's own event loop never delays the measurement), a health check every 20 ms and a ListJobs
  every 0.1 s, timed;
- at ``--kill-at`` of the run, a SIGKILL of the server and an immediate restart on the same port and state;
- ``--givers-up`` clients that submit a 3000-frame single-GOP file by path and give up after a second.

Before the load (unless ``--no-hostile``), every hostile file of ``bench/soak_hostile.py`` is sent by path,
case by case, with the server's peak RSS over idle per case, and through ``kvlock edit`` (peak RSS of each
child), printed against the stated bound on checking memory.

Every submission interrupted by the kill is sent again with the same id until the server answers. At
the end the queue drains (at most ``--drain`` s, then what is left is cancelled), every job the server
accepted must be listed exactly once, and every succeeded job's results must be fetchable. Then SIGTERM,
timed. It prints calls per second held, p50/p99/max latency of health and ListJobs per phase, jobs
accepted/lost/duplicated, the server's RSS (sampled every 0.5 s, and its kernel high-water mark, checked
against ``--rss-bound-mb``).
Loopback only; the load is bounded by ``--seconds``, ``--max-jobs`` and the counts above.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kvlock_wire import editor_pb2 as pb
from kvlock_wire import editor_pb2_grpc as pb_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import soak_hostile

TERMINAL = {pb.SUCCEEDED, pb.FAILED, pb.CANCELLED}
RETRY = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}
CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
]


@dataclass
class Stats:
    began: float = field(default_factory=time.time)
    killed_at: float | None = None
    back_at: float | None = None
    health: list[tuple[float, float]] = field(default_factory=list)  # (time, seconds)
    listing: list[tuple[float, float]] = field(default_factory=list)
    failures: Counter = field(default_factory=Counter)  # (call, code) during the run
    calls: list[float] = field(default_factory=list)  # completion time of every finished RPC
    updates: int = 0
    accepted: dict[str, int] = field(default_factory=dict)  # id → times the server said OK
    duplicate_replies: int = 0
    busy_refusals: int = 0
    abandoned_dropped: int = 0
    vanished: int = 0
    slow_done: int = 0
    cancels: int = 0
    watching: int = 0
    watching_peak: int = 0
    rss: list[tuple[float, int]] = field(default_factory=list)  # (time, bytes)
    hwm: list[int] = field(default_factory=list)  # VmHWM of each server process, bytes

    def done(self) -> None:
        self.calls.append(time.time())


class Server:
    """``kvlock serve`` as a child process on a fixed loopback port."""

    def __init__(self, state: Path, port: int, args: argparse.Namespace, media: Path) -> None:
        self.state, self.port, self.args, self.media = state, port, args, media
        self.proc: asyncio.subprocess.Process | None = None
        self.log = open(state.parent / "server.log", "ab")  # noqa: SIM115  (open for the run)

    async def start(self) -> None:
        a = self.args
        command = [
            sys.executable, "-m", "kvlock_cli.main", "serve", "--port", str(self.port),
            "--state-dir", str(self.state), "--upload-idle-timeout", str(a.idle),
            "--max-watchers", str(a.watchers + 100), "--preview-every", "2", "--grace", "5",
            "--media-root", str(self.media),
            *(["--preload", "tiny"] if a.preload else []),
        ]  # fmt: skip
        self.proc = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE, stderr=self.log)
        while True:
            line = (await self.proc.stdout.readline()).decode()
            if not line:
                raise RuntimeError(f"the server exited at start; see {self.log.name}")
            if "health:" in line:
                break
        asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self.proc and (line := await self.proc.stdout.readline()):
            self.log.write(line)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def status(self) -> dict[str, int]:
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return {}
        values = {}
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
        return values


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job_messages(job_id: str, frames: np.ndarray, matte: np.ndarray, steps: int, chunk: int):
    head = pb.EditHeader(
        job_id=job_id,
        model="tiny",
        prompt="a red ball",
        settings=pb.Settings(steps=steps),
        source_inline=pb.InlineClip(frames=9, width=64, height=48, format=pb.RGB8),
        matte_inline=pb.InlineClip(frames=9, width=64, height=48, format=pb.GRAY8),
    )
    out = [pb.SubmitEditRequest(header=head)]
    for track, data in ((pb.SOURCE, frames.tobytes()), (pb.MATTE, matte.tobytes())):
        for i, offset in enumerate(range(0, len(data), chunk)):
            piece = pb.MediaChunk(track=track, sequence=i, data=data[offset : offset + chunk])
            out.append(pb.SubmitEditRequest(chunk=piece))
    return out


class Soak:
    def __init__(self, args: argparse.Namespace, server: Server, token: str) -> None:
        self.args, self.server = args, server
        self.metadata = (("authorization", f"Bearer {token}"),)
        address = f"127.0.0.1:{server.port}"
        self.channels = [grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS) for _ in range(args.channels)]
        self.stats = Stats()
        self.stop = asyncio.Event()
        from kvlock.world.demo_clip import demo_clip  # torch: only the load generator needs it

        self.frames, self.matte = demo_clip(frames=9, height=48, width=64)
        self.open_jobs: list[str] = []  # accepted and not yet seen ending
        self.hostile: dict = {}
        self.gave_up: dict = {"gave_up": 0, "answered_first": {}, "ids": set()}
        self.rng = random.Random(0)
        self.prober: asyncio.subprocess.Process | None = None

    def stub(self, i: int) -> pb_grpc.EditorStub:
        return pb_grpc.EditorStub(self.channels[i % len(self.channels)])

    def failed(self, call: str, error: grpc.aio.AioRpcError) -> None:
        self.stats.failures[(call, error.code().name)] += 1

    # -- load ---------------------------------------------------------------------------------------

    async def submit(self, i: int, job_id: str, messages, pause: float = 0.0, timeout: float = 60) -> bool:
        """Send until the server answers with an acceptance or a refusal that retrying cannot change."""
        for _ in range(200):

            async def requests():
                for m in messages:
                    yield m
                    if pause:
                        await asyncio.sleep(pause)

            try:
                reply = await self.stub(i).SubmitEdit(requests(), metadata=self.metadata, timeout=timeout)
            except grpc.aio.AioRpcError as error:
                self.failed("SubmitEdit", error)
                if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    self.stats.busy_refusals += 1
                if error.code() not in RETRY:
                    return False
                await asyncio.sleep(0.3 + self.rng.random())
                continue
            self.stats.done()
            self.stats.accepted[reply.job_id] = self.stats.accepted.get(reply.job_id, 0) + 1
            self.stats.duplicate_replies += reply.duplicate
            if reply.job_id not in self.open_jobs:
                self.open_jobs.append(reply.job_id)
            return True
        return False

    async def uploader(self, k: int) -> None:
        n = 0
        while not self.stop.is_set() and len(self.stats.accepted) < self.args.max_jobs:
            if len(self.open_jobs) >= self.args.queue:
                await asyncio.sleep(0.5)
                continue
            job_id = f"soak-{k}-{n}"
            n += 1
            await self.submit(k, job_id, job_messages(job_id, self.frames, self.matte, self.args.steps, 65536))
            await asyncio.sleep(self.args.pace)

    def numbered(self, kind: str, k: int, chunk: int = 16384) -> Iterator[tuple[str, list]]:
        """Fresh job ids of one client of one kind, with their messages, until the run stops."""
        n = 0
        while not self.stop.is_set():
            job_id = f"{kind}-{k}-{n}"
            n += 1
            yield job_id, job_messages(job_id, self.frames, self.matte, self.args.steps, chunk)

    async def slow_uploader(self, k: int) -> None:
        for job_id, messages in self.numbered("slow", k):
            if await self.submit(100 + k, job_id, messages, pause=min(1.0, self.args.idle / 4), timeout=120):
                self.stats.slow_done += 1

    async def abandoned(self, k: int) -> None:
        """A header and one chunk, then silence: the server must drop it after its idle timeout."""
        for _, messages in self.numbered("abandoned", k):

            async def requests(messages=messages):
                yield messages[0]
                yield messages[1]
                await asyncio.sleep(3600)

            try:
                await self.stub(200 + k).SubmitEdit(requests(), metadata=self.metadata, timeout=self.args.idle * 4)
            except grpc.aio.AioRpcError as error:
                self.failed("SubmitEdit (abandoned)", error)
                dropped = "no message arrived" in (error.details() or "")
                if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and dropped:
                    self.stats.abandoned_dropped += 1
                else:
                    await asyncio.sleep(0.5)

    async def vanishing(self, k: int) -> None:
        """Start an upload, then disconnect in the middle of it."""
        for _, messages in self.numbered("vanishing", k):

            async def requests(messages=messages):
                for m in messages[:4]:
                    yield m
                    await asyncio.sleep(0.1)
                await asyncio.sleep(3600)

            call = self.stub(300 + k).SubmitEdit(requests(), metadata=self.metadata, timeout=60)
            await asyncio.sleep(0.6)
            call.cancel()
            self.stats.vanished += 1
            await asyncio.sleep(0.5)

    async def watcher(self, k: int) -> None:
        previews = k % 100 == 0
        while not self.stop.is_set():
            if not self.open_jobs:
                await asyncio.sleep(0.2)
                continue
            job_id = self.rng.choice(self.open_jobs[-50:])
            counted = False
            try:
                stream = self.stub(k).WatchJob(
                    pb.WatchJobRequest(job_id=job_id, previews=previews), metadata=self.metadata
                )
                async for update in stream:
                    self.stats.updates += 1
                    if not counted:
                        counted = True
                        self.stats.watching += 1
                        self.stats.watching_peak = max(self.stats.watching_peak, self.stats.watching)
                    if update.state in TERMINAL:
                        with contextlib.suppress(ValueError):
                            self.open_jobs.remove(job_id)
                        break
                    if self.stop.is_set():
                        stream.cancel()
                        break
                self.stats.done()
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.CANCELLED:
                    self.failed("WatchJob", error)
                await asyncio.sleep(0.5)
            finally:
                if counted:
                    self.stats.watching -= 1

    async def canceller(self) -> None:
        while not self.stop.is_set():
            await asyncio.sleep(self.args.cancel_every)
            if not self.open_jobs:
                continue
            try:
                await self.stub(400).CancelJob(
                    pb.CancelJobRequest(job_id=self.rng.choice(self.open_jobs)), metadata=self.metadata, timeout=10
                )
                self.stats.done()
                self.stats.cancels += 1
            except grpc.aio.AioRpcError as error:
                self.failed("CancelJob", error)

    async def sampler(self) -> None:
        while not self.stop.is_set():
            values = self.server.status()
            if "VmRSS" in values:
                self.stats.rss.append((time.time(), values["VmRSS"]))
                self._hwm = values["VmHWM"]
            await asyncio.sleep(0.5)

    async def killer(self) -> None:
        if self.args.kill_at <= 0:
            return
        await asyncio.sleep(self.args.seconds * self.args.kill_at)
        self.stats.hwm.append(getattr(self, "_hwm", 0))
        self.stats.killed_at = time.time()
        self.server.proc.send_signal(signal.SIGKILL)
        await self.server.proc.wait()
        await self.server.start()
        self.stats.back_at = time.time()

    # -- the run ------------------------------------------------------------------------------------

    async def hostile_cases(self) -> None:
        """The hostile files, before the load: by path to the server, then through ``kvlock edit``."""
        files = soak_hostile.build(self.server.media)
        memory = soak_hostile.Memory(self.server.pid)
        rows = await soak_hostile.server_cases(self.stub(0), self.metadata, memory, files, self.server.media)
        self.hostile["server"] = rows
        self.hostile["cli"] = await asyncio.to_thread(soak_hostile.cli_cases, files, self.server.media)
        self.hostile["bound_mb"] = soak_hostile.BOUND_MB
        self.hostile["idle_rss_mb"] = round(memory.now() / 2**20)
        memory.reset_peak()  # the load's high-water mark is its own

    async def run(self) -> dict:
        a = self.args
        if a.hostile:
            await self.hostile_cases()
        probe_log = self.server.state.parent / "probes.jsonl"
        self.prober = prober = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--probe", f"127.0.0.1:{self.server.port}", "--probe-log", str(probe_log),
            env={**os.environ, "KVLOCK_TOKEN": self.metadata[0][1].removeprefix("Bearer ")},
        )  # fmt: skip
        while not probe_log.is_file() or not probe_log.read_text():  # measuring before the load starts
            await asyncio.sleep(0.2)
        self.stats.began = time.time()
        watchers = [asyncio.create_task(self.watcher(k)) for k in range(a.watchers)]
        tasks = [asyncio.create_task(self.uploader(k)) for k in range(a.uploaders)]
        tasks += [asyncio.create_task(self.slow_uploader(k)) for k in range(a.slow)]
        tasks += [asyncio.create_task(self.abandoned(k)) for k in range(a.abandoned)]
        tasks += [asyncio.create_task(self.vanishing(k)) for k in range(a.vanishing)]
        long_file = soak_hostile.giver_up_file(self.server.media) if a.givers_up else None
        tasks += [
            asyncio.create_task(
                soak_hostile.giver_up(self.stub(500 + k), self.metadata, long_file, k, self.stop, self.gave_up)
            )
            for k in range(a.givers_up)
        ]
        tasks += [
            asyncio.create_task(self.canceller()),
            asyncio.create_task(self.sampler()),
        ]
        killer = asyncio.create_task(self.killer())
        await asyncio.sleep(a.seconds)
        await killer
        self.stop.set()
        ended = time.time()
        prober.terminate()
        await prober.wait()
        for line in probe_log.read_text().splitlines():
            kind, at, seconds, code = json.loads(line)
            if code == "OK":
                (self.stats.health if kind == "health" else self.stats.listing).append((at, seconds))
                self.stats.calls.append(at + seconds)
            else:
                self.stats.failures[(kind, code)] += 1
        for task in watchers:  # a watcher of a queued job may wait for an update for a long time
            task.cancel()
        await asyncio.wait(tasks, timeout=a.idle * 4 + 5)  # the longest call left: an abandoned upload's deadline
        for task in tasks:
            task.cancel()
        self.stats.hwm.append(getattr(self, "_hwm", 0))
        drained = await self.drain()
        listed = await self.listing()
        fetchable = await self.check_results(listed)
        began = time.time()
        self.server.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.server.proc.wait(), 120)
        return self.report(ended, drained, listed, fetchable, time.time() - began, code)

    async def drain(self) -> float:
        began = time.time()
        while time.time() - began < self.args.drain:
            listed = await self.listing()
            if all(j.state in TERMINAL for j in listed.values()):
                return time.time() - began
            await asyncio.sleep(1.0)
        for job_id, job in (await self.listing()).items():  # what is left is cancelled, and must end
            if job.state not in TERMINAL:
                await self.stub(0).CancelJob(pb.CancelJobRequest(job_id=job_id), metadata=self.metadata, timeout=10)
        for _ in range(30):  # a cancel takes effect at the next step
            if all(j.state in TERMINAL for j in (await self.listing()).values()):
                break
            await asyncio.sleep(1.0)
        return -1.0

    async def listing(self) -> dict[str, pb.JobInfo]:
        reply = await self.stub(0).ListJobs(pb.ListJobsRequest(limit=10_000), metadata=self.metadata, timeout=30)
        seen: dict[str, pb.JobInfo] = {}
        self._listed_twice = 0
        for job in reply.jobs:
            self._listed_twice += job.job_id in seen
            seen[job.job_id] = job
        return seen

    async def check_results(self, listed: dict[str, pb.JobInfo]) -> tuple[int, int]:
        ok = lost = 0
        for job_id, job in listed.items():
            if job.state != pb.SUCCEEDED:
                continue
            request = pb.FetchResultRequest(job_id=job_id, delivery=pb.PATH)
            try:
                files = [c async for c in self.stub(0).FetchResult(request, metadata=self.metadata, timeout=30)]
                ok += any(c.kind == "video" for c in files)
            except grpc.aio.AioRpcError:
                lost += 1
        return ok, lost

    # -- numbers ------------------------------------------------------------------------------------

    def report(
        self, ended: float, drained: float, listed: dict, fetchable: tuple[int, int], sigterm: float, code: int
    ) -> dict:
        s = self.stats
        phases = {"before kill": (s.began, s.killed_at), "after restart": (s.back_at, ended)}
        if s.killed_at is None:
            phases = {"whole run": (s.began, ended)}
        rows = []
        for name, (a, b) in phases.items():
            health = [d for t, d in s.health if a <= t < b]
            listing = [d for t, d in s.listing if a <= t < b]
            calls = sum(1 for t in s.calls if a <= t < b)
            rows.append(
                {
                    "phase": name,
                    "seconds": round(b - a, 1),
                    "calls_per_s": round(calls / (b - a), 1),
                    "health_ms": _quantiles(health),
                    "listjobs_ms": _quantiles(listing),
                    "rss_peak_mb": round(max((r for t, r in s.rss if a <= t < b), default=0) / 2**20),
                }
            )
        accepted = set(s.accepted)
        states = Counter(pb.JobState.Name(j.state) for j in listed.values())
        ours = {j for j in listed if j.startswith(("soak-", "slow-", "abandoned-", "vanishing-", "hostile-"))}
        ours |= {j for j in listed if j.startswith("gave-up-") and j not in self.gave_up["ids"]}  # answered in time
        return {
            "seconds": self.args.seconds,
            "watchers": self.args.watchers,
            "phases": rows,
            "restart_seconds": round(s.back_at - s.killed_at, 1) if s.killed_at else None,
            "watchers_peak": s.watching_peak,
            "watch_updates": s.updates,
            "jobs": {
                "accepted": len(accepted),
                "lost": len(accepted - set(listed)),
                "duplicated": self._listed_twice + len(set(listed) - ours),
                "accepted_twice_reply_duplicate": s.duplicate_replies,
                "listed_not_acknowledged": len(set(listed) - accepted),
                "states": dict(states),
                "rerun_after_kill": sum(1 for j in listed.values() if j.attempts > 1),
                "results_fetchable": fetchable[0],
                "results_missing": fetchable[1],
            },
            "uploads": {
                "busy_refusals": s.busy_refusals,
                "slow_completed": s.slow_done,
                "abandoned_dropped_by_idle_timeout": s.abandoned_dropped,
                "vanished_mid_upload": s.vanished,
            },
            "cancels": s.cancels,
            "failures": {f"{call} {code}": n for (call, code), n in sorted(s.failures.items())},
            "drain_seconds": round(drained, 1),
            "rss_hwm_mb": [round(h / 2**20) for h in s.hwm],
            "rss_bound_mb": self.args.rss_bound_mb,
            "rss_bound_held": max(s.hwm, default=0) <= self.args.rss_bound_mb * 2**20,
            "sigterm_exit": {"seconds": round(sigterm, 1), "code": code},
            "hostile": {
                **self.hostile,
                "givers_up": {
                    "gave_up": self.gave_up["gave_up"],
                    "answered_first": self.gave_up["answered_first"],
                    "jobs_left": len(self.gave_up["ids"] & set(listed)),
                },
            },
        }


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ms = np.array(values) * 1000
    return {
        "n": len(values),
        "p50": round(float(np.percentile(ms, 50)), 1),
        "p99": round(float(np.percentile(ms, 99)), 1),
        "max": round(float(ms.max()), 1),
    }


def print_table(result: dict, args: argparse.Namespace) -> None:
    seconds, watchers = result.get("seconds", args.seconds), result.get("watchers", args.watchers)
    print(f"# soak, {platform.node()}, {os.cpu_count()} cores, {seconds:g} s, {watchers} watchers")
    print("| phase         | seconds | calls/s | health p50 / p99 / max ms | ListJobs p50 / p99 / max ms | RSS peak |")
    print("|---------------|--------:|--------:|--------------------------:|----------------------------:|---------:|")
    for r in result["phases"]:
        health, listing = (" / ".join(str(q.get(k, "-")) for k in ("p50", "p99", "max")) for q in (
            r["health_ms"], r["listjobs_ms"]
        ))  # fmt: skip
        print(
            f"| {r['phase']:<13} | {r['seconds']:>7} | {r['calls_per_s']:>7} | {health:>25} | {listing:>27} | "
            f"{r['rss_peak_mb']:>5} MB |"
        )
    jobs = result["jobs"]
    print(
        f"jobs: {jobs['accepted']} accepted, {jobs['lost']} lost, {jobs['duplicated']} duplicated; "
        f"final states {jobs['states']}; {jobs['rerun_after_kill']} re-run after the kill; "
        f"{jobs['accepted_twice_reply_duplicate']} resubmissions answered 'duplicate'; "
        f"results fetchable {jobs['results_fetchable']}, missing {jobs['results_missing']}"
    )
    print(
        f"watchers: peak {result['watchers_peak']} streams at once, {result['watch_updates']} updates; "
        f"restart after SIGKILL: {result['restart_seconds']} s; uploads: {result['uploads']}; "
        f"cancels: {result['cancels']}"
    )
    held = "held" if result["rss_bound_held"] else "EXCEEDED"
    print(
        f"server RSS high-water mark per process: {result['rss_hwm_mb']} MB (bound {result['rss_bound_mb']} MB: "
        f"{held}); SIGTERM exit: {result['sigterm_exit']}"
    )
    print(f"refusals and errors seen by clients: {result['failures']}")
    if result.get("hostile"):
        soak_hostile.print_hostile(result["hostile"])


async def main_async(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="kvlock-soak-"))
    (work / "media").mkdir()
    server = Server(work / "state", free_port(), args, work / "media")
    await server.start()
    token = (work / "state" / "token").read_text().strip()
    soak = Soak(args, server, token)
    try:
        return await soak.run()
    finally:
        for child in (server.proc, soak.prober):
            if child is not None and child.returncode is None:
                child.kill()
        for channel in soak.channels:
            await channel.close()
        if args.keep:
            print(f"state, server log and probe log kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def probe(address: str, log: Path) -> None:
    """The prober process: health every 20 ms and ListJobs every 0.1 s, one JSON line per call."""
    channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
    health = health_pb2_grpc.HealthStub(channel)
    stub = pb_grpc.EditorStub(channel)
    metadata = (("authorization", f"Bearer {os.environ['KVLOCK_TOKEN']}"),)
    lock = threading.Lock()

    def loop(kind: str, every: float, call) -> None:
        with log.open("a") as out:
            while True:
                began = time.time()
                try:
                    call()
                    code = "OK"
                except grpc.RpcError as error:
                    code = error.code().name
                with lock:
                    out.write(json.dumps([kind, began, time.time() - began, code]) + "\n")
                    out.flush()
                time.sleep(max(0.0, every - (time.time() - began)))

    threads = [
        threading.Thread(
            target=loop, args=("health", 0.02, lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=2))
        ),
        threading.Thread(
            target=loop,
            args=("ListJobs", 0.1, lambda: stub.ListJobs(pb.ListJobsRequest(limit=100), metadata=metadata, timeout=5)),
        ),
    ]
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # delivered to sigwait below, not mid-line
    for thread in threads:
        thread.daemon = True
        thread.start()
    signal.sigwait({signal.SIGTERM})
    with lock:
        os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150.0, help="length of the load (before the drain)")
    parser.add_argument("--watchers", type=int, default=500)
    parser.add_argument("--uploaders", type=int, default=3)
    parser.add_argument("--slow", type=int, default=2)
    parser.add_argument("--abandoned", type=int, default=4)
    parser.add_argument("--vanishing", type=int, default=2)
    parser.add_argument(
        "--givers-up", type=int, default=3, help="clients that submit a long file and give up after 1 s"
    )
    parser.add_argument(
        "--no-hostile", dest="hostile", action="store_false", help="skip the hostile files before the load"
    )
    parser.add_argument("--channels", type=int, default=8, help="client connections the calls spread over")
    parser.add_argument("--steps", type=int, default=3, help="denoising steps of each small job")
    parser.add_argument("--pace", type=float, default=1.0, help="seconds between one uploader's jobs")
    parser.add_argument("--max-jobs", type=int, default=400)
    parser.add_argument("--queue", type=int, default=20, help="uploaders pause while this many jobs are open")
    parser.add_argument("--cancel-every", type=float, default=3.0)
    parser.add_argument("--idle", type=float, default=5.0, help="the server's --upload-idle-timeout")
    parser.add_argument(
        "--kill-at", type=float, default=0.55, help="fraction of --seconds at which to SIGKILL (0: no kill)"
    )
    parser.add_argument("--drain", type=float, default=60.0, help="seconds to let the queue finish at the end")
    parser.add_argument(
        "--no-preload", dest="preload", action="store_false", help="load the model at the first job, not at start"
    )
    parser.add_argument(
        "--rss-bound-mb", type=int, default=1536, help="the server RSS the run must stay under (tiny model, CPU)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON too")
    parser.add_argument("--keep", action="store_true", help="keep the state folder and the logs of the run")
    parser.add_argument("--report", type=Path, help="reprint the table of a result saved with --json, and exit")
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # internal: run as the prober process
    parser.add_argument("--probe-log", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        probe(args.probe, Path(args.probe_log))
        return
    if args.report:
        print_table(json.loads(args.report.read_text()), args)
        return
    result = asyncio.run(main_async(args))
    print_table(result, args)
    if args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

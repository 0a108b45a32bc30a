"""``kvlock batch CUT --out CUT.kvlock.otio``: every shot of a cut marked ``KV-Lock`` as a server job, and the
cut written back with the results on a track of their own.

The cut is read through OpenTimelineIO (``cut``), each shot becomes a job whose id is derived from what
makes its result — the media files and their frames, the matte, prompt, model and settings — so running
the batch again skips every shot whose result is already beside the output, adopts the jobs the server
still holds, and redoes nothing. Jobs are all queued first, in cut order, by path when the server can read
the media and as uploaded frames when it cannot (``kvlock_bridge.batch``); then followed one by one. A shot
that cannot be made is reported with its reason and the others go on. Ctrl-C cancels every job of the batch
still running or queued and writes no timeline; the results already fetched stay, complete, for a re-run.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from kvlock.errors import InvalidRequest, KVLockError, MediaNotFoundError
from kvlock_bridge import ArrayClip, FileClip, Params
from kvlock_bridge.batch import (
    Advanced,
    Failed,
    Finished,
    Queued,
    QueuedRender,
    QueueEvent,
    derived_job_id,
    file_identity,
    run_queue,
)
from kvlock_bridge.render import SUFFIXES, Outputs, TakeOutput, outputs, planned

from .client import add_connection, connect
from .cut import Cut, CutOptions, Shot, read_cut
from .cut_output import Placed, check_output, with_results, write_timeline
from .progress import Reporter
from .settings_flags import add_setting_arguments, given_settings, settings_from_args

FAILED = 1


def add_batch(parser: argparse.ArgumentParser) -> None:
    add_connection(parser)
    parser.add_argument("cut", help="a timeline any OpenTimelineIO adapter reads: .otio, FCP 7 .xml, .edl …")
    parser.add_argument("--out", required=True, help="the cut with a KV-Lock track of results (.otio or .xml)")
    parser.add_argument("--results", help="folder for the result files (default: beside --out, named after it)")
    parser.add_argument("--prompt", default="", help="for markers that carry none")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--matte-pattern", help="a shot's matte file when no clip above gives one, from its "
                        "source's {folder}, {stem}, {name} and {suffix}: '{folder}/{stem}_matte.mov'")  # fmt: skip
    parser.add_argument("--rate", type=Fraction, help="an EDL's frame rate (24000/1001, 25, 30000/1001 …; default 24)")
    parser.add_argument("--codec", default="ffv1", choices=["ffv1", "prores", "png", "h264"],
                        help="results' codec (EXR plates come back as EXR)")  # fmt: skip
    parser.add_argument("--region", action="store_true", help="also return each edited region with alpha")
    parser.add_argument("--priority", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--json", action="store_true")
    add_setting_arguments(parser)


@dataclass(frozen=True)
class ShotJob:
    """A shot as a server job: its stable id, what it sends and where its files go."""

    number: int  # 1-based, in cut order
    shot: Shot
    job_id: str
    params: Params
    files: Outputs

    @property
    def source(self) -> FileClip:
        media = self.shot.source
        return FileClip("Source", media.path, media.start, media.end)

    @property
    def takes(self) -> list[TakeOutput]:
        """Every take's files (one take: ``files``'s own names; several: ``NAME.take1.mkv`` …)."""
        return planned(self.files.video, self.params)

    def done_before(self) -> bool:
        """Every take's result and companions are beside the output (written whole, so present means complete)."""
        return all(path.exists() for take in self.takes for path in take.paths())


@dataclass
class Tally:
    """What became of the shots: placed results, and each failure's reason."""

    placed: list[Placed] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    earlier: int = 0  # results found from an earlier run

    @property
    def shots_done(self) -> int:
        return sum(p.take == 1 for p in self.placed)


def shot_job_id(shot: Shot, params: Params) -> str:
    """The shot's job id: the same for the same media, frames, matte, prompt, model, settings and output."""
    matte = shot.matte
    recipe = {
        "source": [shot.source.path, shot.source.start, shot.source.end, file_identity(shot.source.path)],
        "matte": [matte.path, matte.start, matte.end, file_identity(matte.path)],
        "prompt": shot.prompt,
        "model": shot.model,
        "settings": shot.settings.to_dict(),
        "output": [params.codec, params.region],
    }
    return derived_job_id(Path(shot.name).stem, recipe)


def plan(cut: Cut, results: Path, args: argparse.Namespace) -> list[ShotJob]:
    jobs = []
    for number, shot in enumerate(cut.shots, 1):
        codec = "exr" if shot.source.scene_linear else args.codec
        media = shot.source
        params = Params(prompt=shot.prompt, model=shot.model, settings=shot.settings, priority=args.priority,
                        codec=codec, region=args.region, rate=media.rate, timecode=media.timecode)  # fmt: skip
        job_id = shot_job_id(shot, params)
        files = outputs(results / f"{job_id}{SUFFIXES[codec]}", codec, args.region)
        jobs.append(ShotJob(number, shot, job_id, params, files))
    return jobs


def upload(job: ShotJob) -> Callable[[], tuple[ArrayClip, ArrayClip]]:
    """The frames to send when the server cannot read the files: read here, if they are here."""

    def frames() -> tuple[ArrayClip, ArrayClip]:
        from kvlock_bridge.local import decode_clips

        for what, clip in (("media", job.source), ("matte", job.shot.matte)):
            if not Path(clip.path).exists():
                raise MediaNotFoundError(f"the {what} {clip.path} is missing: neither this machine nor the server "
                                         "can read it")  # fmt: skip
        if job.shot.source.scene_linear:
            raise InvalidRequest(f"the server cannot read {job.source.path}, and an EXR plate goes by path only: "
                                 "run the server where the plate is, with its folder in --media-root")  # fmt: skip
        return decode_clips(job.source, job.shot.matte)

    return frames


class _Report:
    """The queue's events as the reporter's lines, events and bars, and the tally."""

    def __init__(self, reporter: Reporter, jobs: list[ShotJob], total: int) -> None:
        self.reporter, self.jobs, self.total, self.tally = reporter, jobs, total, Tally()

    def shot(self, job: ShotJob, state: str, text: str, finished: bool, **fields: object) -> None:
        self.reporter.shot(f"shot {job.number}/{self.total} {job.shot.where()}: {text}", finished, number=job.number,
                           name=job.shot.name, state=state, job_id=job.job_id, **fields)  # fmt: skip

    def place(self, job: ShotJob, job_id: str, takes: list[TakeOutput]) -> None:
        self.tally.placed.extend(Placed(job.shot, job_id, t.output, t.take, len(takes)) for t in takes)

    def earlier(self, job: ShotJob) -> None:
        self.tally.earlier += 1
        self.place(job, job.job_id, job.takes)
        self.shot(job, "skipped", f"done in an earlier run: {_names(job.takes)}", True, output=str(job.takes[0].output),
                  outputs=[str(t.output) for t in job.takes])  # fmt: skip

    def __call__(self, event: QueueEvent, queued: list[ShotJob]) -> None:
        job = queued[event.index]
        if isinstance(event, Queued):
            how = "on the server already" if event.adopted else ("uploaded" if event.uploaded else "sent by path")
            self.shot(job, "queued", f"queued as {event.job_id} ({how})", False, attempt=event.job_id)
        elif isinstance(event, Advanced) and event.progress.denoising is not None:
            self.reporter.step(event.progress.denoising, number=job.number)
        elif isinstance(event, Finished):
            takes = list(event.result.takes)
            self.place(job, event.result.job_id, takes)
            self.shot(job, "done", f"done: {_names(takes)}", True, output=str(event.result.output),
                      outputs=[str(t.output) for t in takes])  # fmt: skip
        elif isinstance(event, Failed):
            state = "cancelled" if event.cancelled else "failed"
            self.tally.failed.append((job.shot.where(), event.reason))
            self.shot(job, state, f"{state}: {event.reason}", True, reason=event.reason)


def _names(takes: list[TakeOutput]) -> str:
    if len(takes) == 1:
        return str(takes[0].output)
    return f"{len(takes)} takes, {takes[0].output} … {takes[-1].output.name}"


def _problems(cut: Cut, report: _Report) -> None:
    for problem in cut.problems:
        report.tally.failed.append((problem.where, problem.reason))
        report.reporter.shot(f"{problem.where}: cannot render: {problem.reason}", True, name=problem.name,
                             state="failed", reason=problem.reason, where=problem.where)  # fmt: skip


def results_folder(args: argparse.Namespace, out: Path) -> Path:
    folder = Path(args.results) if args.results else out.with_name(out.name[: -len(out.suffix) or None])
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def run_batch(args: argparse.Namespace, reporter: Reporter) -> int:
    cut_path, out = Path(args.cut), Path(args.out)
    check_output(out, cut_path, args.overwrite)
    settings_from_args(args)  # a bad flag is refused before anything is read
    options = CutOptions(args.prompt, given_settings(args), args.model, args.matte_pattern, args.rate)
    cut = read_cut(cut_path, options)
    if not cut.shots and not cut.problems:
        raise InvalidRequest(f"{cut_path.name} has no KV-Lock markers: mark the shots to edit with a marker named "
                             "KV-Lock (its comment is the prompt)")  # fmt: skip
    jobs = plan(cut, results_folder(args, out), args)
    report = _Report(reporter, jobs, len(jobs))
    reporter.begin_shots(len(jobs) + len(cut.problems), cut=str(cut_path))
    _problems(cut, report)
    queued = []
    for job in jobs:
        if job.done_before():
            report.earlier(job)
        else:
            queued.append(job)
    renders = [QueuedRender(j.source, j.shot.matte, j.params, j.files, j.job_id, upload(j)) for j in queued]
    if renders:
        with connect(args) as client, ctrl_c_raises():
            try:
                run_queue(client, renders, lambda event: report(event, queued))
            except KeyboardInterrupt:
                raise KeyboardInterrupt(
                    f"interrupted: the batch's jobs still queued or running were cancelled and no timeline was "
                    f"written; the {report.tally.shots_done} shots' results already here are kept and a re-run "
                    "reuses them"
                ) from None
    return _finish(cut, out, args.overwrite, report.tally, reporter)


@contextlib.contextmanager
def ctrl_c_raises() -> Iterator[None]:
    """Ctrl-C (SIGINT) stops the batch even where the process was started with SIGINT ignored — a background
    job of a shell script, some farm launchers — which Python would otherwise keep ignoring (``kvlock edit``
    installs its own handler too)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _finish(cut: Cut, out: Path, overwrite: bool, tally: Tally, reporter: Reporter) -> int:
    if not tally.placed:
        reasons = "; ".join(f"{where}: {reason}" for where, reason in tally.failed)
        raise KVLockError(f"no shot of {cut.path.name} could be rendered, so no timeline was written ({reasons})")
    write_timeline(with_results(cut.timeline, tally.placed), out, overwrite)
    done = f"{tally.shots_done} shot(s) done" + (f" ({tally.earlier} from an earlier run)" if tally.earlier else "")
    failed = f", {len(tally.failed)} failed" if tally.failed else ""
    reporter.result(f"wrote {out}: {done}{failed}", output=str(out), done=tally.shots_done, earlier=tally.earlier,
                    failed=[{"shot": where, "reason": reason} for where, reason in tally.failed])  # fmt: skip
    return FAILED if tally.failed else 0

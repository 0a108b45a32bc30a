"""The queue on its own: what a job's state and live progress become for each way a run can end.

The executor here is a script of what a run does — report steps, write a file, fail, lose its worker — so
each outcome is reached on purpose; the real executors run real edits in test_server, test_group_executor
and test_ray_executor.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from kvlock.errors import EditCancelled, InvalidRequest
from kvlock.media.matte import MatteOptions
from kvlock.progress import StepProgress
from kvlock.settings import EditSettings
from kvlock_server.jobs.contract import JobControl, ResultFile, WorkerLost, failure_message
from kvlock_server.jobs.model import ClipSpec, JobSpec, JobState
from kvlock_server.jobs.runner import JobRunner
from kvlock_server.jobs.store import JobStore

from ..support.server_helpers import wait_for

SOURCE = ClipSpec("inline", "source.raw", 2, 8, 8, "rgb8")


def step(i: int, total: int = 3) -> StepProgress:
    return StepProgress(0, 1, i, total, 1.0 - i / total, None, 0.0, 5.0, 1.0, "off", 0.01, 0.0)


class ScriptedExecutor:
    """The executor contract with each run's behaviour given by the test (``script(control)``)."""

    capacity = 1

    def __init__(self, script: Callable[[JobControl], list[ResultFile]]) -> None:
        self.script = script
        self.controls: list[JobControl] = []

    def resolve(self, model: str) -> str:
        return model

    def preload(self, model: str) -> None: ...
    def loaded(self) -> set[str]:
        return set()

    def admit(self, spec: JobSpec) -> None: ...
    def reserve(self, slot: int, timeout: float) -> int:
        return slot

    def release(self, ticket: int) -> None: ...
    def close(self) -> None: ...

    def run(self, spec: JobSpec, folder: Path, ticket: int, control: JobControl) -> list[ResultFile]:
        self.controls.append(control)
        return self.script(control)


def queue(tmp_path: Path, script: Callable[[JobControl], list[ResultFile]], settings: EditSettings | None = None):
    store = JobStore(tmp_path, max_attempts=2)
    job = JobSpec("j", "tiny", "a red ball", SOURCE, SOURCE, settings or EditSettings(), MatteOptions())
    with store.staging() as folder:
        store.accept(job, folder)
    executor = ScriptedExecutor(script)
    runner = JobRunner(store, executor)
    return store, executor, runner


def finish(store: JobStore, runner: JobRunner) -> tuple[JobState, str]:
    runner.start()
    try:
        wait_for(lambda: store.get("j").state.terminal, timeout=30)
    finally:
        runner.stop(grace=1)
    record = store.get("j")
    return record.state, record.message


def test_a_run_publishes_each_step_with_the_executors_note_and_then_succeeds(tmp_path):
    seen = []
    gate = threading.Event()

    def script(control: JobControl) -> list[ResultFile]:
        control.note("running on here")
        for i in range(3):
            control.progress(step(i))
        gate.wait(10)
        return [ResultFile("result.mkv", "video")]

    store, _, runner = queue(tmp_path, script)
    runner.subscribe(lambda job_id: seen.append(runner.live("j")) if job_id == "j" else None)
    runner.start()
    wait_for(lambda: (live := runner.live("j")) is not None and live.progress is not None and live.progress.step == 2)
    live = runner.live("j")
    assert live.state == JobState.RUNNING and live.message == "running on here" and live.progress == step(2)
    gate.set()
    wait_for(lambda: store.get("j").state.terminal)
    runner.stop(grace=1)
    assert store.get("j").state == JobState.SUCCEEDED and runner.live("j") is None
    steps = [s.progress.step for s in seen if s is not None and s.progress is not None]
    assert steps == sorted(steps) and steps[-1] == 2


def test_a_failed_run_fails_the_job_with_a_message_a_person_can_read(tmp_path):
    def script(control: JobControl) -> list[ResultFile]:
        raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")

    store, _, runner = queue(tmp_path, script)
    state, message = finish(store, runner)
    assert state == JobState.FAILED and message.startswith("the GPU ran out of memory")
    assert failure_message(InvalidRequest("matte is empty")) == "matte is empty"


def test_a_cancel_reaches_the_running_job_and_ends_it_cancelled_with_its_step(tmp_path):
    def script(control: JobControl) -> list[ResultFile]:
        control.progress(step(0, 50))
        assert control.cancel.wait(10)
        raise EditCancelled(1, 50)

    store, executor, runner = queue(tmp_path, script)
    runner.start()
    wait_for(lambda: executor.controls and runner.live("j") is not None and runner.live("j").progress is not None)
    assert runner.cancel("j") == JobState.RUNNING  # it stops at the end of its step
    wait_for(lambda: store.get("j").state.terminal)
    runner.stop(grace=1)
    assert (store.get("j").state, store.get("j").message) == (JobState.CANCELLED, "cancelled after step 1 of 50")


def test_a_lost_worker_queues_the_job_again_until_its_attempts_run_out(tmp_path):
    def script(control: JobControl) -> list[ResultFile]:
        raise WorkerLost("worker-1 died")

    store, executor, runner = queue(tmp_path, script)
    state, message = finish(store, runner)
    assert len(executor.controls) == 2 and state == JobState.FAILED and "interrupted 2 times" in message


def test_previews_are_asked_for_only_while_someone_watches_them(tmp_path):
    asked = []
    gate = threading.Event()

    def script(control: JobControl) -> list[ResultFile]:
        asked.append(control.previews(0, 10))
        gate.wait(10)
        asked.append(control.previews(0, 10))
        asked.append(control.previews(1, 10))  # not due: every 5th step and the last
        return []

    store, _, runner = queue(tmp_path, script)
    runner.start()
    wait_for(lambda: asked)
    runner.watch_previews("j", True)
    gate.set()
    wait_for(lambda: store.get("j").state.terminal)
    runner.stop(grace=1)
    assert asked == [False, True, False]

"""The job store on its own: acceptance, the queue's order, reservations, restarts, retention, and stored
specs an older server wrote — SQLite and folders on disk, no server around it."""

from __future__ import annotations

import json

import pytest

from kvlock.media.matte import MatteOptions
from kvlock.settings import EditSettings
from kvlock_server.jobs.model import ClipSpec, JobRecord, JobSpec, JobState
from kvlock_server.jobs.retention import Retention, expired
from kvlock_server.jobs.store import JobStore, StoreFullError

SOURCE = ClipSpec("inline", "source.raw", 2, 8, 8, "rgb8")
MATTE = ClipSpec("inline", "matte.raw", 2, 8, 8, "gray8")


def spec(job_id: str, priority: int = 0, **settings) -> JobSpec:
    return JobSpec(job_id, "tiny", "a red ball", SOURCE, MATTE, EditSettings(**settings), MatteOptions(), priority)


def accept(store: JobStore, job: JobSpec, payload: bytes = b"x" * 10) -> tuple[JobRecord, bool]:
    with store.staging() as folder:
        (folder / "source.raw").write_bytes(payload)
        return store.accept(job, folder)


def test_an_accepted_job_keeps_its_typed_spec_and_an_id_seen_before_is_a_duplicate(tmp_path):
    store = JobStore(tmp_path)
    record, duplicate = accept(store, spec("a", steps=3, tau=0.5))
    assert not duplicate and record.state == JobState.QUEUED
    again = JobStore(tmp_path).get("a").spec  # read back from SQLite by another store
    assert again.settings == EditSettings(steps=3, tau=0.5) and again.matte_options == MatteOptions()
    assert accept(store, spec("a", steps=9))[1] is True
    assert store.get("a").spec.settings.steps == 3  # the first submission stands


def test_the_queue_runs_higher_priority_first_then_in_submission_order(tmp_path):
    store = JobStore(tmp_path)
    for job_id, priority in (("low", 0), ("high", 5), ("low2", 0), ("high2", 5)):
        accept(store, spec(job_id, priority))
    assert store.queue() == ["high", "high2", "low", "low2"]
    claimed = [store.claim_next().job_id for _ in range(4)]
    assert claimed == ["high", "high2", "low", "low2"] and store.claim_next() is None
    assert store.get("high").attempts == 1 and store.get("high").state == JobState.RUNNING


def test_reservations_refuse_what_would_overfill_the_store_until_released(tmp_path):
    store = JobStore(tmp_path, Retention(max_bytes=100))
    first = store.reserve(60)
    with pytest.raises(StoreFullError):
        store.reserve(50)
    store.release(first)
    store.release(store.reserve(50))


def test_a_restart_requeues_running_jobs_until_their_attempts_run_out(tmp_path):
    store = JobStore(tmp_path, max_attempts=2)
    accept(store, spec("j"))
    store.claim_next()
    store.close()
    store = JobStore(tmp_path, max_attempts=2)
    assert store.recover() == ["j"] and store.get("j").state == JobState.QUEUED
    store.claim_next()
    store.close()
    store = JobStore(tmp_path, max_attempts=2)
    assert store.recover() == []
    record = store.get("j")
    assert record.state == JobState.FAILED and "interrupted by a server restart 2 times" in record.message


def test_only_a_queued_job_is_cancelled_by_the_store(tmp_path):
    store = JobStore(tmp_path)
    accept(store, spec("q"))
    accept(store, spec("r"))
    store.claim_next()  # q runs
    assert store.cancel_queued("q") is False and store.cancel_queued("r") is True
    assert store.get("r").state == JobState.CANCELLED


def test_a_stored_setting_this_server_refuses_leaves_the_job_listed_with_the_reason(tmp_path):
    store = JobStore(tmp_path)
    accept(store, spec("old", steps=2))
    stored = json.loads(store.get("old").spec.to_json())
    stored["settings"]["steps"] = 0  # as an older, laxer server might have stored it
    with store._tx() as db:
        db.execute("UPDATE jobs SET spec = ? WHERE job_id = 'old'", (json.dumps(stored),))
    fresh = JobStore(tmp_path)
    [record] = fresh.list()  # listing never breaks on one bad row
    assert "steps must be in [1, 1000]" in record.spec.unreadable
    assert "unreadable" not in json.loads(record.spec.to_json())


def record(job_id: str, finished: float, fetched: float | None, size: int) -> JobRecord:
    return JobRecord(job_id, JobState.SUCCEEDED, spec(job_id), 0.0, 0.0, finished, "", 1, fetched, size)


def test_retention_removes_expired_results_then_the_oldest_until_the_store_fits():
    rule = Retention(max_bytes=100, keep_after_fetch=10, max_age=1000)
    jobs = [
        record("fetched-long-ago", finished=0, fetched=5, size=10),  # fetched 95 s ago: expired
        record("ancient", finished=-2000, fetched=None, size=10),  # finished past max_age: expired
        record("old-fetched", finished=50, fetched=95, size=40),
        record("old-unfetched", finished=40, fetched=None, size=40),
        record("new-unfetched", finished=90, fetched=None, size=40),
    ]
    assert expired(jobs, usage_bytes=120, r=rule, now=100) == ["fetched-long-ago", "ancient"]  # 100 left: fits
    removed = expired(jobs, usage_bytes=150, r=rule, now=100)
    # 150 − 20 expired = 130 > 100: the fetched one goes before the unfetched, then the oldest
    assert removed == ["fetched-long-ago", "ancient", "old-fetched"]
    assert expired(jobs, usage_bytes=20, r=Retention(max_bytes=100, keep_after_fetch=1e9, max_age=1e9), now=100) == []

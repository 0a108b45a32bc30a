"""The job store: SQLite for job state, a folder per job for its media and results.

Uploads are written into ``incoming/`` and only become a job, in one transaction, once complete and
valid, so a client that disconnects mid-upload leaves nothing behind. A restart loses no accepted job:
queued jobs stay queued, and a job that was running is queued again (or failed, after ``max_attempts``).
Retention: a result is kept until it is fetched and ``keep_after_fetch`` has passed, or ``max_age`` has
passed since it finished; past ``max_bytes`` the oldest finished jobs go first. Queued and running jobs
are never removed, and a submission that would overflow the store is refused.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .jobs import JobRecord, JobSpec, JobState

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    priority INTEGER NOT NULL,
    spec TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    message TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    fetched REAL,
    size_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (state, priority DESC, created);
"""


class StoreFullError(Exception):
    """Accepting the upload would grow the store past its limit."""


class UnknownJobError(KeyError):
    """No job has this id."""

    def __str__(self) -> str:
        return f"no job with id {self.args[0]!r}"


@dataclass(frozen=True)
class Retention:
    max_bytes: int = 20 * 1024**3
    keep_after_fetch: float = 24 * 3600.0
    max_age: float = 7 * 24 * 3600.0


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


class JobStore:
    def __init__(self, root: Path, retention: Retention = Retention(), max_attempts: int = 2) -> None:
        self.root = Path(root)
        self.jobs_dir = self.root / "jobs"
        self.incoming_dir = self.root / "incoming"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.incoming_dir.mkdir(parents=True, exist_ok=True)
        self.retention = retention
        self.max_attempts = max_attempts
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.root / "jobs.sqlite3", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- uploads ------------------------------------------------------------------------------------

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh folder for an upload; removed unless :meth:`accept` moved it into place."""
        folder = self.incoming_dir / uuid.uuid4().hex
        folder.mkdir()
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def ensure_room(self, incoming_bytes: int) -> None:
        self.sweep()
        used = self.usage_bytes()
        if used + incoming_bytes > self.retention.max_bytes:
            raise StoreFullError(
                f"the job store is full ({used / 1e9:.2f} of {self.retention.max_bytes / 1e9:.2f} GB in use, "
                f"this upload needs {incoming_bytes / 1e9:.2f} GB); fetch or cancel finished jobs, or raise "
                "--max-store-gb"
            )

    def accept(self, spec: JobSpec, staged: Path | None) -> tuple[JobRecord, bool]:
        """Turn a complete upload into a queued job; an id seen before returns that job and ``True``."""
        with self._tx() as db:
            existing = db.execute("SELECT job_id FROM jobs WHERE job_id = ?", (spec.job_id,)).fetchone()
            if existing:
                return self.get(spec.job_id), True
            folder = self.jobs_dir / spec.job_id
            if folder.exists():
                shutil.rmtree(folder)
            if staged is not None:
                staged.rename(folder)
            else:
                folder.mkdir()
            db.execute(
                "INSERT INTO jobs (job_id, state, priority, spec, created, size_bytes) VALUES (?, ?, ?, ?, ?, ?)",
                (spec.job_id, JobState.QUEUED.value, spec.priority, spec.to_json(), time.time(), folder_size(folder)),
            )
        return self.get(spec.job_id), False

    # -- reading ------------------------------------------------------------------------------------

    def folder(self, job_id: str) -> Path:
        return self.jobs_dir / job_id

    @staticmethod
    def _record(row: tuple) -> JobRecord:
        job_id, state, _, spec, created, started, finished, message, attempts, fetched, size = row
        return JobRecord(
            job_id,
            JobState(state),
            JobSpec.from_json(spec),
            created,
            started,
            finished,
            message,
            attempts,
            fetched,
            size,
        )

    def get(self, job_id: str) -> JobRecord:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise UnknownJobError(job_id)
        return self._record(row)

    def list(self, states: set[JobState] | None = None, limit: int = 100) -> list[JobRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs ORDER BY created DESC, rowid DESC").fetchall()
        records = [self._record(r) for r in rows]
        return [r for r in records if not states or r.state in states][:limit]

    def queue(self) -> list[str]:
        """Queued job ids in the order they will run: priority first, then submission order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT job_id FROM jobs WHERE state = ? ORDER BY priority DESC, created, rowid",
                (JobState.QUEUED.value,),
            ).fetchall()
        return [r[0] for r in rows]

    def usage_bytes(self) -> int:
        with self._lock:
            (total,) = self._db.execute("SELECT COALESCE(SUM(size_bytes), 0) FROM jobs").fetchone()
        return int(total)

    # -- transitions --------------------------------------------------------------------------------

    def claim_next(self, skip: set[str] = frozenset()) -> JobRecord | None:
        """Mark the next queued job running (counting the attempt) and return it."""
        with self._tx() as db:
            for job_id in self.queue():
                if job_id in skip:
                    continue
                db.execute(
                    "UPDATE jobs SET state = ?, started = ?, attempts = attempts + 1 WHERE job_id = ?",
                    (JobState.RUNNING.value, time.time(), job_id),
                )
                return self.get(job_id)
        return None

    def finish(self, job_id: str, state: JobState, message: str = "") -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state = ?, finished = ?, message = ?, size_bytes = ? WHERE job_id = ?",
                (state.value, time.time(), message, folder_size(self.folder(job_id)), job_id),
            )

    def requeue(self, job_id: str, message: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state = ?, message = ? WHERE job_id = ?", (JobState.QUEUED.value, message, job_id)
            )

    def cancel_queued(self, job_id: str) -> bool:
        with self._tx() as db:
            changed = db.execute(
                "UPDATE jobs SET state = ?, finished = ?, message = ? WHERE job_id = ? AND state = ?",
                (JobState.CANCELLED.value, time.time(), "cancelled before it started", job_id, JobState.QUEUED.value),
            ).rowcount
        return changed == 1

    def mark_fetched(self, job_id: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE jobs SET fetched = ? WHERE job_id = ?", (time.time(), job_id))

    def recover(self) -> list[str]:
        """After a restart: drop half uploads, queue interrupted jobs again (or fail them). Returns re-queued ids."""
        for leftover in self.incoming_dir.iterdir():
            shutil.rmtree(leftover, ignore_errors=True)
        requeued = []
        for record in self.list({JobState.RUNNING}, limit=1_000_000):
            if record.attempts < self.max_attempts:
                self.requeue(record.job_id, f"re-run after a server restart (attempt {record.attempts + 1})")
                requeued.append(record.job_id)
            else:
                self.finish(
                    record.job_id,
                    JobState.FAILED,
                    f"interrupted by a server restart {record.attempts} times; not retried again",
                )
        return requeued

    def remove(self, job_id: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))
        shutil.rmtree(self.folder(job_id), ignore_errors=True)

    def sweep(self, now: float | None = None) -> list[str]:
        """Apply the retention rules; return the ids removed."""
        now = time.time() if now is None else now
        r = self.retention
        finished = [j for j in self.list(limit=1_000_000) if j.state.terminal]
        removed = []
        for job in finished:
            fetched_expired = job.fetched is not None and now - job.fetched > r.keep_after_fetch
            too_old = job.finished is not None and now - job.finished > r.max_age
            if fetched_expired or too_old:
                self.remove(job.job_id)
                removed.append(job.job_id)
        survivors = sorted(
            (j for j in finished if j.job_id not in removed),
            key=lambda j: (j.fetched is None, j.finished or 0.0),
        )
        total = self.usage_bytes()
        for job in survivors:
            if total <= r.max_bytes:
                break
            total -= job.size_bytes
            self.remove(job.job_id)
            removed.append(job.job_id)
        return removed

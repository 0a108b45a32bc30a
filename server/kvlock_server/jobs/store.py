"""The job store: SQLite for job state, a folder per job for its media and results.

Uploads are written into ``incoming/`` and only become a job, in one transaction, once complete and
valid, so a client that disconnects mid-upload leaves nothing behind. A restart loses no accepted job:
queued jobs stay queued, and a job that was running is queued again (or failed, after ``max_attempts``).
Retention: a result is kept until it is fetched and ``keep_after_fetch`` has passed, or ``max_age`` has
passed since it finished; past ``max_bytes`` the oldest finished jobs go first. Queued and running jobs
are never removed, and a submission that would overflow the store is refused: its bytes are reserved
when its header arrives, so uploads running at the same time can never overshoot together.

A job's folder is only ever named by a checked job id (:func:`check_job_id`) and removed only if it is a
direct child of ``jobs/``. Each folder holds ``job.json`` (its spec), written before the folder is moved
into place, so a crash between the move and the database commit leaves a folder that the next start
adopts as the queued job it was about to become (the client, never told, resubmits the same id and is
answered "duplicate"). Everything is private to the server's user: folders 0700, files 0600.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .files import folder_size, private_dir, private_file, remove_any
from .model import InvalidJobId, JobRecord, JobSpec, JobState, check_job_id, is_job_id
from .retention import Retention, expired

JOB_FILE = "job.json"
SPEC_CACHE = 10_000

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


@dataclass(eq=False)
class Reservation:
    """Bytes promised to one upload from its header until it is accepted or abandoned."""

    nbytes: int


class JobStore:
    def __init__(self, root: Path, retention: Retention | None = None, max_attempts: int = 2) -> None:
        self.root = private_dir(Path(root))
        self.jobs_dir = private_dir(self.root / "jobs")
        self.incoming_dir = private_dir(self.root / "incoming")
        self.retention = retention or Retention()
        self.max_attempts = max_attempts
        self._lock = threading.RLock()
        self._reserved: list[Reservation] = []
        self._specs: dict[str, JobSpec] = {}
        database = private_file(self.root / "jobs.sqlite3")  # SQLite gives its -wal and -shm files this mode
        for companion in ("jobs.sqlite3-wal", "jobs.sqlite3-shm"):  # left by an older, looser version
            if (self.root / companion).is_file():
                private_file(self.root / companion)
        self._db = sqlite3.connect(database, check_same_thread=False, isolation_level=None)
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

    def new_staging(self) -> Path:
        """A fresh private folder for an upload; :meth:`discard` it unless :meth:`accept` moved it."""
        folder = self.incoming_dir / uuid.uuid4().hex
        folder.mkdir(mode=0o700)
        return folder

    @staticmethod
    def discard(folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)

    @contextmanager
    def staging(self, reservation: Reservation | None = None) -> Iterator[Path]:
        """A fresh folder for an upload; removed (and its reservation released) unless accepted."""
        folder = self.new_staging()
        try:
            yield folder
        finally:
            self.discard(folder)
            if reservation is not None:
                self.release(reservation)

    def reserve(self, incoming_bytes: int) -> Reservation:
        """Promise ``incoming_bytes`` to an upload, or refuse it now if the store cannot hold them.

        Counted against ``max_bytes`` together with every job and every other live reservation, so any
        number of concurrent uploads fit or are refused at their header, never after their bytes.
        """
        self.sweep()
        with self._lock:
            used = self.usage_bytes()
            pending = sum(r.nbytes for r in self._reserved)
            if used + pending + incoming_bytes > self.retention.max_bytes:
                raise StoreFullError(
                    f"the job store is full ({(used + pending) / 1e9:.2f} of {self.retention.max_bytes / 1e9:.2f} "
                    f"GB in use or promised to uploads in progress, this upload needs {incoming_bytes / 1e9:.2f} "
                    "GB); fetch or cancel finished jobs, wait for running uploads, or raise --max-store-gb"
                )
            reservation = Reservation(incoming_bytes)
            self._reserved.append(reservation)
            return reservation

    def release(self, reservation: Reservation) -> None:
        with self._lock:
            if any(r is reservation for r in self._reserved):
                self._reserved = [r for r in self._reserved if r is not reservation]

    def ensure_room(self, incoming_bytes: int) -> None:
        """Refuse now if ``incoming_bytes`` would not fit (a check only: nothing is reserved)."""
        self.release(self.reserve(incoming_bytes))

    def reserved_bytes(self) -> int:
        with self._lock:
            return sum(r.nbytes for r in self._reserved)

    def accept(
        self, spec: JobSpec, staged: Path | None, reservation: Reservation | None = None
    ) -> tuple[JobRecord, bool]:
        """Turn a complete upload into a queued job; an id seen before returns that job and ``True``.

        The reservation, if any, ends in the same step as the job's bytes start to count.
        """
        check_job_id(spec.job_id)
        with self._tx() as db:
            existing = db.execute("SELECT job_id FROM jobs WHERE job_id = ?", (spec.job_id,)).fetchone()
            if existing:
                return self.get(spec.job_id), True
            folder = self.folder(spec.job_id)
            if staged is None:
                staged = self.new_staging()
            (staged / JOB_FILE).write_text(spec.to_json())
            os.chmod(staged / JOB_FILE, 0o600)
            size = folder_size(staged)
            self._remove_folder(folder)  # a crash's leftover under this id (adopted or not, it is replaced)
            staged.rename(folder)
            db.execute(
                "INSERT INTO jobs (job_id, state, priority, spec, created, size_bytes) VALUES (?, ?, ?, ?, ?, ?)",
                (spec.job_id, JobState.QUEUED.value, spec.priority, spec.to_json(), time.time(), size),
            )
            if reservation is not None:
                self.release(reservation)
        return self.get(spec.job_id), False

    # -- reading ------------------------------------------------------------------------------------

    def folder(self, job_id: str) -> Path:
        """The job's own folder: always one checked name directly under ``jobs/``."""
        return self.jobs_dir / check_job_id(job_id)

    def _remove_folder(self, folder: Path) -> None:
        """Remove one job folder, and only that: a direct child of ``jobs/``, never followed through a link."""
        if folder.parent != self.jobs_dir or not is_job_id(folder.name):
            raise InvalidJobId(f"refusing to remove {folder}: not a job folder of this store")
        if folder.is_symlink() or folder.is_file():
            folder.unlink()
        elif folder.exists():
            shutil.rmtree(folder)

    def _spec(self, text: str) -> JobSpec:
        """Specs never change once stored: each is parsed once (ListJobs reads many, many times)."""
        spec = self._specs.get(text)
        if spec is None:
            if len(self._specs) >= SPEC_CACHE:
                self._specs.clear()
            spec = self._specs[text] = JobSpec.from_json(text)
        return spec

    def _record(self, row: tuple) -> JobRecord:
        job_id, state, _, spec, created, started, finished, message, attempts, fetched, size = row
        return JobRecord(
            job_id,
            JobState(state),
            self._spec(spec),
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

    def state_of(self, job_id: str) -> tuple[JobState, str]:
        """The job's state and message only (no spec to parse): what a watcher re-reads at each change."""
        with self._lock:
            row = self._db.execute("SELECT state, message FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise UnknownJobError(job_id)
        return JobState(row[0]), row[1]

    def list(self, states: set[JobState] | None = None, limit: int = 100) -> list[JobRecord]:
        """Newest first; only ``states`` if given; at most ``limit`` (filtered and cut by SQLite)."""
        where, values = "", []
        if states:
            where = f"WHERE state IN ({', '.join('?' * len(states))})"
            values = [s.value for s in states]
        query = f"SELECT * FROM jobs {where} ORDER BY created DESC, rowid DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, (*values, max(0, int(limit)))).fetchall()
        return [self._record(r) for r in rows]

    def queue(self) -> list[str]:
        """Queued job ids in the order they will run: priority first, then submission order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT job_id FROM jobs WHERE state = ? ORDER BY priority DESC, created, rowid",
                (JobState.QUEUED.value,),
            ).fetchall()
        return [r[0] for r in rows]

    def queued(self) -> list[tuple[str, str]]:
        """(job id, message) of every queued job, in the order they will run."""
        with self._lock:
            rows = self._db.execute(
                "SELECT job_id, message FROM jobs WHERE state = ? ORDER BY priority DESC, created, rowid",
                (JobState.QUEUED.value,),
            ).fetchall()
        return [(job_id, message) for job_id, message in rows]

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
        """After a restart: drop half uploads, adopt or remove orphan folders, queue interrupted jobs again
        (or fail them). Returns the ids queued again, adopted ones included."""
        for leftover in self.incoming_dir.iterdir():
            remove_any(leftover)
        requeued = self._adopt_orphans()
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

    def _adopt_orphans(self) -> list[str]:
        """Folders under ``jobs/`` without a row: a crash between moving an upload into place and committing
        it. One whose ``job.json`` names it becomes the queued job it was about to be; anything else goes."""
        with self._lock:
            known = {row[0] for row in self._db.execute("SELECT job_id FROM jobs")}
        adopted = []
        for entry in sorted(self.jobs_dir.iterdir()):
            if entry.name in known:
                continue
            spec = _orphan_spec(entry)
            if spec is None:
                remove_any(entry)
                continue
            with self._tx() as db:
                db.execute(
                    "INSERT INTO jobs (job_id, state, priority, spec, created, size_bytes, message) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        spec.job_id,
                        JobState.QUEUED.value,
                        spec.priority,
                        spec.to_json(),
                        entry.stat().st_mtime,
                        folder_size(entry),
                        "recovered after a server crash during its acceptance",
                    ),
                )
            adopted.append(spec.job_id)
        return adopted

    def remove(self, job_id: str) -> None:
        folder = self.folder(job_id)
        with self._tx() as db:
            db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))
        with contextlib.suppress(OSError):  # already gone, or going: the row is what makes a job
            self._remove_folder(folder)

    def sweep(self, now: float | None = None) -> list[str]:
        """Apply the retention rules (``retention.expired``); return the ids removed."""
        now = time.time() if now is None else now
        finished = [j for j in self.list(limit=1_000_000) if j.state.terminal]
        removed = expired(finished, self.usage_bytes(), self.retention, now)
        for job_id in removed:
            self.remove(job_id)
        return removed


def _orphan_spec(folder: Path) -> JobSpec | None:
    """The spec an orphan folder was accepted with, if it is a real folder named after that job."""
    if folder.is_symlink() or not folder.is_dir():
        return None
    try:
        spec = JobSpec.from_json((folder / JOB_FILE).read_text())
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return spec if spec.job_id == folder.name and is_job_id(spec.job_id) else None

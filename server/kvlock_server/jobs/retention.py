"""How long finished jobs stay: a pure rule over their records, which the store applies (``JobStore.sweep``).

A result is kept until it is fetched and ``keep_after_fetch`` has passed, or ``max_age`` has passed since it
finished; past ``max_bytes`` the finished jobs go oldest first, unfetched ones last. Queued and running jobs
are never given to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .model import JobRecord


@dataclass(frozen=True)
class Retention:
    max_bytes: int = 20 * 1024**3
    keep_after_fetch: float = 24 * 3600.0
    max_age: float = 7 * 24 * 3600.0


def expired(finished: Sequence[JobRecord], usage_bytes: int, r: Retention, now: float) -> list[str]:
    """The ids of the ``finished`` jobs to remove at ``now``, the store holding ``usage_bytes`` in all."""
    removed = []
    for job in finished:
        fetched_expired = job.fetched is not None and now - job.fetched > r.keep_after_fetch
        too_old = job.finished is not None and now - job.finished > r.max_age
        if fetched_expired or too_old:
            removed.append(job.job_id)
            usage_bytes -= job.size_bytes
    survivors = sorted(
        (j for j in finished if j.job_id not in removed),
        key=lambda j: (j.fetched is None, j.finished or 0.0),
    )
    for job in survivors:
        if usage_bytes <= r.max_bytes:
            break
        usage_bytes -= job.size_bytes
        removed.append(job.job_id)
    return removed

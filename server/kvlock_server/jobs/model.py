"""What a job is, in the server's own terms (no gRPC here): its spec, its states, its record."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from enum import StrEnum

from kvlock.errors import InvalidRequest, SettingsError
from kvlock.media.matte import MatteOptions
from kvlock.settings import EditSettings

JOB_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
JOB_ID_RULE = "1–64 characters of A–Z, a–z, 0–9, '.', '_', '-', not starting with '.'"
PIXEL_LAYOUTS = {"rgb8": (3, 1), "rgb16": (3, 2), "gray8": (1, 1), "gray16": (1, 2)}  # channels, bytes


class InvalidJobId(InvalidRequest):
    """A job id that breaks the one rule every id obeys (it names a folder, so the rule is strict)."""


def is_job_id(text: object) -> bool:
    return isinstance(text, str) and JOB_ID.fullmatch(text) is not None


def check_job_id(job_id: str) -> str:
    """Return ``job_id`` if it may name a job (and its folder), else raise :class:`InvalidJobId`.

    The whole string must match (no trailing newline), it cannot start with '.' (so never '.', '..' or a
    hidden name), and it is at most 64 characters: an id is always one plain folder name.
    """
    if not is_job_id(job_id):
        text = str(job_id)
        shown = text if len(text) <= 80 else text[:80] + "…"
        raise InvalidJobId(f"job_id {shown!r} must be {JOB_ID_RULE}")
    return job_id


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class ClipSpec:
    """Media of one track: raw frames uploaded into the job folder, or a file the server reads itself."""

    kind: str  # "inline" or "file"
    path: str  # inline: file name inside the job folder; file: absolute path under a media root
    frames: int = 0
    width: int = 0
    height: int = 0
    pixel: str = "rgb8"
    start: int = 0
    end: int = 0
    fingerprint: str = ""  # file: identities of the files accepted (see media_roots); "" in older stores

    @property
    def nbytes(self) -> int:
        channels, size = PIXEL_LAYOUTS[self.pixel]
        return self.frames * self.width * self.height * channels * size


@dataclass(frozen=True)
class JobSpec:
    """Everything needed to run a job, checked when it was accepted; stored as JSON.

    ``settings`` are the request's own (fields left None take the model's values when the job runs); an
    ``EditSettings`` is valid by construction, so a stored job is never judged again.
    """

    job_id: str
    model: str
    prompt: str
    source: ClipSpec
    matte: ClipSpec
    settings: EditSettings = field(default_factory=EditSettings)
    matte_options: MatteOptions = field(default_factory=MatteOptions)
    priority: int = 0
    rate: tuple[int, int] = (24, 1)
    timecode: str | None = None
    codec: str = "ffv1"
    region: bool = False
    plate: bool = False  # also the clean plate, with its seen/invented map as alpha
    # why a stored spec cannot run (a setting an older server accepted and this one refuses); "" if it can
    unreadable: str = ""

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("unreadable")
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        data = json.loads(text)
        data["source"] = ClipSpec(**data["source"])
        data["matte"] = ClipSpec(**data["matte"])
        # stores written before settings were typed held only the fields a request set: the same names
        given = {k: v for k, v in data.get("settings", {}).items() if v is not None}
        try:
            data["settings"] = EditSettings.from_dict(given)
        except SettingsError as error:  # the job is listed, and fails with this reason when it runs
            data["settings"], data["unreadable"] = EditSettings(), f"its stored settings are refused: {error}"
        data["matte_options"] = MatteOptions(**data.get("matte_options", {}))
        data["rate"] = tuple(data["rate"])
        return cls(**data)


@dataclass(frozen=True)
class JobRecord:
    """One row of the job store."""

    job_id: str
    state: JobState
    spec: JobSpec
    created: float
    started: float | None
    finished: float | None
    message: str
    attempts: int
    fetched: float | None
    size_bytes: int

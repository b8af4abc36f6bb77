"""The jobs page: what a listing asks for, where a page starts, and the cursor that says so.

Every job of a vault is in four sorted sets scored by its queue time: the vault's job index and
the indexes of its status, its operation and its item (``wire.jobs_by_*_key``); the save that
changes a job's status moves it between status indexes in the same atomic write. A listing
walks the index with the fewest entries in its time range, newest first, and keeps the entries
that are in every other index it names, so the common "newest 50 with a status" costs
O(log n + page), not O(jobs).

Jobs are ordered by (queue time, id), newest first. A page ends at a ``Position``: the last
entry it looked at; the next starts strictly after it, so jobs queued meanwhile (newer, so
before it) shift nothing: no job is shown twice and none is skipped. A cursor is that position
as an opaque token. ``before`` is the position just before a time.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass
from datetime import datetime

from backup_jobs import wire
from backup_jobs.errors import ConfigurationError
from backup_jobs.models import Job, JobStatus, Operation

# The page the jobs page shows when not told otherwise.
DEFAULT_PAGE_SIZE = 50
# The largest page: a page is read in one script and one MGET, kept short for the server.
MAX_PAGE_SIZE = 1000
# Index entries one page may look at when filters intersect (the page is then shorter, with a
# cursor): a rare combination never keeps the server busy for long.
SCAN_BUDGET = 10_000
_CURSOR_PREFIX = "c1."
_CURSOR_HELP = (
    "use the cursor a page printed ('next page: --cursor ...', or next_cursor in --json), "
    "or leave it out for the first page"
)


@dataclass(frozen=True, order=True)
class Position:
    """A place in the order of jobs: queue time (epoch seconds) and id; pages go downwards."""

    score: float
    job_id: str


@dataclass(frozen=True)
class JobQuery:
    """Which jobs of a vault a listing wants; every field given narrows it.

    ``since`` and ``until`` bound the queue time (both inclusive); ``after``: only jobs after
    this position in the order (older); ``limit``: at most this many (None: every match).
    """

    status: JobStatus | None = None
    operation: Operation | None = None
    item: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    after: Position | None = None
    limit: int | None = None

    def indexes(self, vault: str) -> list[str]:
        """The index keys whose intersection holds the jobs asked for."""
        keys = []
        if self.status is not None:
            keys.append(wire.jobs_by_status_key(vault, self.status.value))
        if self.operation is not None:
            keys.append(wire.jobs_by_operation_key(vault, self.operation.value))
        if self.item is not None:
            keys.append(wire.jobs_by_item_key(vault, self.item))
        return keys or [wire.job_index_key(vault)]

    def matches(self, job: Job) -> bool:
        """True if a job's record is what the query asks for (an index entry may be stale)."""
        return (
            self.status in (None, job.status)
            and self.operation in (None, job.operation)
            and self.item in (None, job.item)
        )


def listing_keys(job: Job) -> list[str]:
    """The indexes of the jobs page a job is in, each scored by its queue time."""
    return [
        wire.job_index_key(job.vault),
        wire.jobs_by_status_key(job.vault, job.status.value),
        wire.jobs_by_operation_key(job.vault, job.operation.value),
        wire.jobs_by_item_key(job.vault, job.item),
    ]


def status_keys(vault: str) -> list[str]:
    """Every status index of a vault, in ``JobStatus`` order."""
    return [wire.jobs_by_status_key(vault, status.value) for status in JobStatus]


def ended_score(job: Job) -> float | None:
    """A final job's entry in ``wire.ENDED_KEY`` (history retention): when it ended."""
    if not job.status.is_final:
        return None
    return (job.ended_at or job.queued_at).timestamp()


def encode_cursor(position: Position) -> str:
    """The opaque token of a position."""
    raw = json.dumps([position.score, position.job_id], separators=(",", ":")).encode()
    return _CURSOR_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, name: str = "cursor") -> Position:
    """The position a token names; ``ConfigurationError`` naming ``name`` if it is not ours."""
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str printed by a page, not {text!r}")
    try:
        if not text.startswith(_CURSOR_PREFIX):
            raise ValueError("no prefix")
        body = text[len(_CURSOR_PREFIX) :]
        data = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        score, job_id = data
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise ValueError("score")
        if not math.isfinite(score) or not isinstance(job_id, str) or not job_id:
            raise ValueError("fields")
    except (ValueError, TypeError, binascii.Error):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise ConfigurationError(
            detail=f"{name}={shown!r} is not a cursor of the jobs page; {_CURSOR_HELP}"
        ) from None
    return Position(float(score), job_id)


def parse_limit(value: object, name: str = "limit") -> int:
    """A page size: a whole number from 1 to ``MAX_PAGE_SIZE``, as an int or as text."""
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    if number is None or not 1 <= number <= MAX_PAGE_SIZE:
        raise ConfigurationError(
            detail=f"{name}={value!r} is not valid; accepted: a whole number from 1 to "
            f"{MAX_PAGE_SIZE} (page on with the cursor for more)"
        )
    return number

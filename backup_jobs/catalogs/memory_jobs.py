"""The memory catalog's jobs page: the same sorted indexes as Redis's, kept in dictionaries.

Each index is a dict of job id to score under the same key as in Redis (``wire``), so the
memory catalog walks, intersects and pages exactly as the Redis scripts do, scan budget
included, and the contract tests hold for both.
"""

from __future__ import annotations

from dataclasses import dataclass

from backup_jobs import wire
from backup_jobs.joblist import (
    SCAN_BUDGET,
    JobQuery,
    Position,
    ended_score,
    listing_keys,
    status_keys,
)
from backup_jobs.models import Job


@dataclass
class Walk:
    """What a walk of an index found: ids, and the position to go on from if more remain."""

    ids: list[str]
    position: Position | None


class JobIndexes:
    """Sorted indexes by key: the jobs page's and the retention index (not thread-safe)."""

    def __init__(self) -> None:
        self.scores: dict[str, dict[str, float]] = {}

    def put(self, job: Job) -> None:
        """Index a job as its status implies, out of every other status index (a save)."""
        queued = job.queued_at.timestamp()
        for key in status_keys(job.vault):
            self.scores.get(key, {}).pop(job.id, None)
        for key in listing_keys(job):
            self.scores.setdefault(key, {})[job.id] = queued
        ended = ended_score(job)
        if ended is None:
            self.scores.get(wire.ENDED_KEY, {}).pop(job.id, None)
        else:
            self.scores.setdefault(wire.ENDED_KEY, {})[job.id] = ended

    def restore(self, entries: list[tuple[str, float]], job_id: str) -> bool:
        """Put back the entries a job lacks; True if one was missing."""
        missing = False
        for key, score in entries:
            index = self.scores.setdefault(key, {})
            missing |= job_id not in index
            index.setdefault(job_id, score)
        return missing

    def drop(self, job: Job) -> None:
        """Take a job out of every index it may be in."""
        keys = [*listing_keys(job), *status_keys(job.vault), wire.ENDED_KEY]
        for key in keys:
            self.scores.get(key, {}).pop(job.id, None)

    def due(self, key: str, below: float, limit: int) -> list[str]:
        """The ids scored below ``below`` in an index, lowest first."""
        found = sorted((s, i) for i, s in self.scores.get(key, {}).items() if s < below)
        return [i for _, i in found[:limit]]

    def walk(self, keys: list[str], query: JobQuery, limit: int) -> Walk:
        """Newest first through the smallest index in the time range, as the PAGE script."""
        entries = self._range(keys, query)
        if query.after is not None:
            after = (query.after.score, query.after.job_id)
            entries = [entry for entry in entries if entry < after]
        ids: list[str] = []
        others = [self.scores.get(key, {}) for key in keys]
        for looked, (_, job_id) in enumerate(entries):
            if len(ids) == limit or looked >= SCAN_BUDGET:
                return Walk(ids, Position(*entries[looked - 1]))
            if all(job_id in index for index in others):
                ids.append(job_id)
        return Walk(ids, None)

    def count(self, keys: list[str], query: JobQuery) -> int:
        """How many jobs are in every index, in the time range."""
        others = [self.scores.get(key, {}) for key in keys]
        return sum(1 for _, i in self._range(keys, query) if all(i in o for o in others))

    def _range(self, keys: list[str], query: JobQuery) -> list[tuple[float, str]]:
        """The smallest index's entries in the time range, newest first."""
        low = query.since.timestamp() if query.since else float("-inf")
        high = query.until.timestamp() if query.until else float("inf")
        ranges: list[list[tuple[float, str]]] = [
            [(s, i) for i, s in self.scores.get(key, {}).items() if low <= s <= high]
            for key in keys
        ]
        smallest: list[tuple[float, str]] = min(ranges, key=len)
        return sorted(smallest, reverse=True)

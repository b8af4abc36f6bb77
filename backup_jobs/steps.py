"""A job's sub-tasks as they run: status, times and byte progress, published as they go.

A step is ``InProgress`` while its block runs and ends ``Completed`` or ``Failed`` with it
(``Cancelled`` if the job was cancelled in it);
each change is published (the job record, Flower) through the attempt's ``progress``. A step
may count bytes: ``advance`` for steps that count themselves (published at each whole
percent), or a ``ByteProgress``, the callback the vault's backup and restore report bytes to,
which also enforces the step's deadline, keeps the lease alive, and publishes at most once a
second.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from backup_jobs.context import JobContext
from backup_jobs.errors import BackupJobsError, Cancelled
from backup_jobs.models import JobStatus, SubTask

# The job record and Flower are told of a step's progress at most this often.
PROGRESS_INTERVAL_SECONDS = 1.0


def begin(ctx: JobContext, *names: str) -> None:
    """Declare the job's steps, all Queued."""
    ctx.subtasks[:] = [SubTask(name) for name in names]


@contextmanager
def step(ctx: JobContext, index: int, bytes_total: int = 0) -> Iterator[None]:
    """Run sub-task ``index``: InProgress, then Completed or Failed, published each time."""
    ctx.subtasks[index] = SubTask(
        ctx.subtasks[index].name,
        JobStatus.IN_PROGRESS,
        started_at=ctx.clock.now(),
        bytes_total=bytes_total,
    )
    ctx.progress()
    try:
        yield
    except BaseException as exc:
        _end(ctx, index, JobStatus.CANCELLED if isinstance(exc, Cancelled) else JobStatus.FAILED)
        raise
    _end(ctx, index, JobStatus.COMPLETED)


def advance(ctx: JobContext, index: int, nbytes: int) -> None:
    """Count ``nbytes`` more done in step ``index``; published at each whole percent."""
    current = ctx.subtasks[index]
    ctx.subtasks[index] = replace(current, bytes_done=current.bytes_done + nbytes)
    if int(current.progress_percent or 0) != int(ctx.subtasks[index].progress_percent or 0):
        with contextlib.suppress(BackupJobsError):
            ctx.progress()


def _end(ctx: JobContext, index: int, status: JobStatus) -> None:
    ctx.subtasks[index] = replace(ctx.subtasks[index], status=status, ended_at=ctx.clock.now())
    with contextlib.suppress(BackupJobsError):
        ctx.progress()


class ByteProgress:
    """The byte-progress callback of sub-task ``index``: deadline, lease, throttled publication.

    ``timeout(done, total)`` builds the error raised once ``timeout_seconds`` have passed.
    """

    def __init__(
        self,
        ctx: JobContext,
        index: int,
        timeout_seconds: float,
        timeout: Callable[[int, int], BackupJobsError],
    ) -> None:
        self._ctx = ctx
        self._index = index
        self._timeout = timeout
        self._started = time.monotonic()
        self._deadline = self._started + timeout_seconds
        self._published = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now >= self._deadline:
            raise self._timeout(done, total)
        self._ctx.heartbeat()
        if now - self._published < PROGRESS_INTERVAL_SECONDS and done < total:
            return
        self._published = now
        current = self._ctx.subtasks[self._index]
        rate = done / max(now - self._started, 1e-6)
        self._ctx.subtasks[self._index] = SubTask(
            current.name, current.status, current.started_at, None, done, total, round(rate, 1)
        )
        self._ctx.progress()

"""Running a job's sub-tasks: each step InProgress, then Completed or Failed, published.

A step may count bytes (``advance``): the job record and Flower show its percent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from backup_jobs.context import JobContext
from backup_jobs.errors import BackupJobsError
from backup_jobs.models import JobStatus, SubTask


def begin(ctx: JobContext, *names: str) -> None:
    """Declare the job's steps, all Queued."""
    ctx.subtasks[:] = [SubTask(name) for name in names]


@contextmanager
def step(ctx: JobContext, index: int, bytes_total: int = 0) -> Iterator[None]:
    """Run step ``index``: InProgress, then Completed, or Failed if it raises."""
    ctx.subtasks[index] = SubTask(
        ctx.subtasks[index].name,
        JobStatus.IN_PROGRESS,
        started_at=ctx.clock.now(),
        bytes_total=bytes_total,
    )
    ctx.progress()
    try:
        yield
    except BaseException:
        _end(ctx, index, JobStatus.FAILED)
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

"""The shared task plumbing: lease, time limits, retries and the job record.

Task bodies stay one line; everything cross-cutting happens here, once.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from backup_jobs import jobs
from backup_jobs.errors import BackupJobsError, InternalError, LeaseLost
from backup_jobs.inventory import JobContext
from backup_jobs.models import Job, Operation
from backup_jobs.operations import OPERATIONS, OperationSpec
from workers import root

log = logging.getLogger("backup_jobs.worker")


class EventLog:
    """Logs events named as past-tense facts, with the job, item (VM) and task ids bound once."""

    def __init__(self, logger: logging.Logger, **bound: object) -> None:
        self._logger = logger
        self._bound = bound

    def event(self, name: str, level: int = logging.INFO, **fields: object) -> None:
        """Log ``name key=value ...`` (bound fields first)."""
        pairs = " ".join(f"{k}={v}" for k, v in {**self._bound, **fields}.items())
        self._logger.log(level, "%s %s", name, pairs, exc_info=level >= logging.ERROR)


def summary(job: Job | None, **extra: Any) -> dict[str, Any]:
    """The small JSON result Flower shows for a task."""
    if job is None:
        return {"status": "unknown", **extra}
    return {
        "job_id": job.id,
        "operation": job.operation.value,
        "item": job.item_name,
        "attempt": job.attempt,
        "status": job.status.value,
        "error": job.error["code"] if job.error else None,
        **{k: v for k, v in job.properties.items() if isinstance(v, str | int | float)},
        **extra,
    }


def run_job(
    task: Task[Any, Any], operation: Operation, job_id: str, attempt: int
) -> dict[str, Any]:
    """Run one attempt of a job under its item's lease and record how it ended."""
    catalog, settings, clock = root.catalog(), root.settings(), root.clock()
    started = jobs.begin_attempt(
        catalog,
        job_id,
        attempt,
        str(task.request.id),
        settings.lease_ttl_seconds,
        settings.retry_delay_seconds,
        clock,
    )
    if started is None:
        return summary(catalog.get_job(job_id), skipped=True)
    job = started.job
    spec = OPERATIONS[operation]
    events = EventLog(log, job=job.id, item=job.item_name, task=task.request.id)
    events.event("attempt_started", operation=operation.value, attempt=attempt)
    ctx: JobContext | None = None
    with root.heartbeats().hold(job) as check_lease:
        try:
            vault = root.vault(job.vault)
            ctx = JobContext(
                job, started.fence, vault, catalog, root.provider(vault), settings, check_lease
            )
            properties = spec.run(ctx)
        except SoftTimeLimitExceeded:
            error: BackupJobsError = spec.timeout_error(job.item_name)
        except BackupJobsError as exc:
            error = exc
        except Exception as exc:
            events.event("attempt_crashed", logging.ERROR)
            error = InternalError(job.item_name, repr(exc))
        else:
            done = jobs.complete(catalog, started, properties, clock)
            events.event("job_completed", status=done.status.value)
            return summary(done)
        _roll_back(spec, ctx, error, events)
        failed = jobs.fail_attempt(
            catalog, job, error, settings.retry_delay_seconds, clock, started.fence
        )
    events.event("attempt_failed", code=error.code, status=failed.status.value)
    return summary(failed)


def _roll_back(
    spec: OperationSpec, ctx: JobContext | None, error: BackupJobsError, events: EventLog
) -> None:
    if ctx is None:
        return
    try:
        spec.on_failure(ctx, error)
    except LeaseLost:
        events.event("rollback_skipped", reason="lease lost")

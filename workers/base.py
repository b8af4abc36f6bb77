"""The shared task plumbing: lease, time limits, retries, roll-back and the job record.

Task bodies stay one line; everything cross-cutting happens here, once. An attempt that fails
is recorded in the job record (the truth) first, then raised, so that Flower shows the task as
failed with the error's code, message and action; the task class lists ``BackupJobsError`` as
expected (``throws``), so the worker logs it without a traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from backup_jobs import jobs
from backup_jobs.catalog import Catalog
from backup_jobs.context import JobContext
from backup_jobs.errors import BackupJobsError, InternalError, LeaseLost, error_from_dict
from backup_jobs.models import Job, JobStatus, Operation
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
    """Run one attempt of a job under its item's lease and record how it ended.

    Returns the job's summary if the attempt succeeded; raises the attempt's error (after
    recording it) if it failed.
    """
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
        return _already_handled(catalog, job_id, attempt)
    job = started.job
    spec = OPERATIONS[operation]
    events = EventLog(log, job=job.id, item=job.item_name, task=task.request.id)
    events.event("attempt_started", operation=operation.value, attempt=attempt)
    deadline = time.monotonic() + spec.soft_limit_seconds(settings)
    ctx: JobContext | None = None
    with root.heartbeats().hold(job) as check_lease:
        try:
            vault = root.vault(job.vault)
            guard = _guard(catalog, started, check_lease, deadline, spec)
            ctx = JobContext(
                job,
                started.fence,
                vault,
                catalog,
                root.provider(vault),
                settings,
                check_lease,
                guard,
            )
            properties = spec.run(ctx)
        except SoftTimeLimitExceeded:
            error: BackupJobsError = spec.timeout_error(job.item_name)
        except LeaseLost:
            # The item is not ours any more: the reaper (or a newer attempt) records how this
            # attempt ended; writing here could only be refused or overwrite theirs.
            events.event("attempt_abandoned", logging.WARNING, reason="lease lost")
            raise
        except BackupJobsError as exc:
            error = exc
        except Exception as exc:
            events.event("attempt_crashed", logging.ERROR)
            error = InternalError(job.item_name, repr(exc))
        else:
            done = jobs.complete(catalog, started, properties, clock, tuple(ctx.warnings))
            events.event("job_completed", status=done.status.value)
            return summary(done)
        _roll_back(spec, catalog, started, error, events)
        failed = jobs.fail_attempt(
            catalog, job, error, settings.retry_delay_seconds, clock, started.fence
        )
    events.event("attempt_failed", code=error.code, status=failed.status.value)
    raise error


def _guard(
    catalog: Catalog,
    started: jobs.Started,
    check_lease: Callable[[], None],
    deadline: float,
    spec: OperationSpec,
) -> Callable[[], None]:
    """The check made right before a side effect: lease still ours, deadline not passed.

    It asks the catalog rather than trusting the heartbeat thread: a child that was frozen
    past its lease and resumes must not act before that thread has run again.
    """
    item = started.job.item_name

    def check() -> None:
        check_lease()
        if time.monotonic() >= deadline:
            raise spec.timeout_error(item)
        if not catalog.fence_is_current(started.fence, started.job.id):
            raise LeaseLost(item)

    return check


def _already_handled(catalog: Catalog, job_id: str, attempt: int) -> dict[str, Any]:
    """A message with nothing to do: mirror how its attempt ended, so Flower agrees.

    A duplicate delivery of an attempt that failed (or an attempt refused because its item
    was busy) raises that attempt's error again; anything else is a skipped success.
    """
    job = catalog.get_job(job_id)
    ended = next((a for a in job.attempts if a.number == attempt), None) if job else None
    if ended is not None and ended.status == JobStatus.FAILED and ended.error:
        raise error_from_dict(ended.error)
    return summary(job, skipped=True)


def _roll_back(
    spec: OperationSpec,
    catalog: Catalog,
    started: jobs.Started,
    error: BackupJobsError,
    events: EventLog,
) -> None:
    try:
        spec.on_failure(catalog, started.job, started.fence, error)
    except LeaseLost:
        events.event("rollback_skipped", reason="lease lost")
    except BackupJobsError as exc:
        events.event("rollback_failed", logging.WARNING, code=exc.code)

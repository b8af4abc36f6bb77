"""The shared task plumbing: lease, time limits, retries, roll-back and the job record.

Task bodies stay one line; everything cross-cutting happens here, once. An attempt that fails
is recorded in the job record (the truth) first, then raised, so that Flower shows the task as
failed with the error's code, message and action; the task class lists ``BackupJobsError`` as
expected (``throws``), so the worker logs it without a traceback.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from backup_jobs import jobs, logs
from backup_jobs.catalog import Catalog
from backup_jobs.context import JobContext
from backup_jobs.errors import (
    BackupJobsError,
    InternalError,
    LeaseLost,
    RedisUnavailable,
    error_from_dict,
)
from backup_jobs.models import Job, JobStatus, Operation, SubTask
from backup_jobs.operations import OPERATIONS, OperationSpec
from workers import root

# The action of an attempt that lost Redis while it ran (not a wrong URL: it worked before).
OUTAGE_ACTION = (
    "Redis became unreachable while the attempt ran; the job is retried automatically while "
    "attempts remain. If it keeps happening, check the server's health and its log."
)


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
    recording it) if it failed. Jobs the attempt created are sent once it has ended.
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
    spec = OPERATIONS[operation]
    events = logs.get_logger(
        "worker", job=job_id, item=started.job.item_name, attempt=attempt, task=task.request.id
    )
    events.info("attempt_started", operation=operation.value)
    subtasks: list[SubTask] = []
    results: dict[str, Any] = {}
    with root.heartbeats().hold(started.job) as check_lease:
        outcome = _attempt(task, started, spec, check_lease, subtasks, results, events)
        now = started.job.evolve(
            subtasks=tuple(subtasks), properties={**started.job.properties, **results}
        )
        if isinstance(outcome, BackupJobsError):
            _roll_back(spec, catalog, started, outcome, events)
            # Redis lost mid-attempt is an outage, not a fault of the job: retried.
            outage = isinstance(outcome, RedisUnavailable) or None
            failed = jobs.fail_attempt(
                catalog, now, outcome, settings.retry_delay_seconds, clock, started.fence, outage
            )
            events.warning("attempt_failed", code=outcome.code, status=failed.status.value)
            raise outcome
        properties, ctx = outcome
        done = jobs.complete(
            catalog, jobs.Started(now, started.fence), properties, clock, tuple(ctx.warnings)
        )
    events.info("job_completed", status=done.status.value)
    _send_followups(ctx, events)
    return summary(done)


def _attempt(
    task: Task[Any, Any],
    started: jobs.Started,
    spec: OperationSpec,
    check_lease: Callable[[], None],
    subtasks: list[SubTask],
    results: dict[str, Any],
    events: logs.EventLog,
) -> tuple[dict[str, Any], JobContext] | BackupJobsError:
    """Run the operation; its properties and context, or the error that ended it."""
    job, catalog = started.job, root.catalog()
    deadline = time.monotonic() + spec.soft_limit_seconds(root.settings())
    try:
        vault = root.vault(job.vault)
        ctx = JobContext(
            job,
            started.fence,
            vault,
            catalog,
            root.provider(vault),
            root.settings(),
            heartbeat=check_lease,
            guard=_guard(catalog, started, check_lease, deadline, spec),
            clock=root.clock(),
            dispatcher=root.dispatcher(),
            subtasks=subtasks,
            progress=_publisher(task, catalog, started, subtasks),
            results=results,
        )
        return spec.run(ctx), ctx
    except SoftTimeLimitExceeded:
        return spec.timeout_error(job.item_name)
    except LeaseLost:
        # The item is not ours any more: the reaper (or a newer attempt) records how this
        # attempt ended; writing here could only be refused or overwrite theirs.
        events.warning("attempt_abandoned", reason="lease lost")
        raise
    except RedisUnavailable as exc:
        return RedisUnavailable(job.item_name, exc.detail, action=OUTAGE_ACTION)
    except BackupJobsError as exc:
        return exc
    except Exception as exc:
        events.error("attempt_crashed", exc_info=True)
        return InternalError(job.item_name, repr(exc))


def _publisher(
    task: Task[Any, Any], catalog: Catalog, started: jobs.Started, subtasks: list[SubTask]
) -> Callable[[], None]:
    """Publish the sub-tasks as they go: in the job record (fenced) and to Flower."""

    def publish() -> None:
        try:
            catalog.save_job(started.job.evolve(subtasks=tuple(subtasks)), started.fence)
        except RedisUnavailable:
            return  # progress is shown, not needed: the next step publishes it again
        fields = progress_fields(subtasks)
        with contextlib.suppress(Exception):  # Flower's view is a convenience, never a failure
            task.send_event("task-progress", **fields)
            task.update_state(state="PROGRESS", meta=fields)

    return publish


def progress_fields(subtasks: list[SubTask]) -> dict[str, Any]:
    """What Flower shows of a running job: its current step and how far it got."""
    current = next(
        (s for s in subtasks if s.status == JobStatus.IN_PROGRESS),
        subtasks[-1] if subtasks else None,
    )
    if current is None:
        return {}
    return {
        # Flower shows only a task's standard fields: its state (PROGRESS) and, here, its
        # result column, until the task's real result replaces it.
        "result": _progress_line(current),
        "step": current.name,
        "percent": current.progress_percent,
        "bytes_done": current.bytes_done,
        "bytes_total": current.bytes_total,
        "bytes_per_second": current.throughput_bytes_per_second,
    }


def _progress_line(step: SubTask) -> str:
    """``Transfer data to vault 42% (27.0 of 64.0 MiB, 180.0 MiB/s)``: a step in one line."""
    line = (
        step.name if step.progress_percent is None else f"{step.name} {step.progress_percent:.0f}%"
    )
    if step.bytes_total:
        mib = 1 << 20
        detail = f"{step.bytes_done / mib:.1f} of {step.bytes_total / mib:.1f} MiB"
        rate = step.throughput_bytes_per_second
        line += f" ({detail}, {rate / mib:.1f} MiB/s)" if rate else f" ({detail})"
    return line


def _send_followups(ctx: JobContext, events: logs.EventLog) -> None:
    """Send the jobs the attempt created, now that this job has ended and freed its item."""
    for job in ctx.followups:
        try:
            jobs.send_first(ctx.catalog, root.dispatcher(), job, ctx.clock)
            events.info("followup_sent", followup=job.id, operation=job.operation.value)
        except BackupJobsError as exc:  # Queued: the queue sweep sends it later
            events.warning("followup_deferred", followup=job.id, code=exc.code)


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
    events: logs.EventLog,
) -> None:
    try:
        spec.on_failure(catalog, started.job, started.fence, error)
    except LeaseLost:
        events.info("rollback_skipped", reason="lease lost")
    except BackupJobsError as exc:
        events.warning("rollback_failed", code=exc.code)

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
from backup_jobs.cancels import CancelWatch, end_cancelled
from backup_jobs.catalog import Catalog
from backup_jobs.context import JobContext
from backup_jobs.errors import (
    BackupJobsError,
    Cancelled,
    InternalError,
    LeaseLost,
    RedisUnavailable,
    error_from_dict,
)
from backup_jobs.models import Job, JobStatus, Operation, SubTask
from backup_jobs.operations import OPERATIONS, OperationSpec
from workers import root

# How an attempt ended that Flower shows as a failed task (with the attempt's error).
_FAILED = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})
# The action of an attempt that lost Redis while it ran (not a wrong URL: it worked before).
OUTAGE_ACTION = (
    "Redis became unreachable while the attempt ran; the job is retried automatically while "
    "attempts remain. If it keeps happening, check the server's health and its log."
)


def summary(job: Job | None, **extra: Any) -> dict[str, Any]:
    """The small JSON result Flower shows for a task, what a person reads first first.

    Flower's task list shows the start of it in one line: the status, the VM, the error (or
    the warning) before the properties (recovery point, consistency, sizes) and the ids.
    """
    if job is None:
        return {"status": "unknown", **extra}
    error = job.error or {}
    return {
        "status": job.status.value,
        "item": job.item_name,
        **({"error": error.get("code"), "message": error.get("message")} if error else {}),
        **({"warnings": " ".join(job.warnings)} if job.warnings else {}),
        **{k: v for k, v in job.properties.items() if isinstance(v, str | int | float)},
        "operation": job.operation.value,
        "job_id": job.id,
        "attempt": job.attempt,
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
    watch = CancelWatch(catalog, job_id, fresh=True)  # begin_attempt has just read the status
    with root.heartbeats().hold(started.job) as check_lease:
        check = _checks(check_lease, watch, started.job.item_name)
        outcome = _attempt(task, started, spec, check, watch, subtasks, results, events)
        now = started.job.evolve(
            subtasks=tuple(subtasks), properties={**started.job.properties, **results}
        )
        if isinstance(outcome, BackupJobsError):
            ended, error = _end_failed(
                spec, catalog, jobs.Started(now, started.fence), outcome, watch, events
            )
            if isinstance(error, Cancelled):
                events.info("attempt_cancelled", code=error.code, status=ended.status.value)
            else:
                events.warning("attempt_failed", code=error.code, status=ended.status.value)
            raise error
        properties, ctx = outcome
        done = jobs.complete(
            catalog,
            jobs.Started(now, started.fence),
            properties,
            clock,
            tuple(ctx.warnings),
            next(iter(ctx.settled), None),
        )
    events.info("job_completed", status=done.status.value)
    _send_followups(ctx, events)
    return summary(done)


def _checks(check_lease: Callable[[], None], watch: CancelWatch, item: str) -> Callable[[], None]:
    """The attempt's heartbeat: ``LeaseLost`` if its lease is gone, ``Cancelled`` if asked."""

    def check() -> None:
        check_lease()
        if watch():
            raise Cancelled(item)

    return check


def _end_failed(
    spec: OperationSpec,
    catalog: Catalog,
    started: jobs.Started,
    error: BackupJobsError,
    watch: CancelWatch,
    events: logs.EventLog,
) -> tuple[Job, BackupJobsError]:
    """Roll back and record a failed attempt; the job as saved and the error it ended with.

    A cancel asked while the attempt ran wins over how it failed: the job ends ``Cancelled``,
    not retried, also if the cancel comes between this check and the save (compare-and-set).
    """
    settings, clock, job = root.settings(), root.clock(), started.job
    if not isinstance(error, Cancelled) and watch.refresh():
        error = Cancelled(job.item_name, f"the attempt had ended with {error.code}")
    _roll_back(spec, catalog, started, error, events)
    if not isinstance(error, Cancelled):
        # Redis lost mid-attempt is an outage, not a fault of the job: retried.
        outage = isinstance(error, RedisUnavailable) or None
        ended = jobs.fail_attempt(
            catalog,
            job,
            error,
            settings.retry_delay_seconds,
            clock,
            started.fence,
            outage,
            expect=JobStatus.IN_PROGRESS,
        )
        if ended.status != JobStatus.CANCELLING:
            return ended, error
        error = Cancelled(job.item_name, f"the attempt had ended with {error.code}")
    return end_cancelled(catalog, job, error, clock, started.fence), error


def _attempt(
    task: Task[Any, Any],
    started: jobs.Started,
    spec: OperationSpec,
    check_lease: Callable[[], None],
    watch: CancelWatch,
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
            should_cancel=watch,
            started_vm=started.vm,
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
            # Only while InProgress: a cancel's Cancelling is never overwritten.
            job = started.job.evolve(subtasks=tuple(subtasks))
            if not catalog.save_job(job, started.fence, expect=JobStatus.IN_PROGRESS):
                return
        except RedisUnavailable:
            return  # progress is shown, not needed: the next step publishes it again
        fields = progress_fields(subtasks)
        with contextlib.suppress(Exception):  # Flower's view is a convenience, never a failure
            # An event only: Flower's state comes from events, and a PROGRESS result in the
            # backend would never be replaced (job tasks store no result: ``workers.tasks``).
            task.send_event("task-progress", **fields)

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
    if ended is not None and ended.status in _FAILED and ended.error:
        raise error_from_dict(ended.error)
    if ended is None and job is not None and job.status == JobStatus.CANCELLED and job.error:
        raise error_from_dict(job.error)  # cancelled before this attempt started
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

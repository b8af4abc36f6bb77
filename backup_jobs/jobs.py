"""The life of a job: create, start an attempt under the item's lease, end it, retry, reap.

Pure over the catalog and dispatcher ports. The rules (DESIGN §5):
- the job record is the truth; a message for an attempt that already ran, or that runs now
  under a live lease, does nothing (so duplicate deliveries are harmless);
- an attempt starts only by acquiring the item's lease, never waiting: a lease held by another
  job fails this job at once with the operation's conflict error naming the running job;
- a retryable failure records the attempt, sets ``WaitingToRetry`` and puts the job in the
  durable retry set; the lease is released, never held while waiting;
- the reaper turns attempts whose lease expired into ``WorkerLost`` failures, invalidating the
  lost worker's fencing token first so that it cannot write afterwards.
"""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import timedelta

from backup_jobs.catalog import Catalog, Fence
from backup_jobs.clock import Clock
from backup_jobs.dispatcher import Dispatcher
from backup_jobs.errors import (
    BackupJobsError,
    DiscoveryInProgress,
    LeaseLost,
    OperationInProgress,
    WorkerLost,
)
from backup_jobs.models import Attempt, Job, JobStatus, Operation

VAULT_ITEM = "vault"


@dataclass(frozen=True)
class Started:
    """An attempt that holds its item's lease: the job as saved and its fence."""

    job: Job
    fence: Fence


def new_job(
    vault: str,
    operation: Operation,
    item: str,
    item_name: str,
    max_attempts: int,
    clock: Clock,
    job_id: str | None = None,
) -> Job:
    """A fresh ``Queued`` job record."""
    return Job(
        id=job_id or str(uuid.uuid4()),
        vault=vault,
        operation=operation,
        item=item,
        item_name=item_name,
        queued_at=clock.now(),
        max_attempts=max_attempts,
        properties={"vm_name": item_name} if item != VAULT_ITEM else {},
    )


def submit(catalog: Catalog, dispatcher: Dispatcher, job: Job, clock: Clock) -> Job:
    """Store a new job and send its first attempt; a job whose message cannot be sent fails.

    Without that, a job created while the broker refuses messages would stay Queued forever.
    """
    catalog.create_job(job)
    try:
        dispatcher.send(job, 1)
    except BackupJobsError as error:
        failed = job.evolve(status=JobStatus.FAILED, ended_at=clock.now(), error=error.to_dict())
        with contextlib.suppress(BackupJobsError):
            catalog.save_job(failed)
        raise
    return job


def begin_attempt(
    catalog: Catalog,
    job_id: str,
    attempt: int,
    task_id: str,
    lease_ttl_seconds: float,
    retry_delay_seconds: float,
    clock: Clock,
) -> Started | None:
    """Start attempt ``attempt`` of a job, or return None if this message has nothing to do.

    An item held by another job fails a first attempt at once (``OperationInProgress``); a
    retry that finds it busy waits for its next retry, while attempts remain.
    """
    job = catalog.get_job(job_id)
    if job is None or job.status.is_final or job.attempt >= attempt:
        return None
    lock = catalog.acquire_lock(job.vault, job.item, job.id, lease_ttl_seconds)
    if not lock.acquired:
        if lock.holder != job.id:
            _fail_conflict(catalog, job, attempt, task_id, lock.holder, retry_delay_seconds, clock)
        return None
    fence = Fence(job.vault, job.item, lock.token)
    now = clock.now()
    started = job.evolve(
        status=JobStatus.IN_PROGRESS,
        attempt=attempt,
        started_at=job.started_at or now,
        next_retry_at=None,
        fencing_token=lock.token,
        attempts=(*job.attempts, Attempt(attempt, now, task_id)),
    )
    catalog.save_job(started, fence)
    if job.status == JobStatus.WAITING_TO_RETRY:
        # However this attempt was sent, the job no longer waits to be retried.
        catalog.remove_retry(job.id)
    return Started(started, fence)


def complete(
    catalog: Catalog,
    started: Started,
    properties: dict[str, object],
    clock: Clock,
    warnings: tuple[str, ...] = (),
) -> Job:
    """End the job successfully and free its item."""
    status = JobStatus.COMPLETED_WITH_WARNINGS if warnings else JobStatus.COMPLETED
    job = _end_attempt(started.job, status, None, clock).evolve(
        status=status,
        ended_at=clock.now(),
        error=None,
        warnings=started.job.warnings + warnings,
        properties={**started.job.properties, **properties},
    )
    _save_ended(catalog, job, started.fence)
    return job


def fail_attempt(
    catalog: Catalog,
    job: Job,
    error: BackupJobsError,
    retry_delay_seconds: float,
    clock: Clock,
    fence: Fence | None,
    retryable: bool | None = None,
) -> Job:
    """End the current attempt with ``error``: retry later if allowed, else fail the job.

    ``retryable`` overrides the error's own flag (a busy item is final for a new job, not for
    a retry).
    """
    now = clock.now()
    failed = _end_attempt(job, JobStatus.FAILED, error, clock)
    if (error.retryable if retryable is None else retryable) and job.attempt < job.max_attempts:
        retry_at = now + timedelta(seconds=retry_delay_seconds)
        failed = failed.evolve(
            status=JobStatus.WAITING_TO_RETRY, next_retry_at=retry_at, error=error.to_dict()
        )
        if _save_ended(catalog, failed, fence):
            catalog.schedule_retry(job.id, retry_at)
        return failed
    failed = failed.evolve(status=JobStatus.FAILED, ended_at=now, error=error.to_dict())
    _save_ended(catalog, failed, fence)
    return failed


def dispatch_due_retries(catalog: Catalog, dispatcher: Dispatcher, clock: Clock) -> list[str]:
    """Send the next attempt of every job whose retry is due; returns their ids.

    The send comes before the removal from the retry set: a crash in between re-sends the
    same attempt (same task id), which the idempotent task ignores.
    """
    sent: list[str] = []
    for job_id in catalog.due_retries(clock.now()):
        job = catalog.get_job(job_id)
        if job is not None and job.status == JobStatus.WAITING_TO_RETRY:
            dispatcher.send(job, job.attempt + 1)
            sent.append(job_id)
        catalog.remove_retry(job_id)
    return sent


def reap_lost_jobs(catalog: Catalog, retry_delay_seconds: float, clock: Clock) -> list[str]:
    """Fail with ``WorkerLost`` every running attempt whose lease expired; returns their ids."""
    reaped: list[str] = []
    for job_id in catalog.in_progress():
        job = catalog.get_job(job_id)
        if job is None or job.status != JobStatus.IN_PROGRESS:
            continue
        if catalog.lock_holder(job.vault, job.item) == job.id:
            continue
        catalog.invalidate_fence(job.vault, job.item)
        current = catalog.get_job(job_id)
        if current is None or current.status != JobStatus.IN_PROGRESS:
            continue
        fail_attempt(
            catalog, current, WorkerLost(current.item_name), retry_delay_seconds, clock, None
        )
        reaped.append(job_id)
    return reaped


def _fail_conflict(
    catalog: Catalog,
    job: Job,
    attempt: int,
    task_id: str,
    holder: str | None,
    retry_delay_seconds: float,
    clock: Clock,
) -> None:
    running = catalog.get_job(holder) if holder else None
    detail = (
        f"Running job: {running.id} ({running.operation.value}, {running.status.value})."
        if running
        else f"Running job: {holder}."
    )
    cls = DiscoveryInProgress if job.operation == Operation.DISCOVERY else OperationInProgress
    error = cls(job.item_name, detail)
    now = clock.now()
    attempted = job.evolve(
        attempt=attempt,
        started_at=job.started_at or now,
        attempts=(*job.attempts, Attempt(attempt, now, task_id)),
    )
    fail_attempt(catalog, attempted, error, retry_delay_seconds, clock, None, attempt > 1)


def _end_attempt(job: Job, status: JobStatus, error: BackupJobsError | None, clock: Clock) -> Job:
    if not job.attempts:
        return job
    last = job.attempts[-1]
    ended = Attempt(
        last.number,
        last.started_at,
        last.celery_task_id,
        clock.now(),
        status,
        error.to_dict() if error else None,
    )
    return job.evolve(attempts=(*job.attempts[:-1], ended))


def _save_ended(catalog: Catalog, job: Job, fence: Fence | None) -> bool:
    """Save the ended attempt (which frees the item's lease); False if fenced out."""
    try:
        catalog.save_job(job, fence)
    except LeaseLost:
        # The reaper took this attempt over; its record wins and the item is no longer ours.
        return False
    return True

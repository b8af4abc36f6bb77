"""The life of a job: create, send, start an attempt under the item's lease, end it.

Pure over the catalog and dispatcher ports. The rules (DESIGN §5):
- the job record is the truth; a message for an attempt that already ran, or that runs now
  under a live lease, does nothing (so duplicate deliveries are harmless);
- an attempt starts only by acquiring the item's lease, never waiting: a lease held by another
  running job fails this job at once with the operation's conflict error naming that job; a
  lease left behind by a job that is no longer running is taken over;
- a retryable failure records the attempt and sets ``WaitingToRetry``; the catalog puts the job
  in the durable retry set in the same write, and frees the lease (never held while waiting);
- a job is ``Queued`` while a message for its next attempt is on its way to a worker (first
  attempt, or a retry the tick dispatched); the queue sweep (``ticks``) re-sends a message that
  may have been lost, so nothing stays Queued forever.

The ticks that move jobs along without a worker (due retries, the reaper, the queue sweep) are
in ``backup_jobs.ticks``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from backup_jobs.catalog import Catalog, Fence, LockResult, VMRead
from backup_jobs.clock import Clock
from backup_jobs.dispatcher import Dispatcher
from backup_jobs.errors import (
    BackupJobsError,
    CorruptRecord,
    DiscoveryInProgress,
    LeaseLost,
    OperationInProgress,
    Transient,
)
from backup_jobs.models import VM, Attempt, Job, JobStatus, Operation, Problem

VAULT_ITEM = "vault"


def is_vault_item(item: str) -> bool:
    """True for the vault's own lease items (``vault``, ``vault:gc``, ...); VM ids have a ``/``."""
    return item == VAULT_ITEM or item.startswith(VAULT_ITEM + ":")


# A message not confirmed sent within this long is re-sent by the queue sweep.
SEND_GRACE_SECONDS = 30.0
# A batch submission confirms its messages sent per this many jobs, in one write: sending
# them takes far less than the grace above, so none is re-sent meanwhile.
MARK_SENT_BATCH = 100
# A sent message whose job has not started is re-sent after this long (then after the job's
# age, up to the maximum): it may have been lost with Redis data. Duplicates are harmless.
RESEND_MIN_SECONDS = 3600.0
RESEND_MAX_SECONDS = 6 * 3600.0
# Statuses in which a job may hold its item's lease; a lease held by a job in any other
# status (or by no job at all) is left over from a crash and may be taken over.
LEASE_HOLDING = frozenset({JobStatus.IN_PROGRESS, JobStatus.QUEUED, JobStatus.CANCELLING})

# Puts an item back into a state a user can act on after a failed attempt (fenced).
Rollback = Callable[[Catalog, Job, Fence, BackupJobsError], None]


@dataclass(frozen=True)
class Started:
    """An attempt that holds its item's lease: the job as saved and its fence; and its VM's
    catalog record as read by the start, if it did (``Catalog.start_attempt``)."""

    job: Job
    fence: Fence
    vm: VMRead | None = None


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
        properties={} if is_vault_item(item) else {"vm_name": item_name},
        dispatched_at=clock.now(),
    )


def submit(catalog: Catalog, dispatcher: Dispatcher, job: Job, clock: Clock) -> Job:
    """Store a new job and send its first attempt; a job whose message cannot be sent fails.

    Submitting a job whose id exists does nothing and returns the existing job.

    If even recording that failure is impossible (Redis refuses writes), the job stays
    Queued and the queue sweep sends it once Redis is back.
    """
    return submit_all(catalog, dispatcher, [job], clock)[0]


def submit_all(
    catalog: Catalog, dispatcher: Dispatcher, new: Iterable[Job], clock: Clock
) -> list[Job]:
    """Submit each job as ``submit`` does, telling the sweep that their messages went out in
    one write per ``MARK_SENT_BATCH`` jobs rather than one per job.

    A job whose message cannot be sent fails and raises, as with ``submit``: the jobs sent
    before it are marked sent, and the jobs after it are not submitted.
    """
    submitted: list[Job] = []
    sent: list[Job] = []
    try:
        for job in new:
            if not create(catalog, job, clock):
                # A job with this id exists (a scheduled run's id is derived from its time):
                # it was submitted already, and sending it again would only make a duplicate.
                submitted.append(catalog.get_job(job.id) or job)
                continue
            _send(catalog, dispatcher, job, clock)
            submitted.append(job)
            sent.append(job)
            if len(sent) >= MARK_SENT_BATCH:
                mark_sent(catalog, sent, clock)
                sent = []
    finally:
        mark_sent(catalog, sent, clock)
    return submitted


def create(catalog: Catalog, job: Job, clock: Clock) -> bool:
    """Store a new Queued job without sending it; False if its id exists.

    If it is never sent (the caller died), the queue sweep sends it after a grace period.
    """
    return catalog.create_job(job, clock.now() + timedelta(seconds=SEND_GRACE_SECONDS))


def send_first(catalog: Catalog, dispatcher: Dispatcher, job: Job, clock: Clock) -> None:
    """Send a created job's first attempt; a job whose message cannot be sent fails."""
    _send(catalog, dispatcher, job, clock)
    mark_sent(catalog, [job], clock)


def _send(catalog: Catalog, dispatcher: Dispatcher, job: Job, clock: Clock) -> None:
    try:
        dispatcher.send(job, 1)
    except BackupJobsError as error:
        failed = job.evolve(status=JobStatus.FAILED, ended_at=clock.now(), error=error.to_dict())
        with contextlib.suppress(BackupJobsError):
            catalog.save_job(failed, expect=JobStatus.QUEUED)
        raise


def mark_sent(catalog: Catalog, sent: Iterable[Job], clock: Clock) -> None:
    """Tell the sweep these jobs' messages went out (one write); a failure here only means a
    duplicate later."""
    now = clock.now()
    checks = {}
    for job in sent:
        age = (now - (job.dispatched_at or job.queued_at)).total_seconds()
        wait = min(RESEND_MAX_SECONDS, max(RESEND_MIN_SECONDS, age))
        checks[job.id] = now + timedelta(seconds=wait)
    if checks:
        with contextlib.suppress(BackupJobsError):
            catalog.mark_sent(checks)


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

    An item held by another running job fails a first attempt at once (``OperationInProgress``);
    a retry that finds it busy waits for its next retry, while attempts remain.
    """
    job = catalog.get_job(job_id)
    if job is None or job.status.is_final or job.attempt >= attempt:
        return None
    now = clock.now()
    started = job.evolve(
        status=JobStatus.IN_PROGRESS,
        attempt=attempt,
        started_at=job.started_at or now,
        next_retry_at=None,
        fencing_token=None,
        attempts=(*job.attempts, Attempt(attempt, now, task_id)),
    )
    # The usual case, one write: the item is free, and only from the status read (a cancel
    # saved since then wins, and this message does nothing). It reads the VM too, which most
    # operations on one begin with.
    lock = catalog.start_attempt(
        started, lease_ttl_seconds, expect=job.status, read_vm=not is_vault_item(job.item)
    )
    if lock.acquired:
        return Started(started.evolve(fencing_token=lock.token), _fence(job, lock), lock.vm)
    if lock.holder not in (None, job.id) and _stale(catalog, lock.holder):
        lock = catalog.acquire_lock(
            job.vault, job.item, job.id, lease_ttl_seconds, stale_holder=lock.holder
        )
    if not lock.acquired:
        if lock.holder != job.id:
            _fail_conflict(catalog, job, attempt, task_id, lock.holder, retry_delay_seconds, clock)
        return None
    started = started.evolve(fencing_token=lock.token)
    if not catalog.save_job(started, _fence(job, lock), expect=job.status):
        catalog.release_lock(job.vault, job.item, job.id)
        return None
    return Started(started, _fence(job, lock))


def _fence(job: Job, lock: LockResult) -> Fence:
    return Fence(job.vault, job.item, lock.token)


def complete(
    catalog: Catalog,
    started: Started,
    properties: dict[str, object],
    clock: Clock,
    warnings: tuple[str, ...] = (),
    vm_state: VM | None = None,
) -> Job:
    """End the job successfully and free its item; ``vm_state`` is the VM state its success
    leaves (``JobContext.settle_vm``), written in the same fenced write."""
    status = JobStatus.COMPLETED_WITH_WARNINGS if warnings else JobStatus.COMPLETED
    job = end_attempt(started.job, status, None, clock).evolve(
        status=status,
        ended_at=clock.now(),
        error=None,
        warnings=started.job.warnings + warnings,
        properties={**started.job.properties, **properties},
    )
    return save_ended(catalog, job, started.fence, vm_state=vm_state)


def fail_attempt(
    catalog: Catalog,
    job: Job,
    error: BackupJobsError,
    retry_delay_seconds: float,
    clock: Clock,
    fence: Fence | None,
    retryable: bool | None = None,
    expect: JobStatus | None = None,
) -> Job:
    """End the current attempt with ``error``: retry later if allowed, else fail the job.

    ``retryable`` overrides the error's own flag (a busy item is final for a new job, not for
    a retry). With ``expect``, only if the stored job has that status (a worker expects
    ``InProgress``, so that a cancel asked meanwhile is not overwritten). Returns the job as
    the catalog now holds it (another writer's, if fenced out or not in ``expect``).
    """
    now = clock.now()
    retry = (error.retryable if retryable is None else retryable) and job.attempt < job.max_attempts
    if not retry and isinstance(error, Transient):  # retryable, but no attempt is left: say so
        error = error.after_last_attempt(job.attempt)
    failed = end_attempt(job, JobStatus.FAILED, error, clock).evolve(error=error.to_dict())
    if retry:
        retry_at = now + timedelta(seconds=retry_delay_seconds)
        failed = failed.evolve(status=JobStatus.WAITING_TO_RETRY, next_retry_at=retry_at)
    else:
        failed = failed.evolve(status=JobStatus.FAILED, ended_at=now)
    saved = save_ended(catalog, failed, fence, expect)
    if isinstance(error, CorruptRecord):  # its action points to `problem list`: it is there
        with contextlib.suppress(BackupJobsError):  # Redis gone: the job's record says it all
            record_problem(catalog, error, f"{job.operation.value} job {job.id}", clock)
    return saved


def record_problem(catalog: Catalog, error: BackupJobsError, by: str, clock: Clock) -> Problem:
    """Remember a record that ``by`` could not read (``CorruptRecord``: its key and why)."""
    problem = Problem(error.item or "(unknown key)", error.detail or error.message, by, clock.now())
    catalog.record_problem(problem)
    return problem


def end_attempt(job: Job, status: JobStatus, error: BackupJobsError | None, clock: Clock) -> Job:
    """The job with its current attempt closed with ``status`` (and ``error``).

    A sub-task the attempt left running (it failed, or its worker died) ends with it.
    """
    if not job.attempts:
        return job
    now = clock.now()
    job = job.evolve(
        subtasks=tuple(
            replace(step, status=status, ended_at=now)
            if step.status == JobStatus.IN_PROGRESS
            else step
            for step in job.subtasks
        )
    )
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


def _stale(catalog: Catalog, holder: str) -> bool:
    """True if a lease's holder is not a job that may hold it (gone, unreadable or ended)."""
    try:
        job = catalog.get_job(holder)
    except CorruptRecord:
        return True
    return job is None or job.status not in LEASE_HOLDING


def _fail_conflict(
    catalog: Catalog,
    job: Job,
    attempt: int,
    task_id: str,
    holder: str | None,
    retry_delay_seconds: float,
    clock: Clock,
) -> None:
    try:
        running = catalog.get_job(holder) if holder else None
    except CorruptRecord:
        running = None
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
    fail_attempt(
        catalog, attempted, error, retry_delay_seconds, clock, None, attempt > 1, job.status
    )


def save_ended(
    catalog: Catalog,
    job: Job,
    fence: Fence | None,
    expect: JobStatus | None = None,
    *,
    vm_state: VM | None = None,
) -> Job:
    """Save the ended attempt (which frees the item's lease) and ``vm_state`` with it; the
    stored job if fenced out, or if it is not in ``expect`` (when given)."""
    try:
        if catalog.save_job(job, fence, expect=expect, vm_state=vm_state):
            return job
        with contextlib.suppress(BackupJobsError):
            return catalog.get_job(job.id) or job
    except LeaseLost:
        # The reaper took this attempt over; its record wins and the item is no longer ours.
        with contextlib.suppress(BackupJobsError):
            return catalog.get_job(job.id) or job
    return job


def queued_since(job: Job) -> datetime:
    """When the job last entered Queued (its first send, or its latest retry's dispatch)."""
    return job.dispatched_at or job.queued_at

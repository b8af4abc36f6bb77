"""The clock ticks that move jobs along without a worker: due retries, the reaper, the sweep.

Beat sends them to a consumer of their own, so no job can delay them (DESIGN §10). Each is
idempotent (two beats, a re-run tick) and costs O(due entries). An entry whose job record is
gone or unreadable is dropped from its index and, if unreadable, recorded as a problem: one
bad record never stops the tick for everyone else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from backup_jobs import wire
from backup_jobs.catalog import Catalog, Fence
from backup_jobs.clock import Clock
from backup_jobs.dispatcher import Dispatcher
from backup_jobs.errors import BackupJobsError, CorruptRecord, LeaseLost, QueueTimeout, WorkerLost
from backup_jobs.jobs import (
    SEND_GRACE_SECONDS,
    Rollback,
    fail_attempt,
    mark_sent,
    queued_since,
)
from backup_jobs.models import Job, JobStatus, Problem


@dataclass
class TickReport:
    """What one tick did: the jobs it moved and the records it had to skip."""

    jobs: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def dispatch_due_retries(catalog: Catalog, dispatcher: Dispatcher, clock: Clock) -> TickReport:
    """Send the next attempt of every job whose retry is due.

    The job is first claimed (``WaitingToRetry`` → ``Queued``, only if still waiting: two beats
    or a cancel race harmlessly), then its message sent; a crash in between leaves a Queued job
    that the sweep sends.
    """
    report = TickReport()
    now = clock.now()
    for job_id in catalog.due_retries(now):
        job = _load(catalog, job_id, wire.RETRY_SET_KEY, "dispatch retries", clock, report)
        if job is None or job.status != JobStatus.WAITING_TO_RETRY:
            continue
        queued = job.evolve(status=JobStatus.QUEUED, dispatched_at=now)
        check_at = now + timedelta(seconds=SEND_GRACE_SECONDS)
        if catalog.save_job(queued, expect=JobStatus.WAITING_TO_RETRY, check_at=check_at):
            dispatcher.send(queued, queued.attempt + 1)
            mark_sent(catalog, queued, clock)
            report.jobs.append(job_id)
    return report


def reap_lost_jobs(
    catalog: Catalog, retry_delay_seconds: float, clock: Clock, rollback: Rollback
) -> TickReport:
    """Fail with ``WorkerLost`` every running attempt whose lease expired.

    The lost worker's fencing token is made stale first and the reaper writes with the new
    one, so a worker that was only frozen cannot write afterwards, and of two reapers only one
    records the failure. The item is rolled back as the worker itself would have.
    """
    report = TickReport()
    for job_id in catalog.in_progress():
        job = _load(catalog, job_id, wire.IN_PROGRESS_KEY, "reap lost jobs", clock, report)
        if job is None or job.status != JobStatus.IN_PROGRESS:
            continue
        if catalog.lock_holder(job.vault, job.item) == job.id:
            continue
        token = catalog.invalidate_fence(job.vault, job.item)
        current = catalog.get_job(job_id)
        if current is None or current.status != JobStatus.IN_PROGRESS:
            continue
        fence = Fence(job.vault, job.item, token)
        error = WorkerLost(current.item_name)
        try:
            rollback(catalog, current, fence, error)
        except LeaseLost:
            continue
        fail_attempt(catalog, current, error, retry_delay_seconds, clock, fence)
        report.jobs.append(job_id)
    return report


def sweep_queued(
    catalog: Catalog, dispatcher: Dispatcher, clock: Clock, queued_timeout_seconds: float
) -> TickReport:
    """Re-send the message of every Queued job that may have lost it; fail one queued too long.

    A job whose first message could not be sent (and could not be marked failed either), or
    whose message vanished with Redis data, would otherwise stay Queued forever. A re-sent
    attempt keeps its task id; a duplicate delivery is ignored by the task.
    """
    report = TickReport()
    now = clock.now()
    for job_id in catalog.due_queued(now):
        job = _load(catalog, job_id, wire.QUEUED_KEY, "sweep queued jobs", clock, report)
        if job is None or job.status != JobStatus.QUEUED:
            continue
        waited = (now - queued_since(job)).total_seconds()
        if waited > queued_timeout_seconds:
            _give_up(catalog, job, waited, clock)
        else:
            dispatcher.send(job, job.attempt + 1)
            mark_sent(catalog, job, clock)
        report.jobs.append(job_id)
    return report


def _give_up(catalog: Catalog, job: Job, waited: float, clock: Clock) -> None:
    queue = wire.OPERATION_QUEUES.get(job.operation, "its")
    detail = f"it waited {waited / 3600:.1f} h for a worker on the {queue} queue"
    error = QueueTimeout(job.item_name, detail)
    failed = job.evolve(status=JobStatus.FAILED, ended_at=clock.now(), error=error.to_dict())
    catalog.save_job(failed, expect=JobStatus.QUEUED)


def _load(
    catalog: Catalog, job_id: str, index: str, by: str, clock: Clock, report: TickReport
) -> Job | None:
    """The job of an index entry; a gone or unreadable one is dropped from that index."""
    try:
        job = catalog.get_job(job_id)
    except CorruptRecord as exc:
        problem = Problem(exc.item, exc.detail, by, clock.now())
        catalog.record_problem(problem)
        report.problems.append(problem)
        job = None
    if job is None:
        catalog.drop_from_index(index, job_id)
    return job


def record_problem(catalog: Catalog, error: BackupJobsError, by: str, clock: Clock) -> Problem:
    """Remember a record a tick could not read as a whole (e.g. an index of the wrong type)."""
    problem = Problem(error.item or "(unknown key)", error.detail or error.message, by, clock.now())
    catalog.record_problem(problem)
    return problem

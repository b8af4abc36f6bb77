"""The clock ticks that move jobs along without a worker: due retries, the reaper, the sweep,
the repair of the indexes they read, and the job history's retention.

Beat sends them to a consumer of their own, so no job can delay them (DESIGN §10). Each is
idempotent (two beats, a re-run tick) and costs O(due entries). One bad record never stops a
tick for everyone else:

- an entry whose job record is gone is dropped from its index;
- an entry whose job record (or a record its handling reads) cannot be read is *kept*: the
  problem is recorded, and in a sorted index the entry is backed off for
  ``UNREADABLE_BACKOFF_SECONDS`` so that it is not read at every beat. Once the user repairs
  the record the job goes on where it was; dropping the entry would strand it.

The index repair puts back entries a job's status implies but its index lacks (lost with an
index key of the wrong Redis type, say, which the catalog replaces). It reads every job record,
so it runs once every ``INDEX_REPAIR_EVERY_SECONDS``, and at once when the catalog asks for it
by forgetting when the last pass started (it does on replacing an index key).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta

from backup_jobs import wire
from backup_jobs.cancels import end_cancelled
from backup_jobs.catalog import Catalog, Fence
from backup_jobs.clock import Clock
from backup_jobs.dispatcher import Dispatcher
from backup_jobs.errors import (
    BackupJobsError,
    Cancelled,
    CorruptRecord,
    LeaseLost,
    QueueTimeout,
    WorkerLost,
)
from backup_jobs.jobs import (
    SEND_GRACE_SECONDS,
    Rollback,
    fail_attempt,
    mark_sent,
    queued_since,
    record_problem,
)
from backup_jobs.models import Job, JobStatus, Listing, Problem

# An unreadable record's entry in a sorted index is looked at again after this long: soon after
# a user repairs it, without reading it (and recording its problem) at every beat.
UNREADABLE_BACKOFF_SECONDS = 300.0
# A repair pass reads every job record, so it runs rarely; an entry lost in a way nobody noticed
# waits at most this long (a replaced index key asks for a pass at once).
INDEX_REPAIR_EVERY_SECONDS = 3600.0
# Final jobs the history tick deletes at most per run: a backlog (the setting just lowered)
# drains over a few ticks instead of holding Redis for one long write.
EXPIRE_BATCH = 500


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
    now = clock.now()

    def claim(job: Job) -> bool:
        if job.status != JobStatus.WAITING_TO_RETRY:
            return False
        queued = job.evolve(status=JobStatus.QUEUED, dispatched_at=now)
        check_at = now + timedelta(seconds=SEND_GRACE_SECONDS)
        if not catalog.save_job(queued, expect=JobStatus.WAITING_TO_RETRY, check_at=check_at):
            return False
        dispatcher.send(queued, queued.attempt + 1)
        mark_sent(catalog, [queued], clock)
        return True

    due = catalog.due_retries(now)
    return _each(catalog, due, wire.RETRY_SET_KEY, "dispatch retries", clock, claim)


def reap_lost_jobs(
    catalog: Catalog, retry_delay_seconds: float, clock: Clock, rollback: Rollback
) -> TickReport:
    """Fail with ``WorkerLost`` every running attempt whose lease expired; end ``Cancelled``
    one whose job was being cancelled (never stuck in ``Cancelling``, never retried).

    The lost worker's fencing token is made stale first and the reaper writes with the new
    one, so a worker that was only frozen cannot write afterwards, and of two reapers only one
    records the failure. The item is rolled back as the worker itself would have.
    """

    def reap(job: Job) -> bool:
        if not job.status.is_running or catalog.lock_holder(job.vault, job.item) == job.id:
            return False
        token = catalog.invalidate_fence(job.vault, job.item)
        current = catalog.get_job(job.id)
        if current is None or not current.status.is_running:
            return False
        fence = Fence(job.vault, job.item, token)
        # A job being cancelled ends Cancelled: its worker is gone, and it was asked to stop.
        cancelling = current.status == JobStatus.CANCELLING
        error: BackupJobsError = (
            Cancelled(current.item_name, "its worker was lost before it stopped")
            if cancelling
            else WorkerLost(current.item_name)
        )
        try:
            rollback(catalog, current, fence, error)
        except LeaseLost:
            return False
        if cancelling:
            end_cancelled(catalog, current, error, clock, fence)
        else:
            fail_attempt(catalog, current, error, retry_delay_seconds, clock, fence)
        return True

    running = catalog.in_progress()
    return _each(catalog, running, wire.IN_PROGRESS_KEY, "reap lost jobs", clock, reap)


def sweep_queued(
    catalog: Catalog, dispatcher: Dispatcher, clock: Clock, queued_timeout_seconds: float
) -> TickReport:
    """Re-send the message of every Queued job that may have lost it; fail one queued too long.

    A job whose first message could not be sent (and could not be marked failed either), or
    whose message vanished with Redis data, would otherwise stay Queued forever. A re-sent
    attempt keeps its task id; a duplicate delivery is ignored by the task.
    """
    now = clock.now()

    def sweep(job: Job) -> bool:
        if job.status != JobStatus.QUEUED:
            return False
        waited = (now - queued_since(job)).total_seconds()
        if waited > queued_timeout_seconds:
            _give_up(catalog, job, waited, clock)
        else:
            dispatcher.send(job, job.attempt + 1)
            mark_sent(catalog, [job], clock)
        return True

    due = catalog.due_queued(now)
    return _each(catalog, due, wire.QUEUED_KEY, "sweep queued jobs", clock, sweep)


def repair_job_indexes(
    catalog: Catalog, clock: Clock, every_seconds: float = INDEX_REPAIR_EVERY_SECONDS
) -> TickReport:
    """Put back the index entries job records imply, if a pass is due (see the module)."""
    now = clock.now()
    started = catalog.last_ticks().get(wire.INDEX_REPAIR_STARTED)
    if started is not None and 0 <= (now - started).total_seconds() < every_seconds:
        return TickReport()
    # Noted before the pass: a catalog that asks for another one meanwhile forgets this.
    catalog.record_tick(wire.INDEX_REPAIR_STARTED, now)
    restored = catalog.restore_job_indexes(now)
    problems = [replace(p, seen_by="repair job indexes", seen_at=now) for p in restored.problems]
    for problem in problems:
        catalog.record_problem(problem)
    return TickReport(list(restored), problems)


def expire_job_history(
    catalog: Catalog, clock: Clock, history_days: int, batch: int = EXPIRE_BATCH
) -> TickReport:
    """Delete up to ``batch`` final jobs that ended more than ``history_days`` ago.

    With every index entry, oldest first; a job that is not final is never deleted. Nothing
    due costs one range read of the retention index, so it runs at every tick.
    """
    now = clock.now()
    deleted = catalog.expire_jobs(now - timedelta(days=history_days), batch)
    problems = [replace(p, seen_by="expire job history", seen_at=now) for p in deleted.problems]
    for problem in problems:
        catalog.record_problem(problem)
    return TickReport(list(deleted), problems)


def _give_up(catalog: Catalog, job: Job, waited: float, clock: Clock) -> None:
    queue = wire.OPERATION_QUEUES.get(job.operation, "its")
    detail = f"it waited {waited / 3600:.1f} h for a worker on the {queue} queue"
    error = QueueTimeout(job.item_name, detail)
    failed = job.evolve(status=JobStatus.FAILED, ended_at=clock.now(), error=error.to_dict())
    catalog.save_job(failed, expect=JobStatus.QUEUED)


def _each(
    catalog: Catalog,
    entries: Listing[str],
    index: str,
    by: str,
    clock: Clock,
    handle: Callable[[Job], bool],
) -> TickReport:
    """Handle the job of every index entry (True: it moved); isolate the ones that fail to read.

    A job whose record is gone is dropped from the index; one whose record (or a record its
    handling reads) cannot be read is recorded and backed off, and keeps its entry.
    """
    report = TickReport(problems=list(entries.problems))
    for job_id in entries:
        try:
            job = catalog.get_job(job_id)
            if job is None:
                catalog.drop_from_index(index, job_id)
            elif handle(job):
                report.jobs.append(job_id)
        except CorruptRecord as exc:
            report.problems.append(record_problem(catalog, exc, by, clock))
            later = clock.now() + timedelta(seconds=UNREADABLE_BACKOFF_SECONDS)
            catalog.postpone(index, job_id, later)
    return report

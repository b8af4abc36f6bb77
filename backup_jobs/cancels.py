"""Cancelling a job in any phase that is not final (DESIGN §3, §5).

Pure over the catalog port. Every status change is a compare-and-set on the status read, so
a cancel never overwrites what a worker or a tick wrote meanwhile (it reads again and decides
again):

- ``Queued`` or ``WaitingToRetry``: ``Cancelled`` at once. The save drops the job from the
  queued or retry set in the same write; a message that reaches a worker later finds the job
  final and does nothing.
- ``InProgress``: ``Cancelling``. The attempt keeps its lease and its place in the in-progress
  set; it reads its job's status between chunks and sub-steps (``CancelWatch``), stops with
  ``errors.Cancelled``, rolls its item back and ends the job ``Cancelled`` (``end_cancelled``),
  never retried. If its worker died, the reaper ends it so.
- ``Cancelling``: nothing more to do. A final job: ``JobNotCancellable``.

An attempt that commits its work before it sees the cancel completes: the job ends
``Completed`` and the cancel came too late (the work is done, and undoing it is another
operation).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from backup_jobs.catalog import Catalog, Fence
from backup_jobs.clock import Clock
from backup_jobs.errors import BackupJobsError, Cancelled, JobNotCancellable, JobNotFound
from backup_jobs.jobs import end_attempt, save_ended
from backup_jobs.models import Job, JobStatus

# A running attempt reads its job's status at most this often: a cancel is seen within about
# this long plus one chunk, for one small GET per attempt per interval.
CANCEL_POLL_SECONDS = 0.5
# A cancel reads and compare-and-sets again this many times when the job's status moves under
# it (a worker starting it, a retry being dispatched) before it gives up.
CANCEL_ROUNDS = 5


def request_cancel(catalog: Catalog, job_id: str, clock: Clock) -> Job:
    """Cancel a job: ``Cancelled`` at once if nothing runs it, else ``Cancelling``.

    Returns the job as saved. ``JobNotFound``, or ``JobNotCancellable`` for a final job.
    """
    for _ in range(CANCEL_ROUNDS):
        job = catalog.get_job(job_id)
        if job is None:
            raise JobNotFound(job_id)
        if job.status.is_final:
            raise JobNotCancellable(job.item_name, f"job {job.id} is {job.status.value}")
        if job.status == JobStatus.CANCELLING:
            return job
        if job.status == JobStatus.IN_PROGRESS:
            wanted = job.evolve(status=JobStatus.CANCELLING)
        else:
            error = Cancelled(job.item_name, f"cancelled while {job.status.value}")
            wanted = cancelled(job, error, clock)
        if catalog.save_job(wanted, expect=job.status):
            return wanted
    raise JobNotCancellable(job_id, "its status kept changing while the cancel was asked")


def cancelled(job: Job, error: BackupJobsError, clock: Clock) -> Job:
    """The job ended ``Cancelled`` with ``error``: its running attempt (if any) closed so."""
    if job.status.is_running:
        job = end_attempt(job, JobStatus.CANCELLED, error, clock)
    return job.evolve(
        status=JobStatus.CANCELLED,
        ended_at=clock.now(),
        next_retry_at=None,
        error=error.to_dict(),
    )


def end_cancelled(
    catalog: Catalog, job: Job, error: BackupJobsError, clock: Clock, fence: Fence | None
) -> Job:
    """End a running attempt ``Cancelled`` (fenced; the save frees the lease)."""
    return save_ended(catalog, cancelled(job, error, clock), fence)


class CancelWatch:
    """``should_cancel`` for a running attempt: True once its job is ``Cancelling``.

    Reads the job record at most every ``poll_seconds`` (cheap enough to call per chunk) and
    remembers a cancel once seen. A read that fails (Redis down a moment, an unreadable
    record) counts as no cancel: the attempt goes on and the next poll looks again.
    ``fresh``: the status was just read (an attempt that has just started from it), so the
    first read is a poll interval away, not at the first call: a short job reads none.
    """

    def __init__(
        self,
        catalog: Catalog,
        job_id: str,
        poll_seconds: float = CANCEL_POLL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        *,
        fresh: bool = False,
    ) -> None:
        self._catalog = catalog
        self._job_id = job_id
        self._poll = poll_seconds
        self._monotonic = monotonic
        self._next = monotonic() + poll_seconds if fresh else 0.0
        self._seen = False

    def __call__(self) -> bool:
        """True if a cancel was asked (read again if the last read is older than the poll)."""
        if not self._seen and self._monotonic() >= self._next:
            self.refresh()
        return self._seen

    def refresh(self) -> bool:
        """Read the job's status now; True if a cancel was asked."""
        self._next = self._monotonic() + self._poll
        if not self._seen:
            try:
                job = self._catalog.get_job(self._job_id)
            except BackupJobsError:
                return False
            self._seen = job is not None and job.status == JobStatus.CANCELLING
        return self._seen

"""``--wait``: follow jobs to their end, showing changes, long steps, retries and failures.

Every status that is not final is treated alike (a job may be ``Queued`` again between
attempts): its line is repeated every 10 seconds with the time spent in it (every minute once
that is over five minutes, so that a six-hour transfer or a 15-minute retry delay stays
readable), and ``WaitingToRetry`` says when the next attempt is due. A job with sub-tasks
(a backup) names the running one and how far it got; on a terminal, one job's transfer is
drawn as a progress bar redrawn in place.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

import click

from backup_jobs.cli import render
from backup_jobs.cli.common import echo_error, outcome
from backup_jobs.client import JobHandle, JobTimeout
from backup_jobs.errors import EXIT_INTERRUPTED, BackupJobsError
from backup_jobs.models import Job, JobStatus, SubTask, utcnow

# How often --wait re-reads the jobs it follows.
WAIT_POLL_SECONDS = 0.25
# How often a job that stays in one status gets its line again, with the time spent in it;
# less often once it has been in that status for a while.
PROGRESS_EVERY_SECONDS = 10.0
PROGRESS_EVERY_LONG_SECONDS = 60.0
LONG_STATUS_SECONDS = 300.0
# Statuses whose line is followed by the job's error and what to do about it.
_EXPLAINED = frozenset({JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.WAITING_TO_RETRY})


def wait_for(
    handles: Sequence[JobHandle], as_json: bool, refused: Sequence[BackupJobsError] = ()
) -> int:
    """Follow jobs to the end, then print them; the exit code of the most severe outcome.

    Ctrl-C stops the waiting, not the jobs: they go on, and the message says how to follow them.
    """
    waiter = Waiter(handles, show=not as_json)
    try:
        finished = waiter.run()
    except KeyboardInterrupt:
        click.echo(
            f"\nStopped waiting; the jobs go on. Follow them with `backup-jobs job show ID` "
            f"(IDs: {' '.join(waiter.pending)}) or `backup-jobs job list`.",
            err=True,
        )
        return EXIT_INTERRUPTED
    if as_json:
        render.emit_json([job.to_dict() for job in finished])
    elif finished:
        click.echo(render.job_table(finished))
    return outcome(finished, refused)


class Waiter:
    """Polls jobs until each is final, printing progress on stderr when ``show`` is set."""

    def __init__(
        self,
        handles: Sequence[JobHandle],
        show: bool,
        now: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
        terminal: bool | None = None,
        timeout: float | None = None,
    ) -> None:
        self.pending = {handle.id: handle for handle in handles}
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._timeout = timeout
        # A bar redrawn in place only for one job, on a terminal (a log gets lines).
        tty = sys.stderr.isatty() if terminal is None else terminal
        self._bar = tty and len(handles) == 1
        self._bar_drawn = False
        self.finished: list[Job] = []
        self._show = show
        self._now = now
        self._sleep = sleep
        # Per job: the status last shown, since when the job has had it, when its line was printed.
        self._shown: dict[str, tuple[JobStatus, datetime, datetime]] = {}

    def run(self) -> list[Job]:
        """Poll until every job is final; the final records, in the order they ended.

        ``JobTimeout`` if a ``timeout`` was given and passes first (the jobs go on).
        """
        while self.pending:
            if self._deadline is not None and time.monotonic() >= self._deadline:
                late = ", ".join(self.pending)
                raise JobTimeout(f"jobs {late} are not final after {self._timeout}s")
            for job_id, handle in list(self.pending.items()):
                job = handle.job()
                if self._show:
                    self._progress(job)
                if job.status.is_final:
                    self.finished.append(job)
                    del self.pending[job_id]
            if self.pending:
                self._sleep(WAIT_POLL_SECONDS)
        return self.finished

    def _progress(self, job: Job) -> None:
        """Print a job's line when its status changed or has lasted another while."""
        step = current_step(job)
        if self._bar and step is not None and step.bytes_total and not job.status.is_final:
            click.echo("\r" + render.progress_bar(step), nl=False, err=True)
            self._bar_drawn = True
            return
        if self._bar_drawn:
            click.echo("", err=True)  # end the bar's line before the next one
            self._bar_drawn = False
        now = self._now()
        status, since, printed = self._shown.get(job.id, (None, now, now))
        changed = status != job.status
        if not changed and (now - printed).total_seconds() < _interval(now - since):
            return
        if changed:
            since = status_since(job) or now
        self._shown[job.id] = (job.status, since, now)
        click.echo(status_line(job, now, since), err=True)
        if changed and job.error and job.status in _EXPLAINED:
            echo_error(job.error, prefix="  error")
        if changed and job.status.is_final:
            for warning in job.warnings:
                click.echo(f"  warning: {warning}", err=True)


def _interval(spent: timedelta) -> float:
    """Seconds between two lines of a job that stays in one status for ``spent``."""
    if spent.total_seconds() < LONG_STATUS_SECONDS:
        return PROGRESS_EVERY_SECONDS
    return PROGRESS_EVERY_LONG_SECONDS


def status_since(job: Job) -> datetime | None:
    """When the job entered its current status, where the record says it."""
    if job.status == JobStatus.IN_PROGRESS and job.attempts:
        return job.attempts[-1].started_at
    if job.status == JobStatus.WAITING_TO_RETRY and job.attempts:
        return job.attempts[-1].ended_at
    if job.status == JobStatus.QUEUED and job.attempt == 0:
        return job.queued_at
    return None


def status_line(job: Job, now: datetime, since: datetime) -> str:
    """``2026-04-01 09:01:20  cs-app/app01  InProgress (1m20s)``: the job's status and its time.

    A job waiting to retry says when its next attempt is due instead.
    """
    text = job.status.value
    if job.status == JobStatus.WAITING_TO_RETRY and job.next_retry_at:
        due = job.next_retry_at
        text += f", next attempt at {render.clock_time(due, now)} (in {render.duration(due - now)})"
    elif not job.status.is_final and (now - since).total_seconds() >= 1:
        text += f" ({render.duration(now - since)})"
    step = current_step(job)
    if step is not None and not job.status.is_final:
        percent = f" {step.progress_percent:.0f}%" if step.progress_percent is not None else ""
        text += f", {step.name}{percent}"
    return f"{render.short_time(now)}  {job.item_name:<24} {text}"


def current_step(job: Job) -> SubTask | None:
    """The sub-task a job is in now, if it has sub-tasks and one is running."""
    return next((st for st in job.subtasks if st.status == JobStatus.IN_PROGRESS), None)

"""Beat applies the policies: the dispatch tick starts one Backup job per due item (DESIGN §6).

O(due), not O(items): the due items come from one sorted set of next-run times. Idempotent:
a scheduled run's job id is derived from (vault, VM, scheduled time), so two beats, a re-run
tick or a crash between two writes never start one run twice; the next run is computed
from the scheduled time, not from the clock, and a tick moves an item's next run only if it
is still the run that tick handled, so a late second tick never undoes a newer schedule.
A run whose item's previous backup has not finished is skipped (no pile-up); a run found
more than the start window after its time (the service was down) is recorded as missed, not
run late. Both are kept in the item's history of skipped and missed runs.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cache

from backup_jobs import jobs
from backup_jobs.catalog import Catalog, DueRun
from backup_jobs.clock import Clock
from backup_jobs.dispatcher import Dispatcher
from backup_jobs.errors import CorruptRecord
from backup_jobs.items import RunOutcome, ScheduleEvent
from backup_jobs.jobs import record_problem
from backup_jobs.models import Operation
from backup_jobs.policies import Policy, next_run
from backup_jobs.ticks import UNREADABLE_BACKOFF_SECONDS, TickReport

# After a long outage, at most this many past runs of one item are accounted in one tick.
MAX_CATCH_UP = 1000
_NAMESPACE = uuid.UUID("3f6c1b52-6d0f-4a5e-9a51-2b8e0f1c7d44")


def scheduled_job_id(vault: str, vm_id: str, at: datetime) -> str:
    """The id of the Backup job of one scheduled run: the same for every tick that tries."""
    return str(uuid.uuid5(_NAMESPACE, f"{vault}|{vm_id}|{at.timestamp():.0f}"))


def dispatch_due_backups(
    catalog: Catalog,
    dispatcher: Dispatcher,
    clock: Clock,
    start_window_seconds: float,
    max_attempts: int,
) -> TickReport:
    """Start, skip or record as missed every due run; reschedule each item's next run."""
    report = TickReport()
    now = clock.now()
    # A tick reads each policy once, not once per due item (a change shows at the next tick).
    policies = cache(catalog.get_policy)
    window = start_window_seconds
    for run in catalog.due_runs(now):
        try:
            _dispatch(catalog, policies, dispatcher, clock, run, window, max_attempts, report)
        except CorruptRecord as exc:
            report.problems.append(record_problem(catalog, exc, "dispatch-due-backups", clock))
            # Kept in the schedule, looked at again later: once repaired, the item goes on.
            later = now + timedelta(seconds=UNREADABLE_BACKOFF_SECONDS)
            catalog.move_run(run.vault, run.vm_id, run.scheduled_at, later)
    return report


def _dispatch(
    catalog: Catalog,
    policies: Callable[[str, str], Policy | None],
    dispatcher: Dispatcher,
    clock: Clock,
    run: DueRun,
    window: float,
    max_attempts: int,
    report: TickReport,
) -> None:
    item = catalog.get_item(run.vault, run.vm_id)
    policy = policies(run.vault, item.policy) if item else None
    if item is None or policy is None or not item.state.scheduled:
        catalog.move_run(run.vault, run.vm_id, run.scheduled_at, None)
        return
    now, at = clock.now(), run.scheduled_at
    for _ in range(MAX_CATCH_UP):
        if (now - at).total_seconds() > window:
            hours = window / 3600
            reason = f"not started within the {hours:g} h start window of its time"
            catalog.record_event(run.vault, run.vm_id, ScheduleEvent(at, RunOutcome.MISSED, reason))
        else:
            _start_or_skip(catalog, dispatcher, clock, run, at, policy, max_attempts, report)
        at = next_run(policy, at)
        if at > now:
            break
    catalog.move_run(run.vault, run.vm_id, run.scheduled_at, at)


def _start_or_skip(
    catalog: Catalog,
    dispatcher: Dispatcher,
    clock: Clock,
    run: DueRun,
    at: datetime,
    policy: Policy,
    max_attempts: int,
    report: TickReport,
) -> None:
    job_id = scheduled_job_id(run.vault, run.vm_id, at)
    active = catalog.active_backup(run.vault, run.vm_id)
    running = catalog.get_job(active) if active and active != job_id else None
    if running is not None and not running.status.is_final:
        reason = f"backup job {running.id} ({running.status.value}) had not finished"
        event = ScheduleEvent(at, RunOutcome.SKIPPED, reason)
        catalog.record_event(run.vault, run.vm_id, event)
        return
    job = jobs.new_job(
        run.vault, Operation.BACKUP, run.vm_id, run.vm_id, max_attempts, clock, job_id=job_id
    )
    job = job.evolve(
        properties={
            **job.properties,
            "trigger": "schedule",
            "policy": policy.name,
            "scheduled_at": at.isoformat(),
        }
    )
    if jobs.create(catalog, job, clock):
        catalog.set_active_backup(run.vault, run.vm_id, job.id)
        jobs.send_first(catalog, dispatcher, job, clock)
        report.jobs.append(job.id)

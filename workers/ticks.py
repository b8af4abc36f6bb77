"""Running beat's ticks on the tick consumer: one domain function each, never a crash.

A tick that meets Redis trouble logs it and returns: the next tick does the work. A record
it cannot read is skipped, logged and kept in the problems list (``backup-jobs problem
list``); the tick goes on with the rest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from backup_jobs import jobs, logs, maintenance_ticks, scheduling, ticks, wire
from backup_jobs.catalog import Catalog
from backup_jobs.clock import Clock
from backup_jobs.errors import BackupJobsError, CorruptRecord
from backup_jobs.operations import roll_back
from workers import root
from workers.signals import record_heartbeat

log = logs.get_logger("ticks")

Tick = Callable[[Catalog, Clock], ticks.TickReport]


TICKS: dict[str, Tick] = {
    "dispatch-due-retries": lambda catalog, clock: ticks.dispatch_due_retries(
        catalog, root.dispatcher(), clock
    ),
    "reap-lost-jobs": lambda catalog, clock: ticks.reap_lost_jobs(
        catalog, root.settings().retry_delay_seconds, clock, roll_back
    ),
    "sweep-queued-jobs": lambda catalog, clock: ticks.sweep_queued(
        catalog, root.dispatcher(), clock, root.settings().queued_timeout_seconds
    ),
    "dispatch-due-backups": lambda catalog, clock: scheduling.dispatch_due_backups(
        catalog,
        root.dispatcher(),
        clock,
        root.settings().start_window_seconds,
        root.settings().max_attempts,
    ),
    "repair-job-indexes": ticks.repair_job_indexes,
    "start-maintenance": lambda catalog, clock: maintenance_ticks.start_maintenance(
        catalog,
        root.dispatcher(),
        clock,
        maintenance_ticks.cadence(root.settings()),
        root.settings().max_attempts,
    ),
    "expire-job-history": lambda catalog, clock: ticks.expire_job_history(
        catalog, clock, root.settings().job_history_days
    ),
}


def run_tick(name: str) -> dict[str, Any]:
    """Run the tick ``name``; a small dict of what it did, for the worker log."""
    catalog, clock = root.catalog(), root.clock()
    record_heartbeat(wire.TICKS_HEARTBEAT_KEY)
    try:
        report = TICKS[name](catalog, clock)
    except CorruptRecord as exc:
        report = ticks.TickReport(problems=[jobs.record_problem(catalog, exc, name, clock)])
    except BackupJobsError as exc:
        log.warning("tick_skipped", tick=name, code=exc.code, reason=exc.message)
        return {"tick": name, "skipped": exc.code}
    for problem in report.problems:
        log.warning("record_skipped", tick=name, key=problem.key, reason=problem.reason)
    if report.jobs:
        log.info("tick_moved_jobs", tick=name, jobs=",".join(report.jobs))
    with contextlib.suppress(BackupJobsError):
        catalog.record_tick(name, clock.now())
    return {"tick": name, "jobs": report.jobs, "problems": [p.key for p in report.problems]}

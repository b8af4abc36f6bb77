"""The tasks: thin, by name, ids in and a small dict out (names pinned in ``backup_jobs.wire``).

Job tasks list ``BackupJobsError`` in ``throws``: a failed attempt shows as FAILURE in Flower
but is logged as an expected outcome, without a traceback. Job tasks store no Celery result
(``ignore_result``): the job record is what is kept (DESIGN §5), nothing reads a job task's
result, and Flower shows states and results from the task events, which are still sent; the
result backend's writes (STARTED, then the outcome: four round trips) were a fifth of a short
job's worker time. Tick tasks send no events and store no result either, so they never crowd
Flower's task list.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from backup_jobs import wire
from backup_jobs.errors import BackupJobsError
from backup_jobs.models import Operation
from backup_jobs.operations import CLEANUP_MARGIN_SECONDS, OPERATIONS
from workers import root
from workers.app import app
from workers.base import run_job
from workers.ticks import run_tick


def _soft_limit(operation: Operation) -> int:
    return int(OPERATIONS[operation].soft_limit_seconds(root.settings()))


# What each job task does (its docstring); ``shown`` are the kwargs Flower shows beside the job
# id (``wire.SHOWN_PROPERTIES``).
JOB_TASK_DOCS: dict[Operation, str] = {
    Operation.DISCOVERY: "Discover the vault's VMs (``shown``: the vault, for Flower).",
    Operation.REGISTER: "Register one VM (``shown``: the VM and vault, for Flower).",
    Operation.CONFIGURE_PROTECTION: (
        "Protect one VM with a policy (``shown``: the VM, vault and policy, for Flower)."
    ),
    Operation.BACKUP: "Back up one VM into the vault (``shown``: the VM and vault, for Flower).",
    Operation.RESTORE: (
        "Restore a recovery point of one VM (``shown``: the VM, point and target, for Flower)."
    ),
    Operation.STOP_PROTECTION: (
        "Stop protecting one VM and keep its points (``shown``: the VM and vault, for Flower)."
    ),
    Operation.DELETE_BACKUP_DATA: (
        "Stop protecting one VM and delete its points (``shown``: the VM and vault)."
    ),
    Operation.PRUNE: "Apply the policies' retention to the vault's points (``shown``: the vault).",
    Operation.VERIFY: (
        "Re-read and re-hash the vault's chunks and mark its points (``shown``: the vault)."
    ),
    Operation.GARBAGE_COLLECT: (
        "One two-run GC pass over the vault (``shown``: the vault, for Flower)."
    ),
}


def _job_task(operation: Operation) -> Task[Any, Any]:
    """The task of one operation: its pinned name, its time limits, one line of body."""

    def run(self: Task[Any, Any], /, job_id: str, attempt: int = 1, **shown: str) -> dict[str, Any]:
        return run_job(self, operation, job_id, attempt)

    name = wire.task_name(operation)
    run.__name__ = run.__qualname__ = name.removeprefix(wire.TASK_PREFIX)
    run.__doc__ = JOB_TASK_DOCS[operation]
    soft = _soft_limit(operation)
    task: Task[Any, Any] = app.task(
        name=name,
        bind=True,
        soft_time_limit=soft,
        time_limit=soft + CLEANUP_MARGIN_SECONDS,
        throws=(BackupJobsError,),
        ignore_result=True,
    )(run)
    return task


JOB_TASKS = {operation: _job_task(operation) for operation in Operation}


_TICK_OPTIONS: dict[str, Any] = {"send_events": False, "ignore_result": True}


@app.task(name=wire.TASK_DISPATCH_RETRIES, **_TICK_OPTIONS)
def dispatch_due_retries() -> dict[str, Any]:
    """Beat tick: send the next attempt of every job whose retry is due."""
    return run_tick("dispatch-due-retries")


@app.task(name=wire.TASK_REAP, **_TICK_OPTIONS)
def reap_lost_jobs() -> dict[str, Any]:
    """Beat tick: fail with WorkerLost the attempts whose worker died, and schedule retries."""
    return run_tick("reap-lost-jobs")


@app.task(name=wire.TASK_SWEEP_QUEUED, **_TICK_OPTIONS)
def sweep_queued() -> dict[str, Any]:
    """Beat tick: re-send the messages of Queued jobs that may have lost theirs."""
    return run_tick("sweep-queued-jobs")


@app.task(name=wire.TASK_DISPATCH_BACKUPS, **_TICK_OPTIONS)
def dispatch_due_backups() -> dict[str, Any]:
    """Beat tick: start a Backup job for every protected item whose scheduled run is due."""
    return run_tick("dispatch-due-backups")


@app.task(name=wire.TASK_REPAIR_INDEXES, **_TICK_OPTIONS)
def repair_job_indexes() -> dict[str, Any]:
    """Beat tick: put back index entries the job records imply, when a repair pass is due."""
    return run_tick("repair-job-indexes")


@app.task(name=wire.TASK_START_MAINTENANCE, **_TICK_OPTIONS)
def start_maintenance() -> dict[str, Any]:
    """Beat tick: start each vault's Prune, Verify or GarbageCollect job once it is due."""
    return run_tick("start-maintenance")


@app.task(name=wire.TASK_EXPIRE_HISTORY, **_TICK_OPTIONS)
def expire_job_history() -> dict[str, Any]:
    """Beat tick: delete a batch of final jobs that ended before the job history's days."""
    return run_tick("expire-job-history")

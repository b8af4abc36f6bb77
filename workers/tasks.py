"""The tasks: thin, by name, ids in and a small dict out (names pinned in ``backup_jobs.wire``).

Job tasks list ``BackupJobsError`` in ``throws``: a failed attempt shows as FAILURE in Flower
but is logged as an expected outcome, without a traceback. Tick tasks send no events and store
no result, so they never crowd Flower's task list.
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


def _hard_limit(operation: Operation) -> int:
    return _soft_limit(operation) + CLEANUP_MARGIN_SECONDS


@app.task(
    name=wire.task_name(Operation.DISCOVERY),
    bind=True,
    soft_time_limit=_soft_limit(Operation.DISCOVERY),
    time_limit=_hard_limit(Operation.DISCOVERY),
    throws=(BackupJobsError,),
)
def discovery(
    self: Task[Any, Any], /, job_id: str, attempt: int = 1, **shown: str
) -> dict[str, Any]:
    """Discover the vault's VMs (``shown``: the vault, for Flower)."""
    return run_job(self, Operation.DISCOVERY, job_id, attempt)


@app.task(
    name=wire.task_name(Operation.REGISTER),
    bind=True,
    soft_time_limit=_soft_limit(Operation.REGISTER),
    time_limit=_hard_limit(Operation.REGISTER),
    throws=(BackupJobsError,),
)
def register(
    self: Task[Any, Any], /, job_id: str, attempt: int = 1, **shown: str
) -> dict[str, Any]:
    """Register one VM (``shown``: the VM and vault, for Flower)."""
    return run_job(self, Operation.REGISTER, job_id, attempt)


@app.task(
    name=wire.task_name(Operation.CONFIGURE_PROTECTION),
    bind=True,
    soft_time_limit=_soft_limit(Operation.CONFIGURE_PROTECTION),
    time_limit=_hard_limit(Operation.CONFIGURE_PROTECTION),
    throws=(BackupJobsError,),
)
def configure_protection(
    self: Task[Any, Any], /, job_id: str, attempt: int = 1, **shown: str
) -> dict[str, Any]:
    """Protect one VM with a policy (``shown``: the VM, vault and policy, for Flower)."""
    return run_job(self, Operation.CONFIGURE_PROTECTION, job_id, attempt)


@app.task(
    name=wire.task_name(Operation.BACKUP),
    bind=True,
    soft_time_limit=_soft_limit(Operation.BACKUP),
    time_limit=_hard_limit(Operation.BACKUP),
    throws=(BackupJobsError,),
)
def backup(self: Task[Any, Any], /, job_id: str, attempt: int = 1, **shown: str) -> dict[str, Any]:
    """Back up one VM into the vault (``shown``: the VM and vault, for Flower)."""
    return run_job(self, Operation.BACKUP, job_id, attempt)


@app.task(
    name=wire.task_name(Operation.RESTORE),
    bind=True,
    soft_time_limit=_soft_limit(Operation.RESTORE),
    time_limit=_hard_limit(Operation.RESTORE),
    throws=(BackupJobsError,),
)
def restore(self: Task[Any, Any], /, job_id: str, attempt: int = 1, **shown: str) -> dict[str, Any]:
    """Restore a recovery point of one VM (``shown``: the VM, point and target, for Flower)."""
    return run_job(self, Operation.RESTORE, job_id, attempt)


@app.task(
    name=wire.task_name(Operation.STOP_PROTECTION),
    bind=True,
    soft_time_limit=_soft_limit(Operation.STOP_PROTECTION),
    time_limit=_hard_limit(Operation.STOP_PROTECTION),
    throws=(BackupJobsError,),
)
def stop_protection(
    self: Task[Any, Any], /, job_id: str, attempt: int = 1, **shown: str
) -> dict[str, Any]:
    """Stop protecting one VM and keep its points (``shown``: the VM and vault, for Flower)."""
    return run_job(self, Operation.STOP_PROTECTION, job_id, attempt)


@app.task(
    name=wire.task_name(Operation.DELETE_BACKUP_DATA),
    bind=True,
    soft_time_limit=_soft_limit(Operation.DELETE_BACKUP_DATA),
    time_limit=_hard_limit(Operation.DELETE_BACKUP_DATA),
    throws=(BackupJobsError,),
)
def delete_backup_data(
    self: Task[Any, Any], /, job_id: str, attempt: int = 1, **shown: str
) -> dict[str, Any]:
    """Stop protecting one VM and delete its points (``shown``: the VM and vault)."""
    return run_job(self, Operation.DELETE_BACKUP_DATA, job_id, attempt)


@app.task(
    name=wire.task_name(Operation.PRUNE),
    bind=True,
    soft_time_limit=_soft_limit(Operation.PRUNE),
    time_limit=_hard_limit(Operation.PRUNE),
    throws=(BackupJobsError,),
)
def prune(self: Task[Any, Any], /, job_id: str, attempt: int = 1, **shown: str) -> dict[str, Any]:
    """Apply the policies' retention to the vault's points (``shown``: the vault)."""
    return run_job(self, Operation.PRUNE, job_id, attempt)


@app.task(
    name=wire.task_name(Operation.VERIFY),
    bind=True,
    soft_time_limit=_soft_limit(Operation.VERIFY),
    time_limit=_hard_limit(Operation.VERIFY),
    throws=(BackupJobsError,),
)
def verify(self: Task[Any, Any], /, job_id: str, attempt: int = 1, **shown: str) -> dict[str, Any]:
    """Re-read and re-hash the vault's chunks and mark its points (``shown``: the vault)."""
    return run_job(self, Operation.VERIFY, job_id, attempt)


@app.task(
    name=wire.task_name(Operation.GARBAGE_COLLECT),
    bind=True,
    soft_time_limit=_soft_limit(Operation.GARBAGE_COLLECT),
    time_limit=_hard_limit(Operation.GARBAGE_COLLECT),
    throws=(BackupJobsError,),
)
def garbage_collect(
    self: Task[Any, Any], /, job_id: str, attempt: int = 1, **shown: str
) -> dict[str, Any]:
    """One two-run GC pass over the vault (``shown``: the vault, for Flower)."""
    return run_job(self, Operation.GARBAGE_COLLECT, job_id, attempt)


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

"""The tasks: thin, by name, ids in and a small dict out (names pinned in ``backup_jobs.wire``)."""

from __future__ import annotations

from typing import Any

from celery import Task

from backup_jobs import jobs, wire
from backup_jobs.dispatchers.celery import CeleryDispatcher
from backup_jobs.models import Operation
from backup_jobs.operations import CLEANUP_MARGIN_SECONDS, OPERATIONS
from workers import root
from workers.app import app
from workers.base import run_job


def _soft_limit(operation: Operation) -> int:
    return int(OPERATIONS[operation].soft_limit_seconds(root.settings()))


def _hard_limit(operation: Operation) -> int:
    return _soft_limit(operation) + CLEANUP_MARGIN_SECONDS


@app.task(
    name=wire.task_name(Operation.DISCOVERY),
    bind=True,
    soft_time_limit=_soft_limit(Operation.DISCOVERY),
    time_limit=_hard_limit(Operation.DISCOVERY),
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
)
def register(
    self: Task[Any, Any], /, job_id: str, attempt: int = 1, **shown: str
) -> dict[str, Any]:
    """Register one VM (``shown``: the VM and vault, for Flower)."""
    return run_job(self, Operation.REGISTER, job_id, attempt)


@app.task(name=wire.TASK_DISPATCH_RETRIES)
def dispatch_due_retries() -> dict[str, Any]:
    """Beat tick: send the next attempt of every job whose retry is due."""
    sent = jobs.dispatch_due_retries(root.catalog(), CeleryDispatcher(app), root.clock())
    return {"retried": sent}


@app.task(name=wire.TASK_REAP)
def reap_lost_jobs() -> dict[str, Any]:
    """Beat tick: fail with WorkerLost the attempts whose worker died, and schedule retries."""
    reaped = jobs.reap_lost_jobs(root.catalog(), root.settings().retry_delay_seconds, root.clock())
    return {"reaped": reaped}

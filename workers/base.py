"""The shared task plumbing: lease, heartbeat, time limits, retries and the job record.

Task bodies stay one line; everything cross-cutting happens here, once.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from backup_jobs import jobs
from backup_jobs.catalog import Catalog
from backup_jobs.errors import BackupJobsError, InternalError, LeaseLost
from backup_jobs.inventory import JobContext
from backup_jobs.models import Job, Operation
from backup_jobs.operations import OPERATIONS, OperationSpec
from workers import root

log = logging.getLogger("backup_jobs.worker")


class Heartbeat:
    """Renews the item's lease every third of its TTL while the attempt runs."""

    def __init__(self, catalog: Catalog, started: jobs.Started, ttl_seconds: float) -> None:
        self._catalog = catalog
        self._job = started.job
        self._ttl = ttl_seconds
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{self._job.id}", daemon=True
        )

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def check(self) -> None:
        """Raise ``LeaseLost`` if the lease could not be renewed; work must stop."""
        if self._lost.is_set():
            raise LeaseLost(self._job.item_name)

    def _run(self) -> None:
        job = self._job
        while not self._stop.wait(self._ttl / 3):
            try:
                if not self._catalog.renew_lock(job.vault, job.item, job.id, self._ttl):
                    self._lost.set()
                    log.warning("lease_lost job=%s item=%s", job.id, job.item_name)
                    return
            except BackupJobsError:
                log.warning("lease_renewal_failed job=%s item=%s", job.id, job.item_name)


def summary(job: Job | None, **extra: Any) -> dict[str, Any]:
    """The small JSON result Flower shows for a task."""
    if job is None:
        return {"status": "unknown", **extra}
    return {
        "job_id": job.id,
        "operation": job.operation.value,
        "item": job.item_name,
        "attempt": job.attempt,
        "status": job.status.value,
        "error": job.error["code"] if job.error else None,
        **{k: v for k, v in job.properties.items() if isinstance(v, str | int | float)},
        **extra,
    }


def run_job(
    task: Task[Any, Any], operation: Operation, job_id: str, attempt: int
) -> dict[str, Any]:
    """Run one attempt of a job under its item's lease and record how it ended."""
    catalog, settings, clock = root.catalog(), root.settings(), root.clock()
    started = jobs.begin_attempt(
        catalog, job_id, attempt, str(task.request.id), settings.lease_ttl_seconds, clock
    )
    if started is None:
        return summary(catalog.get_job(job_id), skipped=True)
    job = started.job
    spec = OPERATIONS[operation]
    log.info(
        "attempt_started job=%s operation=%s item=%s attempt=%d",
        job.id,
        operation,
        job.item_name,
        attempt,
    )
    ctx: JobContext | None = None
    with Heartbeat(catalog, started, settings.lease_ttl_seconds) as heartbeat:
        try:
            vault = root.vault(job.vault)
            ctx = JobContext(
                job, started.fence, vault, catalog, root.provider(vault), settings, heartbeat.check
            )
            properties = spec.run(ctx)
        except SoftTimeLimitExceeded:
            error: BackupJobsError = spec.timeout_error(job.item_name)
        except BackupJobsError as exc:
            error = exc
        except Exception as exc:
            log.exception("attempt_crashed job=%s item=%s", job.id, job.item_name)
            error = InternalError(job.item_name, repr(exc))
        else:
            done = jobs.complete(catalog, started, properties, clock)
            log.info("job_completed job=%s item=%s", job.id, job.item_name)
            return summary(done)
        _roll_back(spec, ctx, error)
        failed = jobs.fail_attempt(
            catalog, job, error, settings.retry_delay_seconds, clock, started.fence
        )
    log.info(
        "attempt_failed job=%s item=%s code=%s status=%s",
        job.id,
        job.item_name,
        error.code,
        failed.status,
    )
    return summary(failed)


def _roll_back(spec: OperationSpec, ctx: JobContext | None, error: BackupJobsError) -> None:
    if ctx is None:
        return
    try:
        spec.on_failure(ctx, error)
    except LeaseLost:
        log.info("rollback_skipped job=%s: lease lost", ctx.job.id)

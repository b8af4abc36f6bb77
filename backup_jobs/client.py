"""The Python API: ``Client`` submits work and reads the catalog; job handles follow jobs.

Methods are verbs on domain nouns. Anything that runs on a worker returns a ``JobHandle``;
reads return typed values. Submitting never imports the worker code: tasks go by name.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path

from backup_jobs import inventory, jobs
from backup_jobs.catalog import Catalog
from backup_jobs.clock import Clock, SystemClock
from backup_jobs.dispatcher import Dispatcher
from backup_jobs.errors import CorruptRecord, JobNotFound
from backup_jobs.models import (
    VM,
    Job,
    JobStatus,
    Listing,
    Operation,
    Problem,
    RegistrationState,
    VaultConfig,
)
from backup_jobs.settings import Settings

# How often ``JobHandle.wait`` re-reads the job record.
POLL_INTERVAL_SECONDS = 0.1


class JobTimeout(TimeoutError):
    """Raised when ``JobHandle.wait`` runs out of time; the job itself goes on."""


class JobHandle:
    """A submitted job: its id, and ways to read and wait for its record."""

    def __init__(self, catalog: Catalog, job_id: str) -> None:
        self.id = job_id
        self._catalog = catalog

    def __repr__(self) -> str:
        return f"JobHandle({self.id!r})"

    def job(self) -> Job:
        """The current job record."""
        job = self._catalog.get_job(self.id)
        if job is None:
            raise JobNotFound(self.id)
        return job

    def status(self) -> JobStatus:
        """The job's current status."""
        return self.job().status

    def wait(self, timeout: float | None = None) -> Job:
        """Block until the job is final and return its record; ``JobTimeout`` after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.job()
            if job.status.is_final:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise JobTimeout(f"job {self.id} is still {job.status.value} after {timeout}s")
            time.sleep(POLL_INTERVAL_SECONDS)

    def result(self, timeout: float | None = None) -> dict[str, object]:
        """Wait, then the job's properties (e.g. the recovery point); the error if it failed."""
        job = self.wait(timeout)
        return {"status": job.status.value, "error": job.error, **job.properties}


class Client:
    """The front door for scripts: ``Client.from_env()`` then verbs."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        dispatcher: Dispatcher,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self._dispatcher = dispatcher
        self._clock = clock or SystemClock()
        self.vault = VaultConfig(
            name=settings.vault,
            region=settings.region,
            provider=settings.provider,
            fleet_dir=str(Path(settings.fleet_dir).resolve()),
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Client:
        """Connect as the ``BACKUP_JOBS_*`` variables say (or to the embedded server)."""
        from backup_jobs.catalogs.redis import RedisCatalog
        from backup_jobs.connection import resolve_redis_url
        from backup_jobs.dispatchers.celery import CeleryDispatcher

        settings = Settings.from_env(environ)
        url = resolve_redis_url(settings)
        catalog = RedisCatalog.from_url(url)
        catalog.ping()
        return cls(settings, catalog, CeleryDispatcher.from_url(settings, url))

    def handle(self, job_id: str) -> JobHandle:
        """A handle on an existing job."""
        return JobHandle(self.catalog, job_id)

    def _record_vault(self) -> None:
        """Record this client's view of the vault (region, fleet) for the workers.

        Only commands that start jobs do this, so that reading with other settings (a
        ``job list`` from another directory) never changes where the workers look.
        """
        try:
            current = self.catalog.get_vault(self.vault.name)
        except CorruptRecord:
            current = None  # an unreadable record is replaced by this client's view
        if current != self.vault:
            self.catalog.put_vault(self.vault)

    def discover(self) -> JobHandle:
        """Start a Discovery job for the vault."""
        self._record_vault()
        job = jobs.new_job(
            self.vault.name,
            Operation.DISCOVERY,
            jobs.VAULT_ITEM,
            self.vault.name,
            self.settings.max_attempts,
            self._clock,
        )
        jobs.submit(self.catalog, self._dispatcher, job, self._clock)
        return self.handle(job.id)

    def register(self, vms: Iterable[str]) -> list[JobHandle]:
        """Start one Register job per VM; every name is checked before any job is created."""
        index = inventory.VMIndex(self.catalog.list_vms(self.vault.name))
        targets = [index.resolve(name) for name in vms]
        for vm in targets:
            inventory.check_submittable(vm, self.vault)
        self._record_vault()
        handles = []
        for vm in {vm.id: vm for vm in targets}.values():
            job = jobs.new_job(
                self.vault.name,
                Operation.REGISTER,
                vm.id,
                vm.id,
                self.settings.max_attempts,
                self._clock,
            )
            jobs.submit(self.catalog, self._dispatcher, job, self._clock)
            handles.append(self.handle(job.id))
        return handles

    def job(self, job_id: str) -> Job:
        """One job record."""
        return self.handle(job_id).job()

    def jobs(
        self,
        operation: Operation | str | None = None,
        status: JobStatus | str | None = None,
        since: datetime | None = None,
    ) -> list[Job]:
        """The vault's jobs, newest first, filtered."""
        found = self.catalog.list_jobs(self.vault.name, since)
        kept = [
            job
            for job in found
            if (operation is None or job.operation == Operation(operation))
            and (status is None or job.status == JobStatus(status))
        ]
        return Listing(kept, found.problems)

    def vms(self, registrable: bool = False, include_deleted: bool = False) -> Listing[VM]:
        """The vault's VMs; ``registrable``: not registered, in the vault's region, present.

        Records that cannot be read are left out and named in the result's ``problems``.
        """
        found = self.catalog.list_vms(self.vault.name)
        if registrable:
            kept = [
                vm
                for vm in found
                if not vm.deleted
                and vm.region == self.vault.region
                and vm.registration == RegistrationState.NOT_REGISTERED
            ]
        else:
            kept = [vm for vm in found if include_deleted or not vm.deleted]
        return Listing(kept, found.problems)

    def problems(self) -> list[Problem]:
        """Records the ticks found unreadable and skipped (by key, latest sighting)."""
        return self.catalog.problems()

"""The catalog port: VMs, jobs, per-item leases and the retry set of a deployment.

The catalog is the source of truth for job status. Writes to an item's state made by a job
carry a ``Fence`` (the fencing token the job got when it acquired the item's lease); the
catalog applies such a write only if the token is still current, atomically, so a worker that
lost its lease cannot overwrite newer state. Implementations: ``catalogs.redis`` (real) and
``catalogs.memory`` (tests, and shipped through ``backup_jobs.testing``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from backup_jobs.models import VM, Job, VaultConfig


@dataclass(frozen=True)
class Fence:
    """Proof of holding an item's lease: the item and the token got on acquire."""

    vault: str
    item: str
    token: int


@dataclass(frozen=True)
class LockResult:
    """The outcome of a lease acquire: the token if acquired, else who holds it."""

    acquired: bool
    token: int = 0
    holder: str | None = None


class Catalog(Protocol):
    """Stores vaults, VMs and jobs, and arbitrates per-item leases."""

    def ping(self) -> None:
        """Raise ``RedisUnavailable`` (or the like) unless the store answers."""
        ...

    def put_vault(self, vault: VaultConfig) -> None:
        """Create or replace a vault's configuration."""
        ...

    def get_vault(self, name: str) -> VaultConfig | None:
        """A vault's configuration, or None."""
        ...

    def get_vm(self, vault: str, vm_id: str) -> VM | None:
        """One VM of a vault (properties joined with state), or None."""
        ...

    def list_vms(self, vault: str) -> list[VM]:
        """Every VM of a vault (deleted ones included), sorted by id."""
        ...

    def put_vm(self, vault: str, vm: VM) -> None:
        """Create or replace a VM's provider properties (discovery); its state is kept.

        Properties and state are separate records so that a discovery and a job on the same
        VM never overwrite each other's writes.
        """
        ...

    def put_vm_state(self, vault: str, vm: VM, fence: Fence | None = None) -> None:
        """Replace a VM's registration, last job and last error; ``LeaseLost`` if fenced out."""
        ...

    def create_job(self, job: Job) -> bool:
        """Store a new job; False (and nothing written) if its id exists."""
        ...

    def get_job(self, job_id: str) -> Job | None:
        """One job, or None."""
        ...

    def save_job(self, job: Job, fence: Fence | None = None) -> None:
        """Replace a job; ``LeaseLost`` if fenced out.

        The catalog keeps what follows from the status in the same atomic write: the
        in-progress index, and the release of the item's lease once the job is not running.
        """
        ...

    def list_jobs(self, vault: str, since: datetime | None = None) -> list[Job]:
        """The jobs of a vault queued at or after ``since``, newest first."""
        ...

    def acquire_lock(self, vault: str, item: str, holder: str, ttl_seconds: float) -> LockResult:
        """Take the item's lease without blocking; on success the fencing token is new."""
        ...

    def renew_lock(self, vault: str, item: str, holder: str, ttl_seconds: float) -> bool:
        """Extend the lease if ``holder`` still holds it."""
        ...

    def release_lock(self, vault: str, item: str, holder: str) -> None:
        """Free the lease if ``holder`` holds it."""
        ...

    def lock_holder(self, vault: str, item: str) -> str | None:
        """Who holds the item's lease now, if anyone."""
        ...

    def invalidate_fence(self, vault: str, item: str) -> None:
        """Make every token issued so far stale (the reaper does this for a lost worker)."""
        ...

    def schedule_retry(self, job_id: str, at: datetime) -> None:
        """Put a job in the durable retry set, due at ``at``."""
        ...

    def due_retries(self, now: datetime, limit: int = 100) -> list[str]:
        """Job ids due for retry at ``now``, oldest first."""
        ...

    def remove_retry(self, job_id: str) -> bool:
        """Take a job out of the retry set; True if it was there."""
        ...

    def in_progress(self) -> list[str]:
        """Ids of jobs saved as ``InProgress``: an index every job save keeps, for the reaper."""
        ...

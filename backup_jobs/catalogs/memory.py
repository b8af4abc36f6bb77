"""An in-memory catalog with the same semantics as the Redis one; thread-safe."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

from backup_jobs.catalog import Fence, LockResult
from backup_jobs.errors import LeaseLost
from backup_jobs.models import VM, Job, JobStatus, VaultConfig


class MemoryCatalog:
    """The catalog port kept in dictionaries; leases expire on the monotonic clock."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._vaults: dict[str, VaultConfig] = {}
        self._vms: dict[tuple[str, str], dict[str, Any]] = {}
        self._vm_states: dict[tuple[str, str], dict[str, Any]] = {}
        self._jobs: dict[str, Job] = {}
        self._locks: dict[tuple[str, str], tuple[str, float]] = {}
        self._fences: dict[tuple[str, str], int] = {}
        self._retries: dict[str, float] = {}
        self._in_progress: set[str] = set()

    def ping(self) -> None:
        """Always answers."""

    def put_vault(self, vault: VaultConfig) -> None:
        """Create or replace a vault's configuration."""
        with self._mutex:
            self._vaults[vault.name] = vault

    def get_vault(self, name: str) -> VaultConfig | None:
        """A vault's configuration, or None."""
        return self._vaults.get(name)

    def get_vm(self, vault: str, vm_id: str) -> VM | None:
        """One VM of a vault, or None."""
        with self._mutex:
            return self._joined((vault, vm_id))

    def list_vms(self, vault: str) -> list[VM]:
        """Every VM of a vault, sorted by id."""
        with self._mutex:
            keys = sorted(key for key in self._vms if key[0] == vault)
            return [vm for key in keys if (vm := self._joined(key)) is not None]

    def put_vm(self, vault: str, vm: VM) -> None:
        """Create or replace a VM's provider properties."""
        with self._mutex:
            self._vms[(vault, vm.id)] = vm.properties_dict()

    def put_vm_state(self, vault: str, vm: VM, fence: Fence | None = None) -> None:
        """Replace a VM's state, checking the fence atomically."""
        with self._mutex:
            self._check(fence)
            self._vm_states[(vault, vm.id)] = vm.state_dict()

    def _joined(self, key: tuple[str, str]) -> VM | None:
        properties = self._vms.get(key)
        return VM.from_records(properties, self._vm_states.get(key)) if properties else None

    def create_job(self, job: Job) -> bool:
        """Store a new job unless its id exists."""
        with self._mutex:
            if job.id in self._jobs:
                return False
            self._jobs[job.id] = job
            return True

    def get_job(self, job_id: str) -> Job | None:
        """One job, or None."""
        return self._jobs.get(job_id)

    def save_job(self, job: Job, fence: Fence | None = None) -> None:
        """Replace a job, checking the fence atomically."""
        with self._mutex:
            self._check(fence)
            self._jobs[job.id] = job
            if job.status == JobStatus.IN_PROGRESS:
                self._in_progress.add(job.id)
                return
            self._in_progress.discard(job.id)
            if self._live_holder((job.vault, job.item)) == job.id:
                del self._locks[(job.vault, job.item)]

    def list_jobs(self, vault: str, since: datetime | None = None) -> list[Job]:
        """The jobs of a vault, newest first."""
        with self._mutex:
            jobs = [
                j
                for j in self._jobs.values()
                if j.vault == vault and (since is None or j.queued_at >= since)
            ]
        return sorted(jobs, key=lambda j: j.queued_at, reverse=True)

    def acquire_lock(self, vault: str, item: str, holder: str, ttl_seconds: float) -> LockResult:
        """Take the lease if free or expired; bump the fencing token."""
        key = (vault, item)
        with self._mutex:
            current = self._live_holder(key)
            if current is not None:
                return LockResult(False, holder=current)
            self._locks[key] = (holder, time.monotonic() + ttl_seconds)
            self._fences[key] = self._fences.get(key, 0) + 1
            return LockResult(True, token=self._fences[key], holder=holder)

    def renew_lock(self, vault: str, item: str, holder: str, ttl_seconds: float) -> bool:
        """Extend the lease if ``holder`` still holds it."""
        key = (vault, item)
        with self._mutex:
            if self._live_holder(key) != holder:
                return False
            self._locks[key] = (holder, time.monotonic() + ttl_seconds)
            return True

    def release_lock(self, vault: str, item: str, holder: str) -> None:
        """Free the lease if ``holder`` holds it."""
        key = (vault, item)
        with self._mutex:
            if self._live_holder(key) == holder:
                del self._locks[key]

    def lock_holder(self, vault: str, item: str) -> str | None:
        """Who holds the lease now."""
        with self._mutex:
            return self._live_holder((vault, item))

    def invalidate_fence(self, vault: str, item: str) -> None:
        """Make every token issued so far stale."""
        with self._mutex:
            self._fences[(vault, item)] = self._fences.get((vault, item), 0) + 1

    def schedule_retry(self, job_id: str, at: datetime) -> None:
        """Put a job in the retry set."""
        with self._mutex:
            self._retries[job_id] = at.timestamp()

    def due_retries(self, now: datetime, limit: int = 100) -> list[str]:
        """Job ids due at ``now``, oldest first."""
        with self._mutex:
            due = sorted((t, j) for j, t in self._retries.items() if t <= now.timestamp())
        return [j for _, j in due[:limit]]

    def remove_retry(self, job_id: str) -> bool:
        """Take a job out of the retry set."""
        with self._mutex:
            return self._retries.pop(job_id, None) is not None

    def in_progress(self) -> list[str]:
        """Ids of jobs recorded as running."""
        with self._mutex:
            return sorted(self._in_progress)

    def _live_holder(self, key: tuple[str, str]) -> str | None:
        held = self._locks.get(key)
        if held is None or held[1] <= time.monotonic():
            self._locks.pop(key, None)
            return None
        return held[0]

    def _check(self, fence: Fence | None) -> None:
        if fence is not None and self._fences.get((fence.vault, fence.item), 0) != fence.token:
            raise LeaseLost(fence.item)

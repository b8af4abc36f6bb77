"""In-memory fakes of every port, for unit tests here and in users' own tests.

``MemoryCatalog`` has the Redis catalog's semantics (leases, fencing, retry set);
``RecordingDispatcher`` records what would have been sent; ``MemoryProvider`` serves a list
of VMs; ``FrozenClock`` moves only when told.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

from backup_jobs.catalogs.memory import MemoryCatalog
from backup_jobs.clock import FrozenClock
from backup_jobs.dispatcher import task_id_for
from backup_jobs.models import VM, Job
from backup_jobs.provider import (
    CommitGuard,
    Inventory,
    ProviderError,
    ProviderFenced,
    ProviderTimeout,
    Unreadable,
)

__all__ = ["FrozenClock", "MemoryCatalog", "MemoryProvider", "RecordingDispatcher"]


class RecordingDispatcher:
    """A dispatcher that records ``(job id, attempt)`` instead of sending."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    def send(self, job: Job, attempt: int) -> str:
        """Record the attempt; returns its task id."""
        self.sent.append((job.id, attempt))
        return task_id_for(job, attempt)


class MemoryProvider:
    """A provider over a list of VMs; failures are switched on by attributes."""

    def __init__(self, vms: Iterable[VM] = ()) -> None:
        self.vms = {vm.id: vm for vm in vms}
        self.unreadable: list[Unreadable] = []
        self.fail_listing = False
        self.install_hangs = False
        self.installed: list[str] = []
        self._tokens: dict[tuple[str, str], int] = {}

    def list_vms(self) -> Inventory:
        """Every VM (and ``unreadable``), or ``ProviderError`` if ``fail_listing``."""
        if self.fail_listing:
            raise ProviderError("listing failed (fail_listing is set)")
        return Inventory(list(self.vms.values()), list(self.unreadable))

    def get_vm(self, vm_id: str) -> VM | None:
        """One VM, or None."""
        return self.vms.get(vm_id)

    def install_extension(
        self,
        vm_id: str,
        timeout_seconds: float,
        heartbeat: Callable[[], None],
        guard: CommitGuard,
    ) -> None:
        """Record the install (fenced like the local fleet), or time out if ``install_hangs``."""
        heartbeat()
        if self.install_hangs:
            raise ProviderTimeout(f"install on {vm_id}")
        guard.check()
        if self._tokens.get((guard.scope, vm_id), 0) > guard.token:
            raise ProviderFenced(f"{vm_id}: token {guard.token} is stale")
        self._tokens[guard.scope, vm_id] = guard.token
        self.installed.append(vm_id)
        self.vms[vm_id] = replace(self.vms[vm_id], extension_installed=True)

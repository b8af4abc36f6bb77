"""The provider port: the adapter to the machines being protected (DESIGN §7).

Providers raise ``ProviderError`` subclasses, which are not user-facing: the use-case that
called them maps each to the catalog error for its operation (a failed listing is a
``DiscoveryInternalError``, a slow install an ``InstallAgentTimeout``, a full disk a
``FleetStorageError``).

A backup takes a snapshot (with the best consistency the provider can reach), reads its disks
through ``ImageReader`` views that writes to the running VM cannot change, asks which ranges
changed since an earlier snapshot (changed-block tracking; None when the provider cannot
tell), and releases it.

A restore "as a new VM" writes the point's disks into a staging folder on the provider's
storage, then asks the provider to create the VM from them (moved, not copied); the new VM
is then discovered and registered like any other.

A side effect on a VM (installing the extension, later snapshots and restores) happens only
while the job holds the VM's lease and before its deadline: the provider calls the job's
``CommitGuard`` immediately before committing, and a provider that can store the fencing token
beside the VM refuses a write carrying an older one (``ProviderFenced``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from backup_jobs.models import VM
from backup_jobs.vault.source import ImageReader


class ProviderError(Exception):
    """Raised when the provider fails internally (its API, its agent, its storage)."""


class ProviderTimeout(ProviderError):
    """Raised when a provider step did not finish before its deadline."""


class ProviderStorageError(ProviderError):
    """Raised when the provider's storage refuses a write (full, read-only, no permission)."""


class ProviderConflict(ProviderError):
    """Raised when creating a VM the fleet has already."""


class ProviderFenced(ProviderError):
    """Raised when a write carries an older fencing token than the VM has already seen."""


@dataclass(frozen=True)
class CommitGuard:
    """What a provider checks immediately before a side effect on a VM.

    ``check()`` raises (``LeaseLost``, or the step's timeout error) unless the job still holds
    the VM's lease and its deadline has not passed; ``token`` is the job's fencing token, and
    ``scope`` names the lease it belongs to (the vault: each vault counts its own tokens, so a
    provider compares a token only with tokens of the same scope).
    """

    token: int
    check: Callable[[], None]
    scope: str


@dataclass(frozen=True)
class Unreadable:
    """A VM the provider found but could not read; it is skipped, never taken as deleted."""

    vm_id: str | None
    where: str
    reason: str


@dataclass(frozen=True)
class SnapshotDisk:
    """One disk of a snapshot: its name, size, and its changed-block tracking token."""

    name: str
    size_bytes: int
    tracking: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """A point-in-time view of a VM's disks, and the consistency it was taken with.

    ``freeze_seconds``: how long the guest was frozen for it, when the provider froze it.
    """

    id: str
    vm_id: str
    consistency: str
    disks: tuple[SnapshotDisk, ...]
    warnings: tuple[str, ...] = ()
    freeze_seconds: float | None = None


@dataclass(frozen=True)
class Inventory:
    """What a listing found: the VMs it could read and the ones it could not."""

    vms: list[VM]
    unreadable: list[Unreadable] = field(default_factory=list)


class Provider(Protocol):
    """Lists and acts on the VMs of one fleet."""

    def list_vms(self) -> Inventory:
        """Every VM of the fleet, with the properties registration checks."""
        ...

    def get_vm(self, vm_id: str) -> VM | None:
        """One VM by ``cloud_service/name``, or None if it is gone."""
        ...

    def install_extension(
        self,
        vm_id: str,
        timeout_seconds: float,
        heartbeat: Callable[[], None],
        guard: CommitGuard,
    ) -> None:
        """Install the backup extension through the VM agent; ``ProviderTimeout`` past the deadline.

        ``heartbeat`` is called at least every second while the install runs, so the caller can
        keep its lease and notice cancellation; ``guard`` right before the install is committed.
        """
        ...

    def take_snapshot(
        self,
        vm_id: str,
        timeout_seconds: float,
        heartbeat: Callable[[], None],
        guard: CommitGuard,
    ) -> Snapshot:
        """Freeze (if it can), snapshot every disk, thaw; ``ProviderTimeout`` past the deadline.

        The consistency is the best reached: application (the freeze hooks ran), file system
        (no hooks, or they failed: named in ``warnings``), crash (the VM is stopped).
        """
        ...

    def open_disk(self, snapshot: Snapshot, disk: str) -> ImageReader:
        """A reader of one disk as the snapshot saw it."""
        ...

    def changed_extents(
        self, snapshot: Snapshot, disk: str, since: str
    ) -> list[tuple[int, int]] | None:
        """Byte ranges of ``disk`` changed since the snapshot whose token was ``since``."""
        ...

    def release_snapshot(self, snapshot: Snapshot) -> None:
        """Let go of a snapshot (idempotent)."""
        ...

    def restore_staging(self, key: str) -> Path:
        """An empty folder on the provider's storage for the disks of a VM a restore creates.

        ``key`` (the job id) names it: a retried attempt starts again from an empty folder.
        """
        ...

    def discard_staging(self, key: str) -> None:
        """Remove a staging folder and what it holds (idempotent)."""
        ...

    def create_restored_vm(
        self, vm_id: str, template: VM, staging: Path, guard: CommitGuard, origin: dict[str, str]
    ) -> VM:
        """Create VM ``vm_id`` with ``template``'s properties and the images in ``staging``.

        Each ``<disk>.img`` becomes the VM's disk of that name; ``origin`` (the source VM and
        recovery point) is recorded with it. ``ProviderConflict`` if the fleet has ``vm_id``.
        """
        ...

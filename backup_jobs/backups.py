"""The Backup job: take a consistent snapshot, transfer the disks into the vault (DESIGN §3, §8).

Two sub-tasks, as the seed's portal shows them: ``Take Snapshot`` (its own deadline: past it,
``SnapshotTimeout``) and ``Transfer data to vault`` (progress in bytes; past its deadline,
``VaultTransferTimeout``). The snapshot is released whatever happens. The transfer reads only
the ranges the provider says changed since the VM's newest recovery point, when it can say.
Success commits a recovery point (the manifest, written last), mirrors it in the catalog and
updates the protected item; a failure is recorded on the item, as an error needing action
once the job will not be retried.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backup_jobs.catalog import Catalog, Fence
from backup_jobs.context import JobContext
from backup_jobs.errors import (
    BackupInternalError,
    BackupJobsError,
    Cancelled,
    ConfigurationError,
    CorruptRecord,
    NotProtected,
    SnapshotTimeout,
    VaultStorageError,
    VaultTransferTimeout,
    VMAgentNotInstalled,
    VMNotFound,
)
from backup_jobs.items import LastBackup, ProtectedItem, ProtectionState, RecoveryPointRecord
from backup_jobs.models import Job, JobStatus, PowerState, SubTask, utcnow
from backup_jobs.provider import CommitGuard, ProviderError, ProviderTimeout, Snapshot
from backup_jobs.steps import ByteProgress, step
from backup_jobs.vault import BackupRequest, DiskSource, Manifest, Vault, backup

TAKE_SNAPSHOT = "Take Snapshot"
TRANSFER = "Transfer data to vault"
# Where each disk's changed-block tracking token is kept in a manifest's properties.
TRACKING = "tracking"

# Errors a file system gives only to a write: met in a transfer, they are the vault's disk.
_STORAGE_REFUSALS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def run_backup(ctx: JobContext) -> dict[str, Any]:
    """Back up the job's VM into the vault: snapshot, transfer, recovery point, item."""
    item = _protected_item(ctx)
    _check_vm(ctx)
    ctx.subtasks[:] = [SubTask(TAKE_SNAPSHOT), SubTask(TRANSFER)]
    snapshot = _take_snapshot(ctx)
    try:
        manifest = _transfer(ctx, item, snapshot)
    finally:
        with contextlib.suppress(ProviderError):
            ctx.provider.release_snapshot(snapshot)
    ctx.warnings.extend(snapshot.warnings)
    _record(ctx, item, manifest)
    transfer = ctx.subtasks[1]
    freeze = {} if snapshot.freeze_seconds is None else {"freeze_seconds": snapshot.freeze_seconds}
    return {
        **freeze,
        "recovery_point_id": manifest.id,
        "consistency": manifest.consistency,
        "backup_size_bytes": manifest.size_bytes,
        "bytes_new": manifest.new_bytes,
        "chunks_read": sum(d.read_chunks or 0 for d in manifest.disks),
        "chunks": sum(d.chunks for d in manifest.disks),
        "transfer_seconds": transfer.duration_seconds,
    }


def backup_failed(catalog: Catalog, job: Job, fence: Fence, error: BackupJobsError) -> None:
    """Record a failed attempt on the item; once it will not be retried, as needing action.

    A cancelled backup is no failure: the item keeps its state, health and last error.
    """
    try:
        item = catalog.get_item(job.vault, job.item)
    except CorruptRecord:
        return
    if item is None:
        return
    if isinstance(error, Cancelled):
        catalog.put_item(item.evolve(last_job_id=job.id), fence)
        return
    final = not error.retryable or job.attempt >= job.max_attempts
    changes: dict[str, Any] = {"last_error": error.to_dict(), "last_job_id": job.id}
    if final and item.state.scheduled:
        changes["state"] = ProtectionState.ERROR
        changes["last_backup"] = LastBackup(
            job.id, utcnow(), JobStatus.FAILED, error_code=error.code
        )
    catalog.put_item(item.evolve(**changes), fence)


def open_vault(path: Path) -> Vault:
    """The vault at ``path``, created at the first backup by whichever worker comes first.

    Two first backups race to create it: the loser's create is refused (the vault exists) and
    it opens the winner's. An open that fails is never followed by a second look at the
    config, which another worker may have written in between (that made a first backup fail
    with a ``ConfigurationError`` saying the vault that was there held none).
    """
    if not Vault.exists(path):
        with contextlib.suppress(ConfigurationError):  # another worker created it first
            return Vault.create(path)
    return Vault.open(path)


def vault_path(ctx: JobContext) -> Path:
    """Where the job's vault stores its data (the vault's record, else this worker's setting)."""
    return Path(ctx.vault.vault_dir or ctx.settings.vault_dir)


def _protected_item(ctx: JobContext) -> ProtectedItem:
    item = ctx.catalog.get_item(ctx.vault.name, ctx.job.item)
    if item is None or not item.state.scheduled:
        state = item.state.value if item else "no policy"
        raise NotProtected(ctx.job.item, f"protection: {state}")
    return item


def _check_vm(ctx: JobContext) -> None:
    vm = ctx.provider.get_vm(ctx.job.item)
    if vm is None:
        raise VMNotFound(ctx.job.item)
    if vm.power_state == PowerState.RUNNING and not vm.agent_version:
        raise VMAgentNotInstalled(ctx.job.item)


def _take_snapshot(ctx: JobContext) -> Snapshot:
    vm_id = ctx.job.item
    with step(ctx, 0):
        try:
            return ctx.provider.take_snapshot(
                vm_id,
                ctx.settings.timeouts.snapshot_seconds,
                ctx.heartbeat,
                CommitGuard(ctx.fence.token, ctx.guard, ctx.fence.vault),
            )
        except ProviderTimeout as exc:
            raise SnapshotTimeout(vm_id, str(exc)) from exc
        except ProviderError as exc:
            raise BackupInternalError(vm_id, str(exc)) from exc


def _transfer(ctx: JobContext, item: ProtectedItem, snapshot: Snapshot) -> Manifest:
    vm_id = ctx.job.item
    with step(ctx, 1):
        vault = open_vault(vault_path(ctx))
        try:
            request = BackupRequest(
                vm_id,
                _disks(ctx, vault, snapshot),
                consistency=snapshot.consistency,
                job_id=ctx.job.id,
                policy=item.policy,
                progress=ByteProgress(
                    ctx, 1, ctx.settings.timeouts.transfer_seconds, _transfer_timeout(ctx)
                ),
                properties={TRACKING: {d.name: d.tracking for d in snapshot.disks}},
                should_cancel=ctx.should_cancel,
            )
            return backup(vault, request)
        except (OSError, ProviderError) as exc:
            if isinstance(exc, OSError) and exc.errno in _STORAGE_REFUSALS:  # a write: the vault's
                where = exc.filename or vault.root
                raise VaultStorageError(vm_id, f"{where}: {exc.strerror}") from exc
            raise BackupInternalError(vm_id, f"reading or storing the disks: {exc}") from exc


def _disks(ctx: JobContext, vault: Vault, snapshot: Snapshot) -> list[DiskSource]:
    """A source per disk: the snapshot's reader and, when known, what changed since the base."""
    history = vault.manifests(ctx.job.item)
    base = history[-1] if history else None
    tokens: dict[str, str] = dict(base.properties.get(TRACKING, {})) if base else {}
    sources = []
    for disk in snapshot.disks:
        since = tokens.get(disk.name)
        changed = ctx.provider.changed_extents(snapshot, disk.name, since) if since else None
        sources.append(
            DiskSource(
                disk.name,
                reader=ctx.provider.open_disk(snapshot, disk.name),
                changed=tuple(changed) if changed is not None else None,
                changed_since=base.id if base else None,
            )
        )
    return sources


def _transfer_timeout(ctx: JobContext) -> Callable[[int, int], BackupJobsError]:
    def timeout(done: int, total: int) -> BackupJobsError:
        seconds = ctx.settings.timeouts.transfer_seconds
        return VaultTransferTimeout(ctx.job.item, f"{done} of {total} bytes in {seconds} s")

    return timeout


def mirror_of(manifest: Manifest) -> RecoveryPointRecord:
    """The catalog's mirror of a committed recovery point (unverified)."""
    return RecoveryPointRecord(
        manifest.id,
        manifest.vm,
        manifest.created_at,
        manifest.consistency,
        manifest.size_bytes,
        manifest.new_bytes,
        manifest.job_id,
        manifest.policy,
    )


def _record(ctx: JobContext, item: ProtectedItem, manifest: Manifest) -> None:
    """Mirror the recovery point and update the item: Protected, with its last backup."""
    ctx.catalog.add_recovery_point(ctx.vault.name, mirror_of(manifest))
    status = JobStatus.COMPLETED_WITH_WARNINGS if ctx.warnings else JobStatus.COMPLETED
    last = LastBackup(ctx.job.id, manifest.created_at, status, manifest.consistency, manifest.id)
    updated = item.evolve(
        state=ProtectionState.PROTECTED,
        last_backup=last,
        recovery_points=item.recovery_points + 1,
        last_job_id=ctx.job.id,
        last_error=None,
    )
    ctx.catalog.put_item(updated, ctx.fence)

"""Stopping protection (DESIGN §3, §8): keep the data, or delete it.

Both run under the VM's lease, like every job on a VM, so neither overlaps a backup of it.

- **StopProtection** (keep the data): the item becomes ``ProtectionStopped``: out of the
  schedule and out of its policy's items (the policy may then be deleted); every recovery
  point is kept, and prune keeps them all. ``protection resume`` (a ConfigureProtection job)
  puts it back under a policy; its next backup builds on the newest point, incrementally.
- **DeleteBackupData**: the item is stopped first (no run starts while the data goes), then
  every recovery point is deleted (manifest, then mirror), then the item itself (with its
  schedule entry, skipped and missed runs and policy membership). The next two GC runs free
  the chunks no other point references. A failed attempt leaves a stopped item with fewer
  points; deleting again finishes the work.
"""

from __future__ import annotations

from typing import Any

from backup_jobs import steps
from backup_jobs.context import JobContext
from backup_jobs.errors import STOPPED_ACTION, NotProtected
from backup_jobs.items import ProtectedItem, ProtectionState
from backup_jobs.maintenance import vault_at


def protected_item(ctx: JobContext) -> ProtectedItem:
    """The job's VM's protected item; ``NotProtected`` if it has none."""
    item = ctx.catalog.get_item(ctx.vault.name, ctx.job.item)
    if item is None:
        raise NotProtected(ctx.job.item, "protection: no policy")
    return item


def stop_protection(ctx: JobContext) -> dict[str, Any]:
    """Stop the VM's protection and keep every recovery point."""
    item = protected_item(ctx)
    if item.state == ProtectionState.STOPPED:
        raise NotProtected(ctx.job.item, f"protection: {item.state.value} already", STOPPED_ACTION)
    _stop(ctx, item)
    return {
        "state": ProtectionState.STOPPED.value,
        "recovery_points_kept": len(ctx.catalog.recovery_points(ctx.vault.name, ctx.job.item)),
    }


def delete_backup_data(ctx: JobContext) -> dict[str, Any]:
    """Stop the VM's protection, delete every recovery point, then forget the item."""
    steps.begin(ctx, "Stop protection", "Delete recovery points", "Remove protected item")
    vault_name, vm_id = ctx.vault.name, ctx.job.item
    with steps.step(ctx, 0):
        item = protected_item(ctx)
        if item.state != ProtectionState.STOPPED:
            _stop(ctx, item)
    vault = vault_at(ctx)
    manifests = vault.manifests(vm_id) if vault else []
    mirrored = {p.id for p in ctx.catalog.recovery_points(vault_name, vm_id)}
    with steps.step(ctx, 1, sum(m.size_bytes for m in manifests)):
        for manifest in manifests:
            ctx.guard()
            assert vault is not None
            vault.delete_manifest(manifest.id)
            ctx.catalog.remove_recovery_point(vault_name, vm_id, manifest.id)
            steps.advance(ctx, 1, manifest.size_bytes)
        for orphan in mirrored - {m.id for m in manifests}:  # a mirror without its manifest
            ctx.catalog.remove_recovery_point(vault_name, vm_id, orphan)
    with steps.step(ctx, 2):
        ctx.catalog.remove_item(vault_name, vm_id, ctx.fence)
    return {
        "recovery_points_deleted": len(manifests),
        "bytes_deleted": sum(m.size_bytes for m in manifests),
    }


def _stop(ctx: JobContext, item: ProtectedItem) -> None:
    stopped = item.evolve(state=ProtectionState.STOPPED, last_job_id=ctx.job.id, last_error=None)
    ctx.catalog.put_item(stopped, ctx.fence)  # leaves the schedule and the policy's items

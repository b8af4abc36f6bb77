"""Vault maintenance as jobs: Prune, Verify and GarbageCollect (DESIGN §6, §8).

Pure over the ports and the vault library. Each runs under a lease item of its own, never the
vault's Discovery lease nor a VM's: a prune, a verify and a GC may run at the same time, with
each other and with backups and discoveries, but never two of a kind on one vault (the second
fails with ``OperationInProgress`` naming the first).

- **Prune** applies each protected item's policy retention to its points (Proxmox semantics,
  ``vault.retention``): deletes the manifests retention drops and their catalog mirrors (the
  item's point count follows in the same write). It never removes the newest good point (one
  verify marked ``Broken`` is not good), keeps every point of an item whose protection is
  stopped, and keeps the points of VMs that have no protected item. A dry run deletes nothing
  and lists, per VM, what it would keep and remove.
- **Verify** re-reads and re-hashes the vault's chunks (a VM's only, with ``vm``), quarantines
  the corrupt ones and marks each point ``Verified`` or ``Broken``. Broken points fail the job
  with ``VaultIntegrityError`` naming them and their chunks, after recording what it checked.
- **GarbageCollect** is the vault's two-run GC; a run that could not read every point deletes
  nothing and ends ``CompletedWithWarnings`` saying why.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from backup_jobs import steps
from backup_jobs.backups import mirror_of, vault_path
from backup_jobs.context import JobContext
from backup_jobs.errors import ConfigurationError, CorruptRecord, VaultIntegrityError
from backup_jobs.items import ProtectedItem, ProtectionState, RecoveryPointRecord, VerifyState
from backup_jobs.policies import Policy
from backup_jobs.vault import Manifest, Vault, collect_garbage, verify
from backup_jobs.vault.retention import PointInfo, RetentionPolicy, select

# Lease items: one of each kind of maintenance per vault at a time (see the module).
PRUNE_ITEM = "vault:prune"
VERIFY_ITEM = "vault:verify"
GC_ITEM = "vault:gc"
# Job properties the client (or the tick) sets.
VM = "vm"
DRY_RUN = "dry_run"
# The broken points a failed Verify names in its message; the job's properties hold them all.
SHOWN_BROKEN = 5


def retention_of(policy: Policy) -> RetentionPolicy:
    """A policy's retention in the vault's terms: its daily, weekly, monthly and yearly counts
    (Proxmox: the newest point of each of the newest N days, weeks, ... that have points), in
    the policy's time zone."""
    r = policy.retention
    return RetentionPolicy(
        keep_daily=r.daily_days,
        keep_weekly=r.weekly,
        keep_monthly=r.monthly,
        keep_yearly=r.yearly,
        timezone=policy.timezone,
    )


def vault_at(ctx: JobContext) -> Vault | None:
    """The job's vault, or None if no backup has created it yet (nothing to maintain).

    A vault the catalog holds recovery points of is never "not created yet": its directory
    missing (a disk not mounted on this worker) is ``ConfigurationError``, not a verify that
    checked nothing and passed, or a delete that forgot every point it could not see."""
    path = vault_path(ctx)
    try:
        return Vault.open(path)
    except ConfigurationError:
        if (path / "config.json").exists():
            raise
        vault = ctx.vault.name
        points = sum(
            len(ctx.catalog.recovery_points(vault, item.vm_id))
            for item in ctx.catalog.list_items(vault)
        )
        if points:
            raise ConfigurationError(
                str(path),
                f"no vault here (config.json missing), but the catalog has {points} "
                f"recovery point(s) of vault {vault}",
                f"Mount the vault's disk at {path} on this worker (or set BACKUP_JOBS_VAULT_DIR "
                "where it is), then start the job again.",
            ) from None
        return None


# --- prune -------------------------------------------------------------------------------------


def run_prune(ctx: JobContext) -> dict[str, Any]:
    """Apply each protected item's retention (one VM's with ``vm``); see the module."""
    steps.begin(ctx, "Apply retention", "Delete recovery points")
    dry_run = bool(ctx.job.properties.get(DRY_RUN))
    vault = vault_at(ctx)
    with steps.step(ctx, 0):
        plans = _plans(ctx, vault) if vault else {}
    doomed = [] if dry_run else [m for plan in plans.values() for m in plan["remove"]]
    with steps.step(ctx, 1, sum(m.size_bytes for m in doomed)):
        spared = {m.id for m in doomed if vault and not _remove_point(ctx, vault, m)}
    for plan in plans.values():  # a protection stopped while the prune ran keeps its points
        plan["keep"] += [m for m in plan["remove"] if m.id in spared]
        plan["remove"] = [m for m in plan["remove"] if m.id not in spared]
    per_vm = {vm: _shown(plan) for vm, plan in plans.items()}
    return {
        DRY_RUN: dry_run,
        "vms": len(per_vm),
        "kept": sum(v["kept"] for v in per_vm.values()),
        "removed": sum(v["removed"] for v in per_vm.values()),
        "per_vm": per_vm,
    }


def _plans(ctx: JobContext, vault: Vault) -> dict[str, dict[str, list[Manifest]]]:
    """Per VM with points: the manifests to keep and to remove."""
    wanted = ctx.job.properties.get(VM)
    by_vm: dict[str, list[Manifest]] = defaultdict(list)
    for manifest in vault.manifests():
        if wanted in (None, manifest.vm):
            by_vm[manifest.vm].append(manifest)
    plans = {}
    for vm_id, manifests in sorted(by_vm.items()):
        ctx.heartbeat()
        retention = _retention_for(ctx, vm_id)
        if retention is None:  # stopped, or no policy: every point is kept
            plans[vm_id] = {"keep": manifests, "remove": []}
            continue
        good = _mirrored(ctx, vm_id, manifests)
        points = [PointInfo(m.id, m.created_at, good.get(m.id, True)) for m in manifests]
        chosen = select(points, retention)
        plans[vm_id] = {
            "keep": [m for m in manifests if m.id in chosen.keep],
            "remove": [m for m in manifests if m.id in chosen.remove],
        }
    return plans


def _mirrored(ctx: JobContext, vm_id: str, manifests: list[Manifest]) -> dict[str, bool]:
    """Whether each of a VM's points is good, mirroring again every point the catalog lacks.

    The manifests are the truth and the catalog their mirror: a point committed while its
    mirror could not be written (an index of the wrong Redis type, replaced since) is listed
    and restorable again, and counts for retention like any other.
    """
    try:
        known = {p.id: p.good for p in ctx.catalog.recovery_points(ctx.vault.name, vm_id)}
    except CorruptRecord as exc:  # the index itself: mirroring a point replaces it
        ctx.warnings.append(f"{vm_id}: {exc.message}")
        known = {}
    if ctx.job.properties.get(DRY_RUN):
        return {m.id: known.get(m.id, True) for m in manifests}
    for manifest in manifests:
        if manifest.id not in known:
            ctx.catalog.add_recovery_point(ctx.vault.name, mirror_of(manifest))
            ctx.warnings.append(f"{vm_id}: recovery point {manifest.id} was mirrored again")
            known[manifest.id] = True
    return known


def _retention_for(ctx: JobContext, vm_id: str) -> RetentionPolicy | None:
    """The retention that applies to a VM's points; None keeps them all."""
    try:
        item = ctx.catalog.get_item(ctx.vault.name, vm_id)
    except CorruptRecord as exc:  # one unreadable item never stops the others' retention
        ctx.warnings.append(f"{vm_id}: every point was kept: {exc.message}")
        return None
    if item is None or not _prunable(item):
        return None
    policy = ctx.catalog.get_policy(ctx.vault.name, item.policy)
    if policy is None:
        ctx.warnings.append(f"{vm_id}: its policy {item.policy} is gone; every point was kept")
        return None
    return retention_of(policy)


def _prunable(item: ProtectedItem) -> bool:
    """Stopped protection keeps everything (DESIGN §8); so does a protection being set up."""
    return item.state not in (ProtectionState.STOPPED, ProtectionState.CONFIGURING)


def _remove_point(ctx: JobContext, vault: Vault, manifest: Manifest) -> bool:
    """Delete one point (the manifest, the truth, first); False, deleting nothing, if its
    protection stopped (or went) since the plan was made."""
    try:
        item = ctx.catalog.get_item(ctx.vault.name, manifest.vm)
    except CorruptRecord:
        item = None  # unreadable since the plan was made: keep its points
    removed = item is not None and _prunable(item)
    if removed:
        ctx.guard()
        vault.delete_manifest(manifest.id)
        ctx.catalog.remove_recovery_point(ctx.vault.name, manifest.vm, manifest.id)
    steps.advance(ctx, 1, manifest.size_bytes)
    return removed


def _shown(plan: dict[str, list[Manifest]]) -> dict[str, Any]:
    def listed(manifests: list[Manifest]) -> list[dict[str, str]]:
        newest_first = sorted(manifests, key=lambda m: m.created_at, reverse=True)
        return [{"id": m.id, "created_at": m.created_at.isoformat()} for m in newest_first]

    return {
        "kept": len(plan["keep"]),
        "removed": len(plan["remove"]),
        "keep": listed(plan["keep"]),
        "remove": listed(plan["remove"]),
    }


# --- verify ------------------------------------------------------------------------------------


def run_verify(ctx: JobContext) -> dict[str, Any]:
    """Verify the vault (one VM's points with ``vm``) and mark each point; see the module."""
    steps.begin(ctx, "Verify chunks", "Mark recovery points")
    vault = vault_at(ctx)
    with steps.step(ctx, 0):
        vm = ctx.job.properties.get(VM)
        report = verify(vault, vm=vm, heartbeat=ctx.heartbeat) if vault else None
    if report is None:
        return {"points_checked": 0, "chunks_checked": 0}
    broken = report.broken_points()
    with steps.step(ctx, 1):
        _mark(ctx, report.points, broken)
    ctx.results.update(
        {
            "chunks_checked": report.chunks_checked,
            "bytes_checked": report.bytes_checked,
            "points_checked": len(report.points),
            "points_broken": len(broken),
            "chunks_quarantined": len(report.bad_chunks),
            "broken": broken,
        }
    )
    if broken:
        raise _integrity_error(ctx, report.points, broken)
    return dict(ctx.results)


def _mark(ctx: JobContext, points: dict[str, str], broken: dict[str, str]) -> None:
    """Mark each checked point's mirror Verified or Broken (with why)."""
    now = ctx.clock.now()
    by_vm: dict[str, set[str]] = defaultdict(set)
    for rp_id, vm_id in points.items():
        by_vm[vm_id].add(rp_id)
    for vm_id, ids in by_vm.items():
        ctx.heartbeat()
        for mirror in ctx.catalog.recovery_points(ctx.vault.name, vm_id):
            if mirror.id in ids:
                ctx.catalog.update_recovery_point(ctx.vault.name, _marked(mirror, broken, now))


def _marked(
    point: RecoveryPointRecord, broken: dict[str, str], now: datetime
) -> RecoveryPointRecord:
    reason = broken.get(point.id)
    state = VerifyState.BROKEN if reason else VerifyState.VERIFIED
    return point.evolve(verify_state=state.value, verified_at=now, broken_reason=reason)


def _integrity_error(
    ctx: JobContext, points: dict[str, str], broken: dict[str, str]
) -> VaultIntegrityError:
    shown = "; ".join(
        f"recovery point {rp_id} of {points.get(rp_id) or 'an unreadable manifest'} ({why})"
        for rp_id, why in sorted(broken.items())[:SHOWN_BROKEN]
    )
    more = len(broken) - SHOWN_BROKEN
    detail = f"{len(broken)} recovery point(s) broken: {shown}" + (
        f"; and {more} more (the job's properties list them all)" if more > 0 else ""
    )
    vms = sorted({points[rp] for rp in broken if points.get(rp)})
    action = (
        "The broken points cannot be restored. Back up the VMs again "
        f"({', '.join(vms) or 'the named ones'}; `backup-jobs backup now VM`): the next backup "
        "stores the quarantined chunks again. Check the vault's disk for what damaged them."
    )
    return VaultIntegrityError(ctx.job.item_name, detail, action=action)


# --- garbage collection ------------------------------------------------------------------------


def run_garbage_collect(ctx: JobContext) -> dict[str, Any]:
    """One two-run GC pass over the vault; a partial mark is a warning, not a failure."""
    steps.begin(ctx, "Mark and sweep")
    vault = vault_at(ctx)
    with steps.step(ctx, 0):
        report = (
            collect_garbage(vault, ctx.settings.gc_margin_seconds, heartbeat=ctx.heartbeat)
            if vault
            else None
        )
    if report is None:
        return {"live_chunks": 0, "condemned": 0, "purged": 0}
    if report.skipped_reason:
        ctx.warnings.append(report.skipped_reason)
    return {
        "live_chunks": report.live_chunks,
        "rescued": report.rescued,
        "condemned": report.condemned,
        "purged": report.purged,
        "bytes_freed": report.bytes_purged,
        "temporaries_removed": report.temporaries_removed,
        "orphan_indexes_removed": report.orphan_indexes_removed,
        **({"skipped_reason": report.skipped_reason} if report.skipped_reason else {}),
    }

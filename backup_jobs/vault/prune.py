"""Prune: apply a retention policy to one VM's recovery points; deletes manifests only."""

from __future__ import annotations

from backup_jobs.vault.repository import Vault
from backup_jobs.vault.retention import PointInfo, RetentionPolicy, Selection, select


def prune(vault: Vault, vm: str, policy: RetentionPolicy, dry_run: bool = False) -> Selection:
    """Remove the manifests the policy does not keep; GC frees their space later."""
    points = [PointInfo(m.id, m.created_at) for m in vault.manifests(vm)]
    selection = select(points, policy)
    if not dry_run:
        for rp_id in selection.remove:
            vault.delete_manifest(rp_id)
    return selection

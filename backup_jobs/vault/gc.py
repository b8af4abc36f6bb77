"""Garbage collection: mark, rescue, purge, condemn (docs/design.md §7); safe while backups run.

Nothing is deleted on first sight: an unreferenced blob older than the cutoff is *condemned*
(moved to ``garbage/``), and only a later run that still finds it unreferenced and condemned
before its own cutoff deletes it. The cutoff never passes the start of a live backup.

A run that could not read every committed manifest and its indexes (a read error, an index
truncated while it ran) has a partial live set: it deletes nothing, condemns nothing and
removes no index, and its report says why. It still rescues what it found live.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

from backup_jobs.errors import RecoveryPointNotFound, VaultIntegrityError
from backup_jobs.vault.format import ZERO_DIGEST
from backup_jobs.vault.repository import WRITER_LEASE_TTL_SECONDS, Vault

# Absorbs clock skew between the machines that share a vault.
DEFAULT_MARGIN_SECONDS = 300.0


@dataclass(frozen=True)
class GcReport:
    """What one GC run did."""

    cutoff: float
    live_chunks: int
    rescued: int
    purged: int
    condemned: int
    temporaries_removed: int
    orphan_indexes_removed: int
    unreadable_manifests: tuple[str, ...]
    # Why this run deleted and condemned nothing, if it did not (a partial mark).
    skipped_reason: str | None = None
    # What the purged blobs took on the store's disk.
    bytes_purged: int = 0


def collect_garbage(
    vault: Vault,
    margin_seconds: float = DEFAULT_MARGIN_SECONDS,
    now: float | None = None,
    heartbeat: Callable[[], None] = lambda: None,
) -> GcReport:
    """One mark-and-sweep pass over the vault; nothing is deleted on a partial mark.

    ``heartbeat`` runs between sub-steps and before each blob purged or condemned; what it
    raises stops the pass there, which is safe: each step is whole by itself (two-run GC).
    """
    started = time.time() if now is None else now
    cutoff = min([started, *vault.live_writer_starts(started)]) - margin_seconds
    live, committed, unreadable = _mark(vault)
    heartbeat()
    rescued = _rescue(vault, live)
    heartbeat()
    if unreadable:
        reason = (
            f"{len(unreadable)} recovery point(s) could not be read ({', '.join(unreadable)}); "
            "nothing was condemned or deleted. Run verify, then GC again."
        )
        return GcReport(cutoff, len(live), rescued, 0, 0, 0, 0, unreadable, reason)
    # Leases read again: a backup that started since the first look has an index folder
    # without a manifest yet, and a cutoff taken from a clock ahead would pass its start.
    fresh = [start - margin_seconds for start in vault.live_writer_starts(time.time())]
    orphans = _remove_orphan_indexes(vault, committed, min([cutoff, *fresh]))
    purged = freed = 0
    for digest, condemned_at in list(vault.store.garbage()):
        if digest not in live and condemned_at < cutoff:
            heartbeat()
            freed += vault.store.purge(digest)
            purged += 1
    condemned = 0
    for digest, mtime in list(vault.store.chunks()):
        if digest not in live and mtime < cutoff:
            heartbeat()
            vault.store.condemn(digest)
            condemned += 1
    # A temp file is an interrupted write only if it is far older than any write takes: a
    # fresh one belongs to a backup that may have started after this GC looked at the leases.
    older_than = min(cutoff, started - WRITER_LEASE_TTL_SECONDS)
    temporaries = vault.store.remove_temporaries(older_than) + vault.remove_temporaries(older_than)
    return GcReport(
        cutoff, len(live), rescued, purged, condemned, temporaries, orphans, (), None, freed
    )


def _rescue(vault: Vault, live: set[str]) -> int:
    """Move every condemned blob that is live again back into the store."""
    rescued = 0
    for digest, _ in list(vault.store.garbage()):
        if digest in live:
            vault.store.rescue(digest)
            rescued += 1
    return rescued


def _mark(vault: Vault) -> tuple[set[str], set[str], tuple[str, ...]]:
    """The live digests, the committed points, and the points that could not be read."""
    live: set[str] = set()
    committed: set[str] = set()
    unreadable: list[str] = []
    for path in sorted((vault.root / "manifests").glob("*.json")):
        try:
            manifest = vault.manifest(path.stem)
            for disk in manifest.disks:
                index = vault.read_index(manifest, disk)
                live.update(d.hex() for d in index.digests if d != ZERO_DIGEST)
        except RecoveryPointNotFound:
            continue  # pruned while this run listed the manifests: not live any more
        except (VaultIntegrityError, OSError):
            unreadable.append(path.stem)
        committed.add(path.stem)
    return live, committed, tuple(unreadable)


def _remove_orphan_indexes(vault: Vault, committed: set[str], cutoff: float) -> int:
    removed = 0
    for folder in (vault.root / "indexes").iterdir():
        if folder.name in committed:
            continue
        with contextlib.suppress(FileNotFoundError):
            if folder.stat().st_mtime < cutoff and not vault.manifest_path(folder.name).exists():
                shutil.rmtree(folder)
                removed += 1
    return removed

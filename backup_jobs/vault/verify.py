"""Verify: re-read blobs and indexes; quarantine what is corrupt (docs/design.md §8).

The whole vault, or one VM's recovery points: then only the chunks those points reference are
re-read and re-hashed. Either way each checked point comes out good or broken (a bad index, or
a chunk that is corrupt or missing), so that the catalog can mark it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from backup_jobs.errors import RecoveryPointNotFound, VaultIntegrityError
from backup_jobs.vault.backup import DEFAULT_THREADS
from backup_jobs.vault.chunkstore import ChunkMissing, damaged_blob
from backup_jobs.vault.format import ZERO_DIGEST, FormatError, Manifest
from backup_jobs.vault.pipeline import bounded_map
from backup_jobs.vault.repository import Vault


@dataclass
class VerifyReport:
    """What was checked and what was bad."""

    chunks_checked: int = 0
    bytes_checked: int = 0
    manifests_checked: int = 0
    bad_chunks: dict[str, str] = field(default_factory=dict)
    missing_chunks: dict[str, list[str]] = field(default_factory=dict)
    bad_indexes: dict[str, str] = field(default_factory=dict)
    # Every recovery point checked, by id, with its VM.
    points: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True if nothing was bad."""
        return not (self.bad_chunks or self.missing_chunks or self.bad_indexes)

    def broken_points(self) -> dict[str, str]:
        """Each broken recovery point with why: its bad index, or its first bad chunk."""
        broken = dict(self.bad_indexes)
        for digest, points in sorted(self.missing_chunks.items()):
            why = self.bad_chunks.get(digest, "missing from the vault")
            for rp_id in points:
                broken.setdefault(rp_id, f"chunk {digest}: {why}")
        return broken


def verify(
    vault: Vault,
    quarantine: bool = True,
    threads: int = DEFAULT_THREADS,
    vm: str | None = None,
    heartbeat: Callable[[], None] = lambda: None,
) -> VerifyReport:
    """Check the blobs (quarantining bad ones) and the recovery points' indexes and chunks.

    ``vm``: only that VM's points, and only the chunks they reference. ``heartbeat`` runs
    between chunks (a job's lease check).
    """
    report = VerifyReport()
    referenced = _read_points(vault, vm, report)

    def check(digest: str) -> tuple[int, str | None]:
        try:
            # Around the page cache where the store can: what is on the disk is checked, not
            # a cached copy, and no buffer is allocated per blob.
            blob = vault.store.get_view(digest)
        except ChunkMissing:
            return 0, None  # removed meanwhile (GC); the point check below decides
        except OSError as exc:
            if not damaged_blob(exc):
                raise  # the process's trouble (too many open files), not the blob's
            return 0, f"cannot be read: {exc}"  # a directory in its place, an I/O error
        try:
            vault.codec.decode(blob, bytes.fromhex(digest))
        except (FormatError, ValueError) as exc:
            return len(blob), str(exc)
        return len(blob), None

    if vm is None:
        digests = [digest for digest, _ in vault.store.chunks()]
    else:
        wanted = set().union(*referenced.values()) if referenced else set()
        digests = sorted(d for d in wanted if vault.store.exists(d))
    for digest, (size, problem) in bounded_map(check, digests, threads, before_each=heartbeat):
        report.chunks_checked += 1
        report.bytes_checked += size
        if problem is not None:
            report.bad_chunks[digest] = problem
            if quarantine:
                vault.store.quarantine(digest)
    missing: dict[str, list[str]] = defaultdict(list)
    for rp_id, chunk_digests in referenced.items():
        for digest in sorted(chunk_digests):
            if digest in report.bad_chunks or not _readable(vault, digest):
                missing[digest].append(rp_id)
    report.missing_chunks = dict(missing)
    return report


def _read_points(vault: Vault, vm: str | None, report: VerifyReport) -> dict[str, set[str]]:
    """The digests each readable point references; bad indexes go into the report."""
    referenced: dict[str, set[str]] = {}
    for path in sorted((vault.root / "manifests").glob("*.json")):
        try:
            manifest = vault.manifest(path.stem)
            if vm is not None and manifest.vm != vm:
                continue
            report.manifests_checked += 1
            report.points[manifest.id] = manifest.vm
            referenced[manifest.id] = _digests(vault, manifest)
        except RecoveryPointNotFound:
            continue  # pruned while verify listed the manifests
        except VaultIntegrityError as exc:
            if vm is None:
                report.manifests_checked += 1
                report.points.setdefault(path.stem, "")
            if path.stem in report.points:
                report.bad_indexes[path.stem] = exc.detail
    return referenced


def _digests(vault: Vault, manifest: Manifest) -> set[str]:
    found: set[str] = set()
    for disk in manifest.disks:
        index = vault.read_index(manifest, disk)
        found.update(d.hex() for d in index.digests if d != ZERO_DIGEST)
    return found


def _readable(vault: Vault, digest: str) -> bool:
    if vault.store.exists(digest):
        return True
    try:
        vault.store.get(digest)  # condemned by a GC that raced a backup: still there
    except ChunkMissing:
        return False
    return True

"""Verify: re-read every blob and every index; quarantine what is corrupt (docs/design.md §8)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from backup_jobs.errors import VaultIntegrityError
from backup_jobs.vault.backup import DEFAULT_THREADS
from backup_jobs.vault.chunkstore import ChunkMissing
from backup_jobs.vault.format import ZERO_DIGEST, FormatError
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

    @property
    def ok(self) -> bool:
        """True if nothing was bad."""
        return not (self.bad_chunks or self.missing_chunks or self.bad_indexes)


def verify(vault: Vault, quarantine: bool = True, threads: int = DEFAULT_THREADS) -> VerifyReport:
    """Check every blob (quarantining bad ones) and every recovery point's indexes and chunks."""
    report = VerifyReport()

    def check(digest: str) -> tuple[int, str | None]:
        try:
            blob = vault.store.get(digest)
        except ChunkMissing:
            return 0, None  # removed meanwhile (GC); the manifest check below decides
        try:
            vault.codec.decode(blob, bytes.fromhex(digest))
        except (FormatError, ValueError) as exc:
            return len(blob), str(exc)
        return len(blob), None

    digests = [digest for digest, _ in vault.store.chunks()]
    for digest, (size, problem) in bounded_map(check, digests, threads):
        report.chunks_checked += 1
        report.bytes_checked += size
        if problem is not None:
            report.bad_chunks[digest] = problem
            if quarantine:
                vault.store.quarantine(digest)
    missing: dict[str, list[str]] = defaultdict(list)
    for path in sorted((vault.root / "manifests").glob("*.json")):
        report.manifests_checked += 1
        try:
            manifest = vault.manifest(path.stem)
            for disk in manifest.disks:
                index = vault.read_index(manifest, disk)
                for digest in {d.hex() for d in index.digests if d != ZERO_DIGEST}:
                    if digest in report.bad_chunks or not _readable(vault, digest):
                        missing[digest].append(manifest.id)
        except VaultIntegrityError as exc:
            report.bad_indexes[path.stem] = exc.detail
    report.missing_chunks = dict(missing)
    return report


def _readable(vault: Vault, digest: str) -> bool:
    if vault.store.exists(digest):
        return True
    try:
        vault.store.get(digest)  # condemned by a GC that raced a backup: still there
    except ChunkMissing:
        return False
    return True

"""A vault on disk: its config, manifests, disk indexes and writer leases (docs/design.md).

``Vault.create`` makes a new one (optionally encrypted), ``Vault.open`` opens an existing one
and refuses an encrypted vault without its key. Chunks go through the chunk store port.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from backup_jobs.errors import ConfigurationError, RecoveryPointNotFound, VaultIntegrityError
from backup_jobs.vault.chunkstore import ChunkStore
from backup_jobs.vault.chunkstores.filesystem import (
    TEMP_SUFFIX,
    FilesystemChunkStore,
    fsync_dir,
    remove_stale,
)
from backup_jobs.vault.codec import ChunkCodec
from backup_jobs.vault.crypto import Keys
from backup_jobs.vault.format import (
    CONFIG_VERSION,
    DEFAULT_CHUNK_SIZE,
    DiskIndex,
    FormatError,
    Manifest,
    ManifestDisk,
)
from backup_jobs.vault.oserrors import naming
from backup_jobs.vault.pipeline import FaultHook, no_fault

CONFIG_FILE = "config.json"
# A writer lease not refreshed for this long belongs to a dead backup.
WRITER_LEASE_TTL_SECONDS = 600.0


def write_atomically(path: Path, data: bytes, fault: FaultHook = no_fault) -> None:
    """temp + fsync + rename + fsync of the directory.

    A write that fails leaves no temp file (GC removes only the chunk store's: one here, a
    writer lease's on a full disk, say, would stay for good), and its ``OSError`` names the
    temp file also when the write or fsync fails: theirs name no file.
    """
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}")
    try:
        with naming(temp):
            with open(temp, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            fault(f"{path.suffix.lstrip('.')}_temp_written")
            os.replace(temp, path)
    except OSError:  # a refused write: a crash leaves its temp file, as a real one would
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    fsync_dir(path.parent)


class Vault:
    """One vault directory and the collaborators that read and write it."""

    def __init__(
        self,
        root: Path,
        chunk_size: int,
        keys: Keys | None,
        store: ChunkStore | None = None,
        fault: FaultHook = no_fault,
    ) -> None:
        self.root = root
        self.chunk_size = chunk_size
        self.codec = ChunkCodec(keys)
        self.store: ChunkStore = store or FilesystemChunkStore(root, fault)
        self.fault = fault

    @staticmethod
    def exists(root: Path) -> bool:
        """Whether ``root`` holds a vault (its config, the last thing ``create`` writes)."""
        return (root / CONFIG_FILE).exists()

    @classmethod
    def create(
        cls,
        root: Path,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        keys: Keys | None = None,
    ) -> Vault:
        """Make a new vault at ``root`` (which must not hold one)."""
        if cls.exists(root):
            raise ConfigurationError(detail=f"{root} already holds a vault")
        if chunk_size <= 0 or chunk_size > (1 << 30):
            raise ConfigurationError(detail=f"chunk size {chunk_size} must be 1 B..1 GiB")
        for sub in ("chunks", "indexes", "manifests", "leases"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        config = {
            "version": CONFIG_VERSION,
            "chunk_size": chunk_size,
            "encrypted": keys is not None,
            "key_check": keys.check_value() if keys else None,
            "created_at": datetime.now(UTC).isoformat(),
        }
        write_atomically(root / CONFIG_FILE, json.dumps(config, indent=2).encode())
        return cls(root, chunk_size, keys)

    @classmethod
    def open(
        cls,
        root: Path,
        *,
        keys: Keys | None = None,
        store: ChunkStore | None = None,
        fault: FaultHook = no_fault,
    ) -> Vault:
        """Open the vault at ``root``; an encrypted one needs its keys."""
        try:
            config = json.loads((root / CONFIG_FILE).read_text())
        except FileNotFoundError as exc:
            raise ConfigurationError(
                detail=f"{root} holds no vault ({CONFIG_FILE} missing)"
            ) from exc
        except ValueError as exc:
            raise ConfigurationError(detail=f"{root / CONFIG_FILE} is malformed: {exc}") from exc
        if config.get("version") != CONFIG_VERSION:
            raise ConfigurationError(
                detail=f"vault format {config.get('version')} is not supported"
            )
        if config["encrypted"]:
            if keys is None:
                raise ConfigurationError(
                    detail=f"the vault at {root} is encrypted; give its key file"
                )
            if keys.check_value() != config["key_check"]:
                raise ConfigurationError(
                    detail=f"the key file does not belong to the vault at {root}"
                )
        elif keys is not None:
            raise ConfigurationError(detail=f"the vault at {root} is not encrypted; give no key")
        return cls(root, int(config["chunk_size"]), keys, store, fault)

    # --- manifests and indexes ----------------------------------------------------------------

    def manifest_path(self, rp_id: str) -> Path:
        """Where a recovery point's manifest lives."""
        return self.root / "manifests" / f"{rp_id}.json"

    def manifests(self, vm: str | None = None) -> list[Manifest]:
        """Committed recovery points (of one VM), oldest first.

        Ordered by creation time, not by id: ids carry whole seconds, and two points of a VM
        made in one second would otherwise put either last (the next incremental's base).
        """
        found = []
        for path in (self.root / "manifests").glob("*.json"):
            try:
                manifest = self.manifest(path.stem)
            except RecoveryPointNotFound:
                continue  # pruned between the listing and the read
            if vm is None or manifest.vm == vm:
                found.append(manifest)
        return sorted(found, key=lambda m: (m.created_at, m.id))

    def manifest(self, rp_id: str) -> Manifest:
        """One committed recovery point."""
        try:
            raw = self.manifest_path(rp_id).read_bytes()
        except FileNotFoundError as exc:
            raise RecoveryPointNotFound(rp_id) from exc
        try:
            return Manifest.decode(raw)
        except FormatError as exc:
            raise VaultIntegrityError(rp_id, f"manifest {rp_id}: {exc}") from exc

    def commit(self, manifest: Manifest) -> None:
        """Write the manifest last: the commit point of a backup."""
        write_atomically(self.manifest_path(manifest.id), manifest.encode(), self.fault)
        self.fault("manifest_committed")

    def delete_manifest(self, rp_id: str) -> None:
        """Remove a recovery point (prune); its data becomes garbage for GC."""
        with contextlib.suppress(FileNotFoundError):
            self.manifest_path(rp_id).unlink()
        fsync_dir(self.root / "manifests")

    def write_index(self, rp_id: str, disk: str, index: DiskIndex) -> tuple[str, str]:
        """Store a disk index; returns its relative path and SHA-256."""
        folder = self.root / "indexes" / rp_id
        folder.mkdir(parents=True, exist_ok=True)
        data = index.encode()
        write_atomically(folder / f"{disk}.idx", data, self.fault)
        return f"indexes/{rp_id}/{disk}.idx", hashlib.sha256(data).hexdigest()

    def read_index(self, manifest: Manifest, disk: ManifestDisk) -> DiskIndex:
        """A disk's index, checked against itself and the manifest."""
        where = f"index of disk {disk.name} of recovery point {manifest.id}"
        try:
            data = (self.root / disk.index).read_bytes()
        except FileNotFoundError as exc:
            raise VaultIntegrityError(manifest.id, f"{where} is missing") from exc
        if hashlib.sha256(data).hexdigest() != disk.index_sha256:
            raise VaultIntegrityError(manifest.id, f"{where} does not match the manifest")
        try:
            return DiskIndex.decode(data)
        except FormatError as exc:
            raise VaultIntegrityError(manifest.id, f"{where}: {exc}") from exc

    def remove_temporaries(self, older_than: float) -> int:
        """Delete the temp files of whole-file writes (``write_atomically``: a manifest, a writer
        lease, the config) that a crash left, older than ``older_than``; how many. An index's
        go with its orphan folder."""
        folders = (self.root, self.root / "manifests", self.root / "leases")
        return remove_stale(
            (temp for folder in folders for temp in folder.glob(f".*{TEMP_SUFFIX}")), older_than
        )

    # --- writer leases ------------------------------------------------------------------------

    @contextmanager
    def writer_lease(self) -> Iterator[Callable[[], None]]:
        """Hold a writer lease for a backup; yields a function that refreshes it."""
        path = self.root / "leases" / f"{uuid.uuid4().hex}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        started = time.time()
        record = {"host": socket.gethostname(), "pid": os.getpid(), "started_at": started}
        write_atomically(path, json.dumps(record).encode())
        last = [started]

        def refresh() -> None:
            if time.time() - last[0] > WRITER_LEASE_TTL_SECONDS / 3:
                os.utime(path)
                last[0] = time.time()

        try:
            yield refresh
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def live_writer_starts(self, now: float, ttl: float = WRITER_LEASE_TTL_SECONDS) -> list[float]:
        """Start times of the backups that hold a fresh writer lease."""
        starts = []
        for path in (self.root / "leases").glob("*.json"):
            try:
                if now - path.stat().st_mtime > ttl:
                    continue
                starts.append(float(json.loads(path.read_text())["started_at"]))
            except (OSError, ValueError, KeyError):
                continue
        return starts

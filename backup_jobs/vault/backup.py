"""Backup: images into chunks, indexes, then the manifest last (docs/design.md §5).

Streaming and parallel: each chunk is read with ``pread``, checked for zeros, hashed, and (if
new) compressed, encrypted and written by a pool of threads, a bounded window at a time. Holes
are never read. Progress is reported between chunks, and the cancel check runs there too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from backup_jobs.errors import Cancelled
from backup_jobs.vault.format import (
    ZERO_DIGEST,
    DiskIndex,
    Manifest,
    ManifestDisk,
    chunk_count,
    new_recovery_point_id,
)
from backup_jobs.vault.pipeline import Progress, bounded_map, ignore_progress, never
from backup_jobs.vault.repository import Vault
from backup_jobs.vault.sparse import ExtentMap, data_extents

# Hashing, zstd and AES release the GIL, and every new chunk waits on an fsync: more threads
# than cores keep both the CPUs and the disk busy.
DEFAULT_THREADS = max(4, min(8, 2 * (os.cpu_count() or 2)))


@dataclass(frozen=True)
class DiskSource:
    """One image to back up: its name in the recovery point and its file."""

    name: str
    path: Path


@dataclass
class BackupRequest:
    """What to back up and how."""

    vm: str
    disks: Sequence[DiskSource]
    consistency: str = "CrashConsistent"
    job_id: str = ""
    policy: str = ""
    threads: int = DEFAULT_THREADS
    progress: Progress = ignore_progress
    should_cancel: Callable[[], bool] = never
    properties: dict[str, object] = field(default_factory=dict)


@dataclass
class _Tally:
    stored_chunks: int = 0
    new_bytes: int = 0


def backup(vault: Vault, request: BackupRequest) -> Manifest:
    """Back up every disk and commit one recovery point; ``Cancelled`` leaves none."""
    rp_id = new_recovery_point_id()
    total = sum(os.stat(d.path).st_size for d in request.disks)
    done = [0]

    def advance(nbytes: int) -> None:
        done[0] += nbytes
        request.progress(done[0], total)

    with vault.writer_lease() as refresh:
        entries = []
        history = vault.manifests(request.vm)  # read once, not once per disk
        for disk in request.disks:
            previous = vault.previous_index(history, disk.name)
            entries.append(_backup_disk(vault, rp_id, disk, previous, request, advance, refresh))
        vault.fault("indexes_written")
        vault.store.sync()
        manifest = Manifest(
            id=rp_id,
            vm=request.vm,
            created_at=datetime.now(UTC),
            consistency=request.consistency,
            disks=tuple(entries),
            job_id=request.job_id,
            policy=request.policy,
            properties=dict(request.properties),
        )
        if request.should_cancel():
            raise Cancelled(request.vm)
        vault.commit(manifest)
    return manifest


def _backup_disk(
    vault: Vault,
    rp_id: str,
    disk: DiskSource,
    previous: DiskIndex | None,
    request: BackupRequest,
    advance: Callable[[int], None],
    refresh: Callable[[], None],
) -> ManifestDisk:
    chunk_size = vault.chunk_size
    known = set(previous.digests) if previous and previous.chunk_size == chunk_size else set()
    tally = _Tally()
    fd = os.open(disk.path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        count = chunk_count(size, chunk_size)
        extents = ExtentMap(data_extents(fd, size))
        digests = [ZERO_DIGEST] * count
        with_data = []
        for i in range(count):
            start, end = i * chunk_size, min((i + 1) * chunk_size, size)
            if extents.has_data(start, end):
                with_data.append(i)
            else:
                advance(end - start)
        zero = bytes(chunk_size)

        def store_chunk(i: int) -> tuple[bytes, int]:
            length = min(chunk_size, size - i * chunk_size)
            data = os.pread(fd, length, i * chunk_size)
            if len(data) != length:
                raise OSError(f"{disk.path} shrank while it was read")
            if data == (zero if length == chunk_size else bytes(length)):
                return ZERO_DIGEST, 0
            digest = vault.codec.digest(data)
            name = digest.hex()
            if vault.store.exists(name):  # checked even when known: verify may have quarantined it
                if digest not in known:  # a committed index keeps known chunks alive already
                    vault.store.touch(name)
                return digest, 0
            blob = vault.codec.encode(data, digest)
            stored = sum(len(part) for part in blob)
            return digest, stored if vault.store.put(name, blob) else 0

        def check_cancel() -> None:
            if request.should_cancel():
                raise Cancelled(request.vm)
            refresh()

        for i, (digest, new_bytes) in bounded_map(
            store_chunk, with_data, request.threads, before_each=check_cancel
        ):
            digests[i] = digest
            if new_bytes:
                tally.stored_chunks += 1
                tally.new_bytes += new_bytes
            advance(min(chunk_size, size - i * chunk_size))
    finally:
        os.close(fd)
    index = DiskIndex(size, chunk_size, tuple(digests))
    path, sha = vault.write_index(rp_id, disk.name, index)
    return ManifestDisk(
        name=disk.name,
        index=path,
        index_sha256=sha,
        size_bytes=size,
        chunk_size=chunk_size,
        chunks=count,
        stored_chunks=tally.stored_chunks,
        new_bytes=tally.new_bytes,
    )

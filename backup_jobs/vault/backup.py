"""Backup: images into chunks, indexes, then the manifest last (docs/design.md §5).

Streaming and parallel: each chunk is read with ``pread``, checked for zeros, hashed, and (if
new) compressed, encrypted and written by a pool of threads, a bounded window at a time. Holes
are never read. Progress is reported between chunks, and the cancel check runs there too.

Changed-block incrementals: a disk may come with the byte ranges changed since a given earlier
recovery point (a hypervisor's changed-block tracking). If that point is the one the backup
builds on, a chunk outside every changed range is not read at all: its digest is taken from
that point's index (if the chunk is still in the store; a quarantined one is read again).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from backup_jobs.errors import Cancelled, VaultIntegrityError
from backup_jobs.vault.format import (
    ZERO_DIGEST,
    DiskIndex,
    Manifest,
    ManifestDisk,
    chunk_count,
    new_recovery_point_id,
)
from backup_jobs.vault.pipeline import (
    Progress,
    WritePool,
    bounded_map,
    ignore_progress,
    never,
)
from backup_jobs.vault.repository import Vault
from backup_jobs.vault.source import FileImage, ImageReader
from backup_jobs.vault.sparse import ExtentMap

# Hashing, zstd and AES release the GIL; a thread also waits for its reads: a few more
# threads than cores keep the CPUs busy.
DEFAULT_THREADS = max(4, min(8, 2 * (os.cpu_count() or 2)))
# Every new blob waits on its fsync, on threads of their own; the pending ones are in memory
# (a chunk each at most), and they bound how far the computing runs ahead of the disk.
WRITE_THREADS = 4
WRITES_PENDING = 8


@dataclass(frozen=True)
class DiskSource:
    """One image to back up: its name in the recovery point and its file or reader.

    ``changed``: the byte ranges changed since recovery point ``changed_since`` (None: unknown,
    read everything). The backup closes the reader when it is done with it.
    """

    name: str
    path: Path | None = None
    reader: ImageReader | None = None
    changed: tuple[tuple[int, int], ...] | None = None
    changed_since: str | None = None

    def open(self) -> ImageReader:
        """The reader of this image (a file is opened here)."""
        if self.reader is not None:
            return self.reader
        if self.path is None:
            raise ValueError(f"disk {self.name} has neither a path nor a reader")
        return FileImage(self.path)


@dataclass
class _Base:
    """The earlier point a disk builds on: its id and its index of that disk."""

    point: str
    index: DiskIndex


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
    read_chunks: int = 0
    reused_chunks: int = 0

    def count(self, writes: list[int]) -> None:
        """Count finished writes: the bytes each stored (0: another writer stored it first)."""
        for new_bytes in writes:
            if new_bytes:
                self.stored_chunks += 1
                self.new_bytes += new_bytes


@dataclass(frozen=True)
class _Run:
    """One backup's collaborators, handed down to each disk."""

    vault: Vault
    request: BackupRequest
    advance: Callable[[int], None]  # bytes done: the progress callback
    refresh: Callable[[], None]  # keeps the writer lease fresh

    def check_cancel(self) -> None:
        """Between chunks: stop if cancelled, and refresh the writer lease."""
        if self.request.should_cancel():
            raise Cancelled(self.request.vm)
        self.refresh()


def backup(vault: Vault, request: BackupRequest) -> Manifest:
    """Back up every disk and commit one recovery point; ``Cancelled`` leaves none."""
    rp_id = new_recovery_point_id()
    readers = [disk.open() for disk in request.disks]
    try:
        return _backup(vault, rp_id, request, readers)
    finally:
        for reader in readers:
            reader.close()


def _backup(
    vault: Vault, rp_id: str, request: BackupRequest, readers: list[ImageReader]
) -> Manifest:
    total = sum(reader.size for reader in readers)
    done = [0]

    def advance(nbytes: int) -> None:
        done[0] += nbytes
        request.progress(done[0], total)

    with vault.writer_lease() as refresh:
        entries = []
        history = vault.manifests(request.vm)  # read once, not once per disk
        run = _Run(vault, request, advance, refresh)
        for disk, reader in zip(request.disks, readers, strict=True):
            base = _base(vault, history, disk.name)
            entries.append(_backup_disk(run, rp_id, disk, reader, base))
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


def _base(vault: Vault, history: list[Manifest], disk: str) -> _Base | None:
    """The newest readable index of ``disk`` among a VM's points, and its point."""
    for manifest in reversed(history):
        for entry in manifest.disks:
            if entry.name == disk:
                try:
                    return _Base(manifest.id, vault.read_index(manifest, entry))
                except VaultIntegrityError:
                    return None
    return None


def _reusable(
    vault: Vault, disk: DiskSource, base: _Base | None, size: int
) -> tuple[ExtentMap, DiskIndex] | None:
    """The changed ranges and the index to take unchanged chunks from, if they can be trusted."""
    if disk.changed is None or base is None or disk.changed_since != base.point:
        return None
    if base.index.chunk_size != vault.chunk_size or base.index.image_size != size:
        return None
    return ExtentMap(sorted(disk.changed)), base.index


def _backup_disk(
    run: _Run, rp_id: str, disk: DiskSource, reader: ImageReader, base: _Base | None
) -> ManifestDisk:
    vault, advance = run.vault, run.advance
    chunk_size = vault.chunk_size
    previous = base.index if base else None
    known = set(previous.digests) if previous and previous.chunk_size == chunk_size else set()
    tally = _Tally()
    size = reader.size
    count = chunk_count(size, chunk_size)
    extents = ExtentMap(reader.data_extents())
    reuse = _reusable(vault, disk, base, size)
    digests = [ZERO_DIGEST] * count
    to_read = []
    for i in range(count):
        start, end = i * chunk_size, min((i + 1) * chunk_size, size)
        if not extents.has_data(start, end):
            advance(end - start)
        elif reuse and not reuse[0].has_data(start, end) and _stored(vault, reuse[1].digests[i]):
            digests[i] = reuse[1].digests[i]
            tally.reused_chunks += 1
            advance(end - start)
        else:
            to_read.append(i)
    for i, digest in _store_chunks(run, disk.name, reader, to_read, known, tally):
        digests[i] = digest
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
        read_chunks=tally.read_chunks,
    )


def _store_chunks(
    run: _Run, disk: str, reader: ImageReader, to_read: list[int], known: set[bytes], tally: _Tally
) -> list[tuple[int, bytes]]:
    """Read, hash and store the chunks ``to_read``: each one's index and digest.

    Threads read, check for zeros, hash and compress; a blob to store goes to the write pool
    (temp file, fsync, link), so they never wait for the disk. Every write has finished when
    this returns, and counted in ``tally``; the first failure of any is raised.
    """
    vault = run.vault
    chunk_size, size = vault.chunk_size, reader.size
    zero = bytes(chunk_size)

    def store_chunk(i: int) -> bytes:
        length = min(chunk_size, size - i * chunk_size)
        data = reader.pread(length, i * chunk_size)
        if len(data) != length:
            raise OSError(f"disk {disk} shrank while it was read")
        if data == (zero if length == chunk_size else bytes(length)):
            return ZERO_DIGEST
        digest = vault.codec.digest(data)
        name = digest.hex()
        if vault.store.exists(name):  # checked even when known: verify may have quarantined it
            if digest not in known:  # a committed index keeps known chunks alive already
                vault.store.touch(name)
            return digest
        blob = vault.codec.encode(data, digest)
        stored = sum(len(part) for part in blob)
        writes.submit(lambda: stored if vault.store.put(name, blob) else 0)
        return digest

    found = []
    with WritePool[int](WRITE_THREADS, WRITES_PENDING) as writes:
        for i, digest in bounded_map(
            store_chunk, to_read, run.request.threads, before_each=run.check_cancel
        ):
            found.append((i, digest))
            tally.read_chunks += 1
            tally.count(writes.finished())
            run.advance(min(chunk_size, size - i * chunk_size))
        tally.count(writes.finished(wait_all=True))
    return found


def _stored(vault: Vault, digest: bytes) -> bool:
    """True if a chunk taken from an earlier index is there (zero chunks always are)."""
    return digest == ZERO_DIGEST or vault.store.exists(digest.hex())

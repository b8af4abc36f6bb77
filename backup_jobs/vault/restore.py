"""Restore: byte-identical, sparse images, every chunk verified (docs/design.md §9)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from backup_jobs.errors import Cancelled, InvalidRestoreTarget, VaultIntegrityError
from backup_jobs.vault.backup import DEFAULT_THREADS, WRITE_THREADS
from backup_jobs.vault.chunkstore import ChunkMissing, damaged_blob
from backup_jobs.vault.format import ZERO_DIGEST, FormatError, Manifest, ManifestDisk
from backup_jobs.vault.imagefile import ImageWriter
from backup_jobs.vault.oserrors import naming
from backup_jobs.vault.pipeline import Progress, bounded_map, ignore_progress, never
from backup_jobs.vault.repository import Vault
from backup_jobs.vault.sparse import nonzero_runs

PARTIAL_SUFFIX = ".partial"
# Each thread decodes a chunk into its own buffer and writes it from there (no copy, no
# allocation per chunk), so it also waits for its writes: the hashing threads of a backup plus
# the threads that would have written for them keep the cores busy and the disk's queue full.
RESTORE_THREADS = DEFAULT_THREADS + WRITE_THREADS


@dataclass
class RestoreRequest:
    """Which recovery point to restore where."""

    recovery_point: str
    target_dir: Path
    allowed_root: Path
    overwrite: bool = False
    threads: int = RESTORE_THREADS
    progress: Progress = ignore_progress
    should_cancel: Callable[[], bool] = never


def restore(vault: Vault, request: RestoreRequest) -> list[Path]:
    """Write every disk of the recovery point as ``<target>/<disk>.img``; returns the paths."""
    manifest = vault.manifest(request.recovery_point)
    target = _check_target(request, manifest)
    done = [0]
    partials: list[Path] = []
    try:
        for disk in manifest.disks:
            partials.append(_restore_disk(vault, manifest, disk, target, request, done))
    except BaseException:
        # Nothing of a failed restore is left behind: the images written so far are still
        # partial files (a half-restored VM would look whole to whoever finds it).
        for path in partials:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        raise
    # Every image gets its name only once all are written, so an attempt that dies (a worker
    # killed) leaves only partial files, which the retry replaces, never a final image that
    # its own check would then refuse to overwrite.
    finals = [_final(path) for path in partials]
    for path, final in zip(partials, finals, strict=True):
        os.replace(path, final)
    return finals


def _final(partial: Path) -> Path:
    return partial.with_name(partial.name.removesuffix(PARTIAL_SUFFIX))


def _check_target(request: RestoreRequest, manifest: Manifest) -> Path:
    root = request.allowed_root.resolve()
    target = request.target_dir.resolve()
    if not target.is_relative_to(root):
        raise InvalidRestoreTarget(
            str(request.target_dir), f"{target} is outside the allowed restore root {root}"
        )
    target.mkdir(parents=True, exist_ok=True)
    for disk in manifest.disks:
        existing = target / f"{disk.name}.img"
        if existing.exists() and not request.overwrite:
            raise InvalidRestoreTarget(str(existing), "the file exists and overwrite was not asked")
    return target


def _restore_disk(
    vault: Vault,
    manifest: Manifest,
    disk: ManifestDisk,
    target: Path,
    request: RestoreRequest,
    done: list[int],
) -> Path:
    """Write one disk's image as ``<target>/<disk>.img.partial``; returns that path."""
    index = vault.read_index(manifest, disk)
    total = manifest.size_bytes
    partial = target / f"{disk.name}.img{PARTIAL_SUFFIX}"
    # A stale (or planted) partial file goes first: the writer creates its own, never
    # following a symlink that would lead the write out of the restore root.
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    image = ImageWriter(partial, index.image_size)
    wanted = [i for i, d in enumerate(index.digests) if d != ZERO_DIGEST]

    def restore_chunk(i: int) -> int:
        digest = index.digests[i]
        buffer = image.chunk_buffer(index.chunk_size)
        try:
            # The digest, checked on every chunk, covers every byte: the blob's CRC (for
            # checks without the key) would be a second pass over it for nothing.
            blob = vault.store.get_view(digest.hex())
            length = vault.codec.decode_into(blob, digest, buffer, check_crc=False)
        except ChunkMissing as exc:
            raise _integrity(manifest, digest, "is missing") from exc
        except FormatError as exc:
            raise _integrity(manifest, digest, str(exc)) from exc
        except OSError as exc:
            # The blob, not the image: a read error must not pass for the target's (a
            # directory where the blob should be, an I/O error of the vault's disk).
            if not damaged_blob(exc):
                raise  # as it is, naming the blob's path (out of the target)
            raise _integrity(manifest, digest, f"cannot be read: {exc}") from exc
        offset = i * index.chunk_size
        for start, end in nonzero_runs(buffer[:length]):  # zeros inside a chunk stay holes too
            image.write_from_buffer(start, end, offset + start)
        return length

    def check_cancel() -> None:
        if request.should_cancel():
            raise Cancelled(manifest.vm)

    try:
        with naming(partial):  # a write refused (no space, I/O error) names the image
            done[0] += index.image_size - sum(
                min(index.chunk_size, index.image_size - i * index.chunk_size) for i in wanted
            )
            request.progress(done[0], total)
            for _, nbytes in bounded_map(
                restore_chunk, wanted, request.threads, before_each=check_cancel
            ):
                done[0] += nbytes
                request.progress(done[0], total)
    except BaseException:
        _discard(image, partial)
        raise
    try:
        with naming(partial):
            image.finish()
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        raise
    return partial


def _discard(image: ImageWriter, partial: Path) -> None:
    image.close()
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()


def _integrity(manifest: Manifest, digest: bytes, why: str) -> VaultIntegrityError:
    return VaultIntegrityError(
        manifest.vm, f"chunk {digest.hex()} of recovery point {manifest.id} {why}"
    )

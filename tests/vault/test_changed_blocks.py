"""Changed-block incrementals: only changed ranges are read, and every point still restores."""

from __future__ import annotations

import os
from pathlib import Path

from backup_jobs.vault import BackupRequest, DiskSource, Manifest, Vault, backup, verify
from backup_jobs.vault.source import FileImage
from tests.vault.conftest import SMALL_CHUNK, restored_bytes, write_image

CHUNKS = 32


def _write(image: Path, offset: int, data: bytes) -> tuple[int, int]:
    with open(image, "r+b") as out:
        out.seek(offset)
        out.write(data)
    return offset, offset + len(data)


def _backup(
    vault: Vault,
    image: Path,
    changed: list[tuple[int, int]] | None = None,
    since: str | None = None,
) -> Manifest:
    disk = DiskSource(
        "os", image, changed=tuple(changed) if changed is not None else None, changed_since=since
    )
    return backup(vault, BackupRequest("cs/vm", [disk], threads=2))


def test_an_incremental_with_changed_ranges_reads_only_the_chunks_they_touch(
    vault: Vault, tmp_path: Path
) -> None:
    image = write_image(tmp_path / "os.raw", [("data", CHUNKS * SMALL_CHUNK)], seed=3)
    first = _backup(vault, image)
    changed = [
        _write(image, 5 * SMALL_CHUNK + 100, os.urandom(10)),
        _write(image, 20 * SMALL_CHUNK - 5, os.urandom(10)),  # spans two chunks
    ]

    second = _backup(vault, image, changed, since=first.id)

    assert first.disks[0].read_chunks == CHUNKS
    assert second.disks[0].read_chunks == 3
    assert second.disks[0].stored_chunks == 3
    assert restored_bytes(vault, second.id, tmp_path) == image.read_bytes()
    assert verify(vault).ok


def test_changed_ranges_relative_to_another_point_are_not_trusted(
    vault: Vault, tmp_path: Path
) -> None:
    image = write_image(tmp_path / "os.raw", [("data", CHUNKS * SMALL_CHUNK)], seed=4)
    _backup(vault, image)
    _write(image, 0, os.urandom(SMALL_CHUNK))

    later = _backup(vault, image, [], since="some-other-point")

    assert later.disks[0].read_chunks == CHUNKS
    assert restored_bytes(vault, later.id, tmp_path) == image.read_bytes()


def test_a_quarantined_chunk_outside_the_changed_ranges_is_read_and_stored_again(
    vault: Vault, tmp_path: Path
) -> None:
    image = write_image(tmp_path / "os.raw", [("data", CHUNKS * SMALL_CHUNK)], seed=5)
    first = _backup(vault, image)
    lost = vault.read_index(first, first.disks[0]).digests[7].hex()
    vault.store.quarantine(lost)

    second = _backup(vault, image, [], since=first.id)

    assert second.disks[0].read_chunks == 1 and vault.store.exists(lost)
    assert restored_bytes(vault, second.id, tmp_path) == image.read_bytes()


class FlippingReader(FileImage):
    """A reader over a file that records which offsets were read (any ImageReader will do)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.offsets: list[int] = []

    def pread(self, length: int, offset: int) -> bytes:
        self.offsets.append(offset)
        return super().pread(length, offset)


def test_a_backup_reads_through_any_image_reader(vault: Vault, tmp_path: Path) -> None:
    image = write_image(tmp_path / "os.raw", [("data", 4 * SMALL_CHUNK), ("hole", SMALL_CHUNK)])
    reader = FlippingReader(image)

    point = backup(vault, BackupRequest("cs/vm", [DiskSource("os", reader=reader)], threads=2))

    assert sorted(reader.offsets) == [i * SMALL_CHUNK for i in range(4)]
    assert restored_bytes(vault, point.id, tmp_path) == image.read_bytes()

"""The filesystem chunk store's fsyncs: a blob's name is durable before a commit builds on it.

Which directory is fsynced when is not visible in the store's contents, so these tests record
the calls to ``fsync_dir``; the crash tests (test_crash_gc_corruption) cover what a crash leaves.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from backup_jobs.vault.chunkstores import filesystem
from backup_jobs.vault.chunkstores.filesystem import FilesystemChunkStore

A = "ab" * 32


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real = filesystem.fsync_dir

    def record(path: Path) -> None:
        calls.append(path)
        real(path)

    monkeypatch.setattr(filesystem, "fsync_dir", record)
    return calls


def test_sync_fsyncs_the_directory_of_every_blob_written_and_the_chunks_directory(
    tmp_path: Path, synced: list[Path]
) -> None:
    store = FilesystemChunkStore(tmp_path)
    digests = [f"{n:02x}" * 32 for n in range(20)]
    for digest in digests:
        store.put(digest, [b"blob"])
    assert synced == []

    store.sync()

    assert sorted(synced[:-1]) == sorted({store.path(d).parent for d in digests})
    assert synced[-1] == store.root
    synced.clear()
    store.sync()
    assert synced == [store.root]  # each directory once


def test_a_blob_found_or_linked_by_another_writer_gets_its_directory_fsynced_by_sync(
    tmp_path: Path, synced: list[Path]
) -> None:
    writer, other = FilesystemChunkStore(tmp_path), FilesystemChunkStore(tmp_path)
    writer.put(A, [b"blob"])

    other.touch(A)  # found existing: its writer may not have fsynced its directory yet
    assert not other.put(A, [b"blob"])  # lost the race to link it
    other.sync()

    assert synced == [other.path(A).parent, other.root]

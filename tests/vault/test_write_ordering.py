"""Blob writes run on a pool of their own; a recovery point still waits for every one of them.

A point is visible only when all its data is durable (docs/design.md §5): every blob it
references has been fsynced and linked before its index and manifest are written, and a
write that fails, even the last one to finish, fails the backup and commits nothing.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from backup_jobs.vault import Vault, repository, verify
from tests.vault.conftest import SMALL_CHUNK, back_up, restored_bytes, write_image


def test_the_index_and_manifest_are_written_only_after_every_blob_is_linked(
    tmp_path: Path,
) -> None:
    Vault.create(tmp_path / "vault", chunk_size=SMALL_CHUNK)
    image = write_image(tmp_path / "os.raw", [("data", 12 * SMALL_CHUNK)])
    linked = [0]
    seen_at: dict[str, int] = {}
    lock = threading.Lock()

    def slow_links(step: str) -> None:
        if step == "chunk_temp_written":
            time.sleep(0.02)  # the disk lags behind the hashing threads
        elif step == "chunk_linked":
            with lock:
                linked[0] += 1
        else:
            seen_at.setdefault(step, linked[0])

    manifest = back_up(Vault.open(tmp_path / "vault", fault=slow_links), image)

    assert manifest.disks[0].stored_chunks == 12
    assert seen_at["idx_temp_written"] == 12
    assert seen_at["json_temp_written"] == 12


def test_a_failed_blob_write_that_finishes_last_fails_the_backup_and_commits_nothing(
    tmp_path: Path,
) -> None:
    Vault.create(tmp_path / "vault", chunk_size=SMALL_CHUNK)
    image = write_image(tmp_path / "os.raw", [("data", 8 * SMALL_CHUNK)])
    writes = [0]
    lock = threading.Lock()

    def full_disk_at_the_end(step: str) -> None:
        if step != "chunk_temp_written":
            return
        with lock:
            writes[0] += 1
            last = writes[0] == 8
        if last:
            time.sleep(0.2)  # finishes after the hashing threads are all done
            raise OSError(errno.ENOSPC, "No space left on device")

    failing = Vault.open(tmp_path / "vault", fault=full_disk_at_the_end)
    with pytest.raises(OSError, match="No space"):
        back_up(failing, image)

    vault = Vault.open(tmp_path / "vault")
    assert vault.manifests() == []
    assert verify(vault).ok
    manifest = back_up(vault, image)
    assert restored_bytes(vault, manifest.id, tmp_path) == image.read_bytes()


@pytest.mark.parametrize(
    ("call", "folder"),
    [("writev", "chunks"), ("fsync", "leases")],
    ids=["blob", "lease"],
)
def test_a_full_vault_disk_names_the_file_it_could_not_write_and_leaves_no_temp_file(
    vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str, folder: str
) -> None:
    # writev and fsync name no file: a library caller saw only "No space left on device". A
    # backup's first write is its writer lease, which fails first on a disk already full (an
    # fsync refused); GC removes only the chunk store's temp files: one left in leases/ stayed.
    image = write_image(tmp_path / "os.raw", [("data", 2 * SMALL_CHUNK)])

    def full(*args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, call, full)
    with pytest.raises(OSError, match="No space") as raised:
        back_up(vault, image)

    assert raised.value.errno == errno.ENOSPC
    assert str(tmp_path / "vault" / folder) in str(raised.value.filename)
    monkeypatch.undo()
    assert not [p for p in (tmp_path / "vault").rglob("*.tmp")]
    assert not [p for p in (tmp_path / "vault" / "chunks").rglob("*") if p.is_file()]
    manifest = back_up(vault, image)
    assert restored_bytes(vault, manifest.id, tmp_path) == image.read_bytes()


def test_an_index_that_cannot_be_written_leaves_no_temp_file(
    vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = write_image(tmp_path / "os.raw", [("data", 2 * SMALL_CHUNK)])
    real_replace = repository.os.replace

    def refuse_index(src: str, dst: str) -> None:
        if str(dst).endswith(".idx"):
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        real_replace(src, dst)

    monkeypatch.setattr(repository.os, "replace", refuse_index)
    with pytest.raises(OSError, match="quota"):
        back_up(vault, image)

    assert not [p for p in (tmp_path / "vault").rglob("*.tmp")]

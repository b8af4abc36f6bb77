"""Helpers for the vault tests: images with data, zeros and holes; small chunk sizes."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from backup_jobs.vault import (
    BackupRequest,
    DiskSource,
    Keys,
    Manifest,
    RestoreRequest,
    Vault,
    backup,
    restore,
)

SMALL_CHUNK = 64 << 10


def write_image(path: Path, segments: Sequence[tuple[str, int]], seed: int = 0) -> Path:
    """An image of ``("data"|"zero"|"hole", length)`` segments, in order."""
    rng = __import__("random").Random(seed)
    with open(path, "wb") as image:
        for kind, length in segments:
            if kind == "data":
                image.write(rng.randbytes(length))
            elif kind == "zero":
                image.write(bytes(length))
            else:
                image.seek(length, os.SEEK_CUR)
        image.truncate(image.tell())
    return path


def back_up(vault: Vault, image: Path, vm: str = "cs/vm") -> Manifest:
    """One-disk backup with two threads."""
    return backup(vault, BackupRequest(vm, [DiskSource("os", image)], threads=2))


def restored_bytes(vault: Vault, rp_id: str, where: Path) -> bytes:
    """Restore a one-disk recovery point under ``where`` and read it back."""
    [path] = restore(vault, RestoreRequest(rp_id, where / rp_id, where, overwrite=True, threads=2))
    return path.read_bytes()


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return Vault.create(tmp_path / "vault", chunk_size=SMALL_CHUNK)


@pytest.fixture
def encrypted_vault(tmp_path: Path) -> tuple[Vault, Keys]:
    keys = Keys.generate()
    return Vault.create(tmp_path / "evault", chunk_size=SMALL_CHUNK, keys=keys), keys

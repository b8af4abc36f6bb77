"""Backup and restore of real files: identity, sparseness, dedup, encryption, targets."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from backup_jobs.errors import (
    Cancelled,
    ConfigurationError,
    InvalidRestoreTarget,
    RecoveryPointNotFound,
)
from backup_jobs.vault import (
    BackupRequest,
    DiskSource,
    Keys,
    RestoreRequest,
    Vault,
    backup,
    restore,
    verify,
)
from tests.vault.conftest import SMALL_CHUNK, back_up, restored_bytes, write_image

IMAGE = [("data", 200_000), ("zero", 3 * SMALL_CHUNK), ("hole", 5 * SMALL_CHUNK), ("data", 1234)]


def test_restore_is_byte_identical_and_sparse_where_the_original_had_zeros(
    vault: Vault, tmp_path: Path
) -> None:
    image = write_image(tmp_path / "os.raw", IMAGE)

    manifest = back_up(vault, image)
    [restored] = restore(vault, RestoreRequest(manifest.id, tmp_path / "out", tmp_path))

    assert restored.read_bytes() == image.read_bytes()
    assert restored.stat().st_blocks * 512 <= 5 * SMALL_CHUNK  # 4 data chunks, rounded
    assert manifest.disks[0].chunks == -(-image.stat().st_size // SMALL_CHUNK)
    assert manifest.disks[0].stored_chunks == 5  # 200,000 B of data spans 4 chunks, + the tail


def test_zeros_inside_a_chunk_stay_holes_when_restored(vault: Vault, tmp_path: Path) -> None:
    big = Vault.create(tmp_path / "big", chunk_size=4 << 20)
    image = write_image(tmp_path / "os.raw", [("data", 512), ("zero", (4 << 20) - 512)])

    manifest = back_up(big, image)
    [restored] = restore(big, RestoreRequest(manifest.id, tmp_path / "out", tmp_path))

    assert restored.read_bytes() == image.read_bytes()
    assert restored.stat().st_blocks * 512 <= 64 << 10  # one 64 KiB run, not the 4 MiB chunk


def test_zero_chunks_and_holes_are_never_stored(vault: Vault, tmp_path: Path) -> None:
    image = write_image(tmp_path / "z.raw", [("zero", 4 * SMALL_CHUNK), ("hole", 8 * SMALL_CHUNK)])

    manifest = back_up(vault, image)

    assert list(vault.store.chunks()) == []
    assert manifest.new_bytes == 0
    assert restored_bytes(vault, manifest.id, tmp_path) == image.read_bytes()


def test_unchanged_image_stores_nothing_and_one_changed_chunk_stores_one(
    vault: Vault, tmp_path: Path
) -> None:
    image = write_image(tmp_path / "os.raw", [("data", 16 * SMALL_CHUNK)])
    first = back_up(vault, image)
    unchanged = back_up(vault, image)
    with open(image, "r+b") as f:
        f.seek(5 * SMALL_CHUNK + 17)
        f.write(b"changed")
    changed = back_up(vault, image)

    assert first.disks[0].stored_chunks == 16
    assert unchanged.new_bytes == 0 and unchanged.disks[0].chunks == 16
    assert changed.disks[0].stored_chunks == 1
    assert restored_bytes(vault, first.id, tmp_path) != restored_bytes(vault, changed.id, tmp_path)
    assert restored_bytes(vault, changed.id, tmp_path) == image.read_bytes()


def test_identical_chunks_across_vms_are_stored_once(vault: Vault, tmp_path: Path) -> None:
    image = write_image(tmp_path / "os.raw", [("data", 4 * SMALL_CHUNK)])

    back_up(vault, image, vm="cs/a")
    second = back_up(vault, image, vm="cs/b")

    assert second.new_bytes == 0
    assert len(list(vault.store.chunks())) == 4


def test_progress_reaches_the_total_and_cancel_leaves_no_recovery_point(
    vault: Vault, tmp_path: Path
) -> None:
    image = write_image(tmp_path / "os.raw", [("data", 8 * SMALL_CHUNK), ("hole", 8 * SMALL_CHUNK)])
    seen: list[tuple[int, int]] = []
    backup(
        vault,
        BackupRequest(
            "cs/vm", [DiskSource("os", image)], progress=lambda d, t: seen.append((d, t))
        ),
    )

    calls = [0]

    def cancel_after_three() -> bool:
        calls[0] += 1
        return calls[0] > 3

    with pytest.raises(Cancelled):
        backup(
            vault,
            BackupRequest(
                "cs/vm2", [DiskSource("os", image)], threads=1, should_cancel=cancel_after_three
            ),
        )

    assert seen[-1] == (16 * SMALL_CHUNK, 16 * SMALL_CHUNK)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert vault.manifests("cs/vm2") == []
    assert list((vault.root / "leases").iterdir()) == []
    assert verify(vault).ok


def test_encrypted_vault_round_trips_and_refuses_to_open_without_its_key(
    encrypted_vault: tuple[Vault, Keys], tmp_path: Path
) -> None:
    vault, keys = encrypted_vault
    image = write_image(tmp_path / "os.raw", IMAGE)
    manifest = back_up(vault, image)
    blob = next(iter((vault.root / "chunks").rglob("*" * 1)))

    with pytest.raises(ConfigurationError, match="encrypted; give its key file"):
        Vault.open(vault.root)
    with pytest.raises(ConfigurationError, match="does not belong"):
        Vault.open(vault.root, keys=Keys.generate())
    reopened = Vault.open(vault.root, keys=keys)

    assert restored_bytes(reopened, manifest.id, tmp_path) == image.read_bytes()
    assert blob.exists()
    assert all(
        image.read_bytes()[:64] not in p.read_bytes()
        for p in (vault.root / "chunks").rglob("*")
        if p.is_file()
    )


def test_key_file_round_trips_with_owner_only_permissions(tmp_path: Path) -> None:
    keys = Keys.generate()
    keys.save(tmp_path / "vault.key")

    assert Keys.load(tmp_path / "vault.key") == keys
    assert (tmp_path / "vault.key").stat().st_mode & 0o077 == 0
    with pytest.raises(FileExistsError):
        keys.save(tmp_path / "vault.key")


def test_restore_refuses_targets_outside_the_root_and_existing_files(
    vault: Vault, tmp_path: Path
) -> None:
    image = write_image(tmp_path / "os.raw", [("data", 1000)])
    manifest = back_up(vault, image)
    root = tmp_path / "restores"
    root.mkdir()
    (root / "escape").symlink_to(tmp_path)

    with pytest.raises(InvalidRestoreTarget, match="outside the allowed restore root"):
        restore(vault, RestoreRequest(manifest.id, tmp_path / "elsewhere", root))
    with pytest.raises(InvalidRestoreTarget, match="outside"):
        restore(vault, RestoreRequest(manifest.id, root / "escape" / "x", root))
    restore(vault, RestoreRequest(manifest.id, root / "a", root))
    (root / "a" / "os.img").write_bytes(b"precious")
    with pytest.raises(InvalidRestoreTarget, match="exists"):
        restore(vault, RestoreRequest(manifest.id, root / "a", root))
    assert (root / "a" / "os.img").read_bytes() == b"precious"
    restore(vault, RestoreRequest(manifest.id, root / "a", root, overwrite=True))
    assert (root / "a" / "os.img").read_bytes() == image.read_bytes()


def test_unknown_recovery_point_is_not_found(vault: Vault, tmp_path: Path) -> None:
    with pytest.raises(RecoveryPointNotFound):
        restore(vault, RestoreRequest("20990101T000000Z-000000", tmp_path / "o", tmp_path))


def test_several_disks_in_one_recovery_point(vault: Vault, tmp_path: Path) -> None:
    os_image = write_image(tmp_path / "os.raw", [("data", 3 * SMALL_CHUNK)], seed=1)
    data_image = write_image(tmp_path / "d.raw", [("hole", SMALL_CHUNK), ("data", 10)], seed=2)

    manifest = backup(
        vault, BackupRequest("cs/vm", [DiskSource("os", os_image), DiskSource("data0", data_image)])
    )
    paths = restore(vault, RestoreRequest(manifest.id, tmp_path / "o", tmp_path))

    assert [p.name for p in paths] == ["os.img", "data0.img"]
    assert paths[0].read_bytes() == os_image.read_bytes()
    assert paths[1].read_bytes() == data_image.read_bytes()
    assert manifest.size_bytes == os.path.getsize(os_image) + os.path.getsize(data_image)


def test_restore_never_writes_through_a_planted_partial_symlink(
    vault: Vault, tmp_path: Path
) -> None:
    image = write_image(tmp_path / "os.raw", [("data", 1000)])
    manifest = back_up(vault, image)
    root = tmp_path / "restores"
    (root / "a").mkdir(parents=True)
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"precious")
    (root / "a" / "os.img.partial").symlink_to(outside)

    [restored] = restore(vault, RestoreRequest(manifest.id, root / "a", root))

    assert outside.read_bytes() == b"precious"
    assert not restored.is_symlink()
    assert restored.read_bytes() == image.read_bytes()


def test_a_full_target_names_the_file_and_leaves_no_image_of_the_failed_restore(
    vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    os_image = write_image(tmp_path / "os.raw", [("data", 3 * SMALL_CHUNK)], seed=1)
    data_image = write_image(tmp_path / "d.raw", [("data", 3 * SMALL_CHUNK)], seed=2)
    manifest = backup(
        vault, BackupRequest("cs/vm", [DiskSource("os", os_image), DiskSource("data0", data_image)])
    )
    real_pwrite = os.pwrite

    def full_on_data0(fd: int, data: bytes, offset: int) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").endswith("data0.img.partial"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", full_on_data0)
    target = tmp_path / "o"
    with pytest.raises(OSError, match="No space left") as raised:
        restore(vault, RestoreRequest(manifest.id, target, tmp_path))

    assert raised.value.filename == str(target / "data0.img.partial")
    assert sorted(p.name for p in target.iterdir()) == []  # os.img, written first, went too


def test_a_restore_killed_half_way_leaves_no_image_and_the_next_attempt_completes(
    vault: Vault, tmp_path: Path
) -> None:
    os_image = write_image(tmp_path / "os.raw", [("data", 3 * SMALL_CHUNK)], seed=1)
    data_image = write_image(tmp_path / "d.raw", [("data", 3 * SMALL_CHUNK)], seed=2)
    manifest = backup(
        vault, BackupRequest("cs/vm", [DiskSource("os", os_image), DiskSource("data0", data_image)])
    )
    target = tmp_path / "o"
    pid = os.fork()
    if pid == 0:  # the worker that dies (SIGKILL-like: no cleanup) while writing data0
        real_pwrite = os.pwrite

        def die_on_data0(fd: int, data: bytes, offset: int) -> int:
            if os.readlink(f"/proc/self/fd/{fd}").endswith("data0.img.partial"):
                os._exit(9)
            return real_pwrite(fd, data, offset)

        os.pwrite = die_on_data0  # type: ignore[assignment]
        try:
            restore(vault, RestoreRequest(manifest.id, target, tmp_path, threads=1))
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 9
    assert not (target / "os.img").exists()  # only partial files, never a final image

    paths = restore(vault, RestoreRequest(manifest.id, target, tmp_path))  # the retry

    assert [p.read_bytes() for p in paths] == [os_image.read_bytes(), data_image.read_bytes()]
    assert sorted(p.name for p in target.iterdir()) == ["data0.img", "os.img"]

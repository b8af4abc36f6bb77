"""Crashes at every step of a backup, GC racing backups, and corruption of every kind."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from backup_jobs.errors import Cancelled, VaultIntegrityError
from backup_jobs.vault import Manifest, Vault, collect_garbage, prune, verify
from backup_jobs.vault.format import ZERO_DIGEST, DiskIndex, ManifestDisk
from backup_jobs.vault.retention import RetentionPolicy
from tests.vault.conftest import SMALL_CHUNK, back_up, restored_bytes, write_image

CRASH_STEPS = [
    "chunk_temp_written",
    "chunk_linked",
    "idx_temp_written",
    "indexes_written",
    "json_temp_written",
    "manifest_committed",
]


class Crash(Exception):
    """A simulated crash at one step."""


@pytest.mark.parametrize("step", CRASH_STEPS)
def test_crash_at_any_step_leaves_a_vault_that_verifies_and_a_next_backup_that_succeeds(
    tmp_path: Path, step: str
) -> None:
    Vault.create(tmp_path / "vault", chunk_size=SMALL_CHUNK)
    image = write_image(tmp_path / "os.raw", [("data", 6 * SMALL_CHUNK), ("hole", SMALL_CHUNK)])
    fired = []

    def crash(at: str) -> None:
        if at == step and not fired:
            fired.append(at)
            raise Crash(at)

    crashing = Vault.open(tmp_path / "vault", fault=crash)
    with pytest.raises(Crash):
        back_up(crashing, image)

    vault = Vault.open(tmp_path / "vault")
    committed = vault.manifests()
    assert fired == [step]
    assert len(committed) == (1 if step == "manifest_committed" else 0)
    assert verify(vault).ok
    manifest = back_up(vault, image)
    assert restored_bytes(vault, manifest.id, tmp_path) == image.read_bytes()
    collect_garbage(vault, margin_seconds=0, now=time.time() + 1)
    collect_garbage(vault, margin_seconds=0, now=time.time() + 2)
    assert verify(vault).ok
    assert restored_bytes(vault, manifest.id, tmp_path) == image.read_bytes()
    assert not list((vault.root / "chunks").rglob("*.tmp"))


def test_gc_concurrent_with_backups_never_loses_a_chunk_a_manifest_references(
    tmp_path: Path,
) -> None:
    vault = Vault.create(tmp_path / "vault", chunk_size=SMALL_CHUNK)
    images = [
        write_image(tmp_path / f"{i}.raw", [("data", 12 * SMALL_CHUNK)], seed=i % 2)
        for i in range(6)
    ]
    stop = threading.Event()
    runs = [0]

    def gc_loop() -> None:
        while not stop.is_set():
            # No margin, and a clock in the future: the harshest cutoff GC can pick.
            collect_garbage(vault, margin_seconds=0, now=time.time() + 5)
            prune(vault, "cs/churn", RetentionPolicy(keep_last=1))
            runs[0] += 1

    def slow(at: str) -> None:
        if at == "chunk_linked":
            time.sleep(0.002)

    slow_vault = Vault.open(vault.root, fault=slow)
    collector = threading.Thread(target=gc_loop)
    collector.start()
    try:
        manifests = [
            back_up(slow_vault, image, vm="cs/churn" if i % 2 else "cs/keep")
            for i, image in enumerate(images)
        ]
    finally:
        stop.set()
        collector.join()

    assert runs[0] > 3
    kept = [m for m in manifests if m.vm == "cs/keep"] + vault.manifests("cs/churn")
    for manifest in kept:
        assert (
            restored_bytes(vault, manifest.id, tmp_path)
            == images[manifests.index(manifest)].read_bytes()
        )
    collect_garbage(vault, margin_seconds=0)
    for manifest in kept:
        for disk in manifest.disks:
            for digest in vault.read_index(manifest, disk).digests:
                assert digest == ZERO_DIGEST or vault.store.exists(digest.hex())
    assert verify(vault).ok


def test_gc_frees_what_pruned_points_alone_referenced_in_two_runs(
    vault: Vault, tmp_path: Path
) -> None:
    old = back_up(vault, write_image(tmp_path / "a.raw", [("data", 3 * SMALL_CHUNK)], seed=1))
    new = back_up(vault, write_image(tmp_path / "a.raw", [("data", 3 * SMALL_CHUNK)], seed=2))
    selection = prune(vault, "cs/vm", RetentionPolicy(keep_last=1))

    first = collect_garbage(vault, margin_seconds=0, now=time.time() + 1)
    second = collect_garbage(vault, margin_seconds=0, now=time.time() + 2)

    assert selection.remove == (old.id,)
    assert (first.condemned, first.purged, first.orphan_indexes_removed) == (3, 0, 1)
    assert second.purged == 3
    assert len(list(vault.store.chunks())) == 3
    assert restored_bytes(vault, new.id, tmp_path) == (tmp_path / "a.raw").read_bytes()


def test_a_gc_stopped_by_its_heartbeat_after_marking_condemns_and_purges_nothing(
    vault: Vault, tmp_path: Path
) -> None:
    old = back_up(vault, write_image(tmp_path / "a.raw", [("data", 3 * SMALL_CHUNK)], seed=1))
    back_up(vault, write_image(tmp_path / "a.raw", [("data", 3 * SMALL_CHUNK)], seed=2))
    prune(vault, "cs/vm", RetentionPolicy(keep_last=1))
    beats = []

    def cancelled_after_the_mark() -> None:
        beats.append(1)
        if len(beats) >= 2:  # after mark and rescue: before the first blob is condemned
            raise Cancelled("vault")

    with pytest.raises(Cancelled):
        collect_garbage(vault, 0, time.time() + 1, heartbeat=cancelled_after_the_mark)
    chunks_after, garbage_after = len(list(vault.store.chunks())), list(vault.store.garbage())
    finished = collect_garbage(vault, margin_seconds=0, now=time.time() + 2)

    assert chunks_after == 6 and garbage_after == []
    assert finished.condemned == 3 and old.id not in {m.id for m in vault.manifests()}


def _one_chunk_path(vault: Vault) -> Path:
    return next(p for p in (vault.root / "chunks").rglob("*") if p.is_file())


def test_flipped_byte_is_found_by_verify_quarantined_and_stored_again_by_the_next_backup(
    vault: Vault, tmp_path: Path
) -> None:
    image = write_image(tmp_path / "os.raw", [("data", 2 * SMALL_CHUNK)])
    manifest = back_up(vault, image)
    chunk = _one_chunk_path(vault)
    data = bytearray(chunk.read_bytes())
    data[100] ^= 0xFF
    chunk.write_bytes(bytes(data))

    with pytest.raises(VaultIntegrityError) as raised:
        restored_bytes(vault, manifest.id, tmp_path)
    report = verify(vault)
    healed = back_up(vault, image)

    assert chunk.name in raised.value.message and manifest.id in raised.value.message
    assert list(report.bad_chunks) == [chunk.name] and "CRC32" in report.bad_chunks[chunk.name]
    assert report.missing_chunks == {chunk.name: [manifest.id]}
    assert (vault.root / "quarantine" / chunk.name).exists()
    assert healed.disks[0].stored_chunks == 1
    assert verify(vault).ok
    assert restored_bytes(vault, manifest.id, tmp_path) == image.read_bytes()
    assert not list(tmp_path.rglob("*.partial"))


def test_deleted_chunk_is_reported_missing_by_verify_and_restore(
    vault: Vault, tmp_path: Path
) -> None:
    manifest = back_up(vault, write_image(tmp_path / "os.raw", [("data", 2 * SMALL_CHUNK)]))
    chunk = _one_chunk_path(vault)
    chunk.unlink()

    report = verify(vault)

    assert report.missing_chunks == {chunk.name: [manifest.id]}
    with pytest.raises(
        VaultIntegrityError, match=f"{chunk.name} of recovery point {manifest.id} is missing"
    ):
        restored_bytes(vault, manifest.id, tmp_path)


def test_a_blob_replaced_by_a_directory_fails_restore_naming_the_chunk_and_verify_breaks_it(
    vault: Vault, tmp_path: Path
) -> None:
    # The blob reader's preadv names no file: the restore blamed its own partial image (which
    # the Restore job turns into InvalidRestoreTarget, "fix the target storage"), and verify
    # stopped with IsADirectoryError instead of marking the point.
    manifest = back_up(vault, write_image(tmp_path / "os.raw", [("data", 2 * SMALL_CHUNK)]))
    chunk = _one_chunk_path(vault)
    chunk.unlink()
    chunk.mkdir()

    with pytest.raises(VaultIntegrityError) as raised:
        restored_bytes(vault, manifest.id, tmp_path)
    report = verify(vault)

    assert f"{chunk.name} of recovery point {manifest.id} cannot be read" in raised.value.message
    assert not isinstance(raised.value.__cause__, VaultIntegrityError)
    assert list(report.bad_chunks) == [chunk.name]
    assert report.missing_chunks == {chunk.name: [manifest.id]}
    assert (vault.root / "quarantine" / chunk.name).exists()
    assert not list(tmp_path.rglob("*.partial"))


def test_a_read_error_of_the_process_not_the_blob_quarantines_nothing_and_breaks_no_point(
    vault: Vault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = back_up(vault, write_image(tmp_path / "os.raw", [("data", 2 * SMALL_CHUNK)]))
    chunk = _one_chunk_path(vault)

    def out_of_files(digest: str) -> memoryview:
        raise OSError(errno.EMFILE, "Too many open files", str(vault.store.path(digest)))

    monkeypatch.setattr(vault.store, "get_view", out_of_files)
    with pytest.raises(OSError, match="Too many open files") as raised:
        restored_bytes(vault, manifest.id, tmp_path)
    with pytest.raises(OSError, match="Too many open files"):
        verify(vault)

    assert not isinstance(raised.value, VaultIntegrityError)
    assert chunk.exists() and not (vault.root / "quarantine").exists()
    assert not list(tmp_path.rglob("*.partial"))


def test_truncated_index_is_found_by_verify_and_restore(vault: Vault, tmp_path: Path) -> None:
    manifest = back_up(vault, write_image(tmp_path / "os.raw", [("data", 2 * SMALL_CHUNK)]))
    index = vault.root / manifest.disks[0].index
    index.write_bytes(index.read_bytes()[:-7])

    report = verify(vault)

    assert (
        manifest.id in report.bad_indexes
        and "does not match the manifest" in report.bad_indexes[manifest.id]
    )
    with pytest.raises(VaultIntegrityError, match="index of disk os"):
        restored_bytes(vault, manifest.id, tmp_path)


def test_swapped_encrypted_blob_fails_authentication(tmp_path: Path, encrypted_vault) -> None:  # type: ignore[no-untyped-def]
    vault, _ = encrypted_vault
    back_up(vault, write_image(tmp_path / "os.raw", [("data", 2 * SMALL_CHUNK)]))
    first, second = sorted(p for p in (vault.root / "chunks").rglob("*") if p.is_file())
    first_bytes = first.read_bytes()
    os.replace(second, first)
    second.write_bytes(first_bytes)

    report = verify(vault)

    assert set(report.bad_chunks) == {first.name, second.name}
    assert all("decrypt" in why for why in report.bad_chunks.values())


def test_gc_removes_only_temp_files_older_than_any_write_takes(vault: Vault) -> None:
    # A crash leaves its temp file: a blob's, and a whole file's (a manifest, a writer lease,
    # the config) next to where it was going.
    folder = vault.root / "chunks" / "abcd"
    folder.mkdir(parents=True)
    temps = [
        folder / (".abcd" + "0" * 60 + ".1234abcd.tmp"),
        vault.root / "manifests" / ".20260101T000000Z-cs-vm-ab12.json.1234abcd.tmp",
        vault.root / "leases" / f".{'0' * 32}.json.1234abcd.tmp",
        vault.root / ".config.json.1234abcd.tmp",
    ]
    for temp in temps:
        temp.write_bytes(b"half a file")

    collect_garbage(vault, margin_seconds=0, now=time.time() + 5)
    survived = [temp.exists() for temp in temps]
    report = collect_garbage(vault, margin_seconds=0, now=time.time() + 3600)

    assert all(survived)
    assert report.temporaries_removed == len(temps) and not any(t.exists() for t in temps)
    assert (vault.root / "config.json").exists() and verify(vault).ok


class FlakyIndexVault(Vault):
    """A vault whose index of one recovery point cannot be read for a while (EIO, truncation)."""

    unreadable: str | None = None
    error: Exception = OSError(5, "Input/output error")

    def read_index(self, manifest: Manifest, disk: ManifestDisk) -> DiskIndex:
        if manifest.id == self.unreadable:
            raise self.error
        return super().read_index(manifest, disk)


@pytest.mark.parametrize(
    "error",
    [OSError(5, "Input/output error"), VaultIntegrityError("rp", "index truncated")],
    ids=["read error", "truncated index"],
)
def test_a_gc_run_that_cannot_read_every_index_deletes_and_condemns_nothing(
    tmp_path: Path, error: Exception
) -> None:
    Vault.create(tmp_path / "vault", chunk_size=SMALL_CHUNK)
    vault = FlakyIndexVault.open(tmp_path / "vault")
    images = [
        write_image(tmp_path / f"{n}.raw", [("data", 3 * SMALL_CHUNK)], seed=n) for n in (1, 2)
    ]
    points = [back_up(vault, image, vm=f"cs/vm{n}") for n, image in enumerate(images)]
    stale = write_image(tmp_path / "stale.raw", [("data", SMALL_CHUNK)], seed=9)
    pruned = back_up(vault, stale, vm="cs/gone")
    vault.delete_manifest(pruned.id)  # its chunk is garbage a full GC would condemn
    needed = vault.read_index(points[0], points[0].disks[0]).digests[0].hex()
    vault.store.condemn(needed)  # condemned by an earlier run that raced a backup
    vault.unreadable, vault.error = points[0].id, error

    report = collect_garbage(vault, margin_seconds=0, now=time.time() + 3600)
    vault.unreadable = None
    healed = collect_garbage(vault, margin_seconds=0, now=time.time() + 3600)

    assert report.unreadable_manifests == (points[0].id,)
    assert (report.purged, report.condemned, report.orphan_indexes_removed) == (0, 0, 0)
    assert report.skipped_reason is not None and points[0].id in report.skipped_reason
    assert healed.rescued == 1 and healed.skipped_reason is None and healed.condemned == 1
    assert verify(vault).ok
    for point, image in zip(points, images, strict=True):
        assert restored_bytes(vault, point.id, tmp_path) == image.read_bytes()


def test_verify_of_one_vm_rehashes_only_its_chunks_and_names_its_broken_points(
    vault: Vault, tmp_path: Path
) -> None:
    mine = back_up(vault, write_image(tmp_path / "a.raw", [("data", 2 * SMALL_CHUNK)]), "cs/a")
    other = back_up(
        vault, write_image(tmp_path / "b.raw", [("data", 3 * SMALL_CHUNK)], seed=1), "cs/b"
    )
    bad = next(
        p
        for p in (vault.root / "chunks").rglob("*")
        if p.is_file() and p.name in _digests(vault, mine)
    )
    data = bytearray(bad.read_bytes())
    data[50] ^= 0xFF
    bad.write_bytes(bytes(data))

    theirs = verify(vault, vm="cs/b")
    ours = verify(vault, vm="cs/a")

    assert theirs.ok and theirs.chunks_checked == 3 and set(theirs.points) == {other.id}
    assert ours.chunks_checked == 2 and list(ours.bad_chunks) == [bad.name]
    assert ours.broken_points() == {
        mine.id: f"chunk {bad.name}: blob CRC32 does not match its payload"
    }
    assert (vault.root / "quarantine" / bad.name).exists()


def _digests(vault: Vault, manifest: Manifest) -> set[str]:
    index = vault.read_index(manifest, manifest.disks[0])
    return {d.hex() for d in index.digests if d != ZERO_DIGEST}

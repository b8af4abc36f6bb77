"""The Backup job's use-case on the real local provider and a real vault, with a memory catalog."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backup_jobs import errors, jobs
from backup_jobs.backups import backup_failed, open_vault, run_backup
from backup_jobs.context import JobContext
from backup_jobs.items import ProtectedItem, ProtectionState
from backup_jobs.models import JobStatus, Operation, VaultConfig
from backup_jobs.providers.local import LocalFleet, LocalProvider
from backup_jobs.providers.local_disks import WRITE_RUN
from backup_jobs.providers.local_faults import Fault
from backup_jobs.settings import Settings, Timeouts
from backup_jobs.testing import FrozenClock, MemoryCatalog
from backup_jobs.vault import Vault
from tests.harness import mount_tmpfs

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
DISK = 4 * WRITE_RUN  # 16 MiB of random data per VM: every chunk differs


@pytest.fixture
def fleet(tmp_path: Path) -> LocalFleet:
    fleet = LocalFleet(tmp_path / "fleet")
    fleet.root.mkdir()
    fleet.create_vm("cs", "linux", "r1", os_disk_bytes=DISK)
    fleet.create_vm("cs", "win", "r1", os_type="Windows", os_disk_bytes=DISK)
    for vm in ("cs/linux", "cs/win"):
        fleet.write_disks(vm, percent=100, seed=1)
    return fleet


def _context(
    tmp_path: Path, fleet: LocalFleet, vm: str = "cs/linux", **timeouts: int
) -> JobContext:
    catalog, clock = MemoryCatalog(), FrozenClock(T0)
    catalog.put_item(ProtectedItem("v", vm, "nightly", ProtectionState.PENDING))
    job = jobs.new_job("v", Operation.BACKUP, vm, vm, 3, clock)
    catalog.create_job(job, T0)
    started = jobs.begin_attempt(catalog, job.id, 1, "t", 60, 900, clock)
    assert started is not None
    settings = Settings(vault_dir=tmp_path / "vault", timeouts=Timeouts(**timeouts))
    vault = VaultConfig("v", "r1", "local", str(fleet.root), str(tmp_path / "vault"))
    provider = LocalProvider(fleet)
    return JobContext(
        started.job, started.fence, vault, catalog, provider, settings, lambda: None, clock=clock
    )


def _snapshots(fleet: LocalFleet, vm: str) -> list[Path]:
    folder = fleet.vm_dir(vm) / "snapshots"
    return list(folder.iterdir()) if folder.exists() else []


def test_a_backup_commits_a_point_mirrors_it_and_protects_the_item(
    tmp_path: Path, fleet: LocalFleet
) -> None:
    ctx = _context(tmp_path, fleet)

    result = run_backup(ctx)

    point = Vault.open(tmp_path / "vault").manifest(result["recovery_point_id"])
    item = ctx.catalog.get_item("v", "cs/linux")
    assert point.consistency == result["consistency"] == "FileSystemConsistent"
    assert [p.id for p in ctx.catalog.recovery_points("v", "cs/linux")] == [point.id]
    assert item is not None and item.state == ProtectionState.PROTECTED
    assert item.recovery_points == 1 and item.last_backup is not None
    assert item.last_backup.recovery_point_id == point.id
    assert [(s.name, s.status) for s in ctx.subtasks] == [
        ("Take Snapshot", JobStatus.COMPLETED),
        ("Transfer data to vault", JobStatus.COMPLETED),
    ]
    assert ctx.subtasks[1].bytes_done == ctx.subtasks[1].bytes_total == DISK
    assert _snapshots(fleet, "cs/linux") == []


def test_an_incremental_after_a_small_write_reads_and_stores_only_what_changed(
    tmp_path: Path, fleet: LocalFleet
) -> None:
    run_backup(_context(tmp_path, fleet))
    fleet.write_disks("cs/linux", nbytes=WRITE_RUN, seed=7)

    result = run_backup(_context(tmp_path, fleet))

    assert result["chunks_read"] == 1 and result["chunks"] == 4
    assert WRITE_RUN <= result["bytes_new"] <= WRITE_RUN + 4096


@pytest.mark.parametrize(
    ("fault", "timeouts", "error"),
    [
        (Fault("snapshot-timeout", "cs/linux"), {"snapshot_seconds": 1}, errors.SnapshotTimeout),
        (
            Fault("transfer-timeout", "cs/linux", seconds=1.2),  # a read outlasts the deadline
            {"transfer_seconds": 1},
            errors.VaultTransferTimeout,
        ),
        (Fault("backup-internal-error", "cs/linux"), {}, errors.BackupInternalError),
    ],
    ids=["snapshot-timeout", "transfer-timeout", "internal-error"],
)
def test_each_backup_fault_is_the_seed_s_retryable_error_and_leaves_nothing(
    tmp_path: Path, fleet: LocalFleet, fault: Fault, timeouts: dict[str, int], error: type
) -> None:
    fleet.faults.add(fault)
    ctx = _context(tmp_path, fleet, **timeouts)

    with pytest.raises(error) as raised:
        run_backup(ctx)

    assert raised.value.retryable
    assert JobStatus.FAILED in [s.status for s in ctx.subtasks]
    assert _snapshots(fleet, "cs/linux") == []
    vault = tmp_path / "vault"
    assert not vault.exists() or Vault.open(vault).manifests() == []


def test_a_full_vault_disk_is_a_retryable_error_naming_the_vault_and_no_point(
    tmp_path: Path, fleet: LocalFleet
) -> None:
    if not mount_tmpfs(tmp_path / "vault", "8m"):
        pytest.skip("needs to mount a small tmpfs (root) to fill the vault's disk for real")
    try:
        ctx = _context(tmp_path, fleet)  # 16 MiB of random data into 8 MiB
        with pytest.raises(errors.VaultStorageError) as raised:
            run_backup(ctx)
        points = Vault.open(tmp_path / "vault").manifests()
    finally:
        subprocess.run(["umount", "-l", str(tmp_path / "vault")], check=False)

    assert raised.value.retryable and "No space left on device" in raised.value.message
    assert str(tmp_path / "vault") in raised.value.message
    assert "BACKUP_JOBS_VAULT_DIR" in raised.value.recommended_action
    assert points == [] and _snapshots(fleet, "cs/linux") == []


def test_a_deleted_vm_fails_with_vm_not_found_and_the_item_needs_action(
    tmp_path: Path, fleet: LocalFleet
) -> None:
    ctx = _context(tmp_path, fleet)
    fleet.delete_vm("cs/linux")

    with pytest.raises(errors.VMNotFound) as raised:
        run_backup(ctx)
    backup_failed(ctx.catalog, ctx.job, ctx.fence, raised.value)

    item = ctx.catalog.get_item("v", "cs/linux")
    assert not raised.value.retryable
    assert item is not None and item.state == ProtectionState.ERROR
    assert item.health == "ActionNeeded (VMNotFound)"
    assert "keep the data" in raised.value.recommended_action


def test_a_running_vm_without_its_agent_cannot_be_backed_up(
    tmp_path: Path, fleet: LocalFleet
) -> None:
    fleet.update("cs/linux", agent_version=None)

    with pytest.raises(errors.VMAgentNotInstalled):
        run_backup(_context(tmp_path, fleet))


def test_a_failed_freeze_is_a_warning_and_a_file_system_consistent_point(
    tmp_path: Path, fleet: LocalFleet
) -> None:
    fleet.faults.add(Fault("freeze-failure", "cs/win"))
    ctx = _context(tmp_path, fleet, vm="cs/win")

    result = run_backup(ctx)

    assert result["consistency"] == "FileSystemConsistent"
    assert len(ctx.warnings) == 1 and "freeze" in ctx.warnings[0]
    item = ctx.catalog.get_item("v", "cs/win")
    assert item is not None and item.last_backup is not None
    assert item.last_backup.status == JobStatus.COMPLETED_WITH_WARNINGS


def test_an_unprotected_vm_cannot_be_backed_up(tmp_path: Path, fleet: LocalFleet) -> None:
    ctx = _context(tmp_path, fleet)
    ctx.catalog.put_item(
        replace(ctx.catalog.get_item("v", "cs/linux"), state=ProtectionState.STOPPED)  # type: ignore[arg-type]
    )

    with pytest.raises(errors.NotProtected):
        run_backup(ctx)


# Two first backups of a new vault run at once; the other worker's create lands at each point
# where this one looks at the vault directory.


def test_a_first_backup_opens_the_vault_another_worker_created_after_its_first_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open, real_create, looked = Vault.open, Vault.create, []

    def open_then_the_other_creates(root: Path, **options: object) -> Vault:
        if looked:
            return real_open(root, **options)  # type: ignore[arg-type]
        looked.append(root)
        try:
            return real_open(root, **options)  # type: ignore[arg-type]
        finally:
            real_create(root)  # the other worker, right after this look found no config

    monkeypatch.setattr(Vault, "open", open_then_the_other_creates)

    vault = open_vault(tmp_path / "vault")

    assert vault.root == tmp_path / "vault" and Vault.exists(vault.root)


def test_a_first_backup_whose_create_loses_the_race_opens_the_winner_s_vault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_create = Vault.create

    def the_other_creates_first(root: Path, **options: object) -> Vault:
        real_create(root)  # the other worker's
        return real_create(root, **options)  # type: ignore[arg-type]  # refused: it exists

    monkeypatch.setattr(Vault, "create", the_other_creates_first)

    vault = open_vault(tmp_path / "vault")

    assert vault.root == tmp_path / "vault" and vault.manifests() == []

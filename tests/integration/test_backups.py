"""Backups on real workers and beat: the seed's Backup rows, consistency, schedules, writes.

Every test protects VMs of a demo fleet with a policy, then drives backups as a user would:
``--backup-now``, ``backup now``, or beat's dispatch tick.
"""

from __future__ import annotations

import os
import signal
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from backup_jobs import scheduling
from backup_jobs.client import Client
from backup_jobs.items import ProtectionState, RunOutcome
from backup_jobs.models import Job, JobStatus, utcnow
from backup_jobs.policies import Retention, ScheduleKind, make_policy
from backup_jobs.providers.local import LocalFleet
from backup_jobs.providers.local_disks import WRITE_RUN
from backup_jobs.providers.local_faults import Fault
from backup_jobs.vault import RestoreRequest, Vault, restore
from tests.harness import Cluster, children, eventually, protected, wait_for_status

POLICY = make_policy(
    "nightly", ScheduleKind.DAILY, times=["03:00"], retention=Retention(7), timezone="Europe/Berlin"
)


def _protected(
    cluster: Cluster, root: Path, vms: list[str], **settings: object
) -> tuple[LocalFleet, Client]:
    """A demo fleet, discovered, these VMs registered and protected (no backup yet)."""
    return protected(cluster, root, vms, POLICY, **settings)


def test_backup_now_on_protection_takes_the_initial_backup_and_the_item_becomes_protected(
    cluster: Cluster, tmp_path: Path
) -> None:
    fleet, client = _protected(cluster, tmp_path, [])
    client.register(["cs-app/app01"])[0].wait(30)

    configured = client.protect(["cs-app/app01"], "nightly", backup_now=True)[0].wait(30)
    backup = client.handle(configured.properties["initial_backup_job"]).wait(60)

    assert backup.status == JobStatus.COMPLETED and backup.attempt == 1
    [view] = client.protected_items()
    assert view.item.state == ProtectionState.PROTECTED and view.item.recovery_points == 1
    assert view.next_run_at is not None and view.next_run_at > utcnow()
    vault = Vault.open(tmp_path / "vault")
    point = backup.properties["recovery_point_id"]
    [restored] = restore(vault, RestoreRequest(point, tmp_path / "out", tmp_path))
    assert restored.read_bytes() == (fleet.vm_dir("cs-app/app01") / "os.img").read_bytes()
    assert [s.status for s in backup.subtasks] == [JobStatus.COMPLETED, JobStatus.COMPLETED]


@pytest.mark.parametrize(
    ("vm", "setup", "consistency", "warned"),
    [
        ("cs-app/app01", {"power_state": "Stopped"}, "CrashConsistent", False),
        ("cs-app/app01", {}, "FileSystemConsistent", False),
        ("cs-web/web01", {}, "ApplicationConsistent", False),
        ("cs-app/app01", {"freeze_command": "true"}, "ApplicationConsistent", False),
        ("cs-web/web01", "freeze-failure", "FileSystemConsistent", True),
    ],
    ids=["stopped", "linux", "windows", "linux-hooks", "freeze-failure"],
)
def test_each_row_of_the_consistency_table(
    cluster: Cluster,
    tmp_path: Path,
    vm: str,
    setup: dict[str, str] | str,
    consistency: str,
    warned: bool,
) -> None:
    fleet, client = _protected(cluster, tmp_path, [vm])
    fleet.add_data_disks(vm, 1)
    fleet.write_disks(vm, nbytes=3 << 20, seed=7)
    if isinstance(setup, str):
        fleet.faults.add(Fault(setup, vm))
    else:
        fleet.update(vm, **setup)

    job = client.backup_now(vm).wait(60)
    target = client.settings.restore_root / tmp_path.name  # the session's workers' root
    restored = client.restore(vm, job.properties["recovery_point_id"], target).wait(60)

    assert job.status == (JobStatus.COMPLETED_WITH_WARNINGS if warned else JobStatus.COMPLETED)
    assert job.properties["consistency"] == consistency
    assert bool(job.warnings) == warned
    # The Restore job writes every disk back byte for byte, sparse where the disk was.
    assert restored.status == JobStatus.COMPLETED, restored.error
    assert restored.properties["consistency"] == consistency
    for disk in ("os", "data1"):
        original = fleet.vm_dir(vm) / f"{disk}.img"
        copy = target / f"{disk}.img"
        assert copy.read_bytes() == original.read_bytes()
        assert copy.stat().st_blocks * 512 <= original.stat().st_blocks * 512 + (1 << 20)


@pytest.mark.parametrize(
    ("fault", "code", "action"),
    [
        (Fault("snapshot-timeout"), "SnapshotTimeout", "Check the VM agent"),
        (
            Fault("transfer-timeout", seconds=3.5),
            "VaultTransferTimeout",
            "fewer than six data disks",
        ),
        (Fault("backup-internal-error"), "BackupInternalError", "retried automatically"),
    ],
    ids=["snapshot-timeout", "transfer-timeout", "internal-error"],
)
def test_the_seed_s_retryable_backup_rows_fail_the_attempt_then_retry(
    cluster: Cluster, tmp_path: Path, fault: Fault, code: str, action: str
) -> None:
    # The session's worker has a 2 s snapshot and a 3 s transfer deadline (tests/conftest.py).
    fleet, client = _protected(cluster, tmp_path, ["cs-app/app01"])
    fleet.faults.add(Fault(fault.kind, "cs-app/app01", 1, fault.seconds))
    handle = client.backup_now("cs-app/app01")
    waiting = wait_for_status(handle, JobStatus.WAITING_TO_RETRY, 60)
    job = handle.wait(60)

    assert waiting.error is not None and waiting.error["code"] == code
    assert action in waiting.error["recommended_action"]
    assert job.status == JobStatus.COMPLETED and job.attempt == 2


def test_a_deleted_vm_fails_with_vm_not_found_not_retried_and_the_item_needs_action(
    cluster: Cluster, tmp_path: Path
) -> None:
    fleet, client = _protected(cluster, tmp_path, ["cs-app/app01"])
    fleet.delete_vm("cs-app/app01")

    job = client.backup_now("cs-app/app01").wait(60)

    assert job.status == JobStatus.FAILED and job.attempt == 1
    assert job.error is not None and job.error["code"] == "VMNotFound"
    assert "keep the data" in job.error["recommended_action"]
    [view] = client.protected_items()
    assert view.item.state == ProtectionState.ERROR and "VMNotFound" in view.item.health


def test_a_second_backup_of_a_vm_being_backed_up_fails_with_operation_in_progress(
    cluster: Cluster, tmp_path: Path
) -> None:
    fleet, client = _protected(cluster, tmp_path, ["cs-app/app01"])
    fleet.faults.add(Fault("transfer-timeout", "cs-app/app01", seconds=0.3))
    first = client.backup_now("cs-app/app01")
    wait_for_status(first, JobStatus.IN_PROGRESS)

    second = client.backup_now("cs-app/app01").wait(30)

    assert second.status == JobStatus.FAILED
    assert second.error is not None and second.error["code"] == "OperationInProgress"
    assert first.id in second.error["message"]
    assert first.wait(60).status == JobStatus.COMPLETED


def test_a_vm_written_during_its_backup_restores_to_its_snapshot_time_disks(
    cluster: Cluster, tmp_path: Path
) -> None:
    fleet, client = _protected(cluster, tmp_path, ["cs-app/app01"])
    fleet.write_disks("cs-app/app01", percent=100, seed=1)
    image = fleet.vm_dir("cs-app/app01") / "os.img"
    before = image.read_bytes()
    fleet.faults.add(Fault("transfer-timeout", "cs-app/app01", seconds=0.2))  # a slow transfer
    handle = client.backup_now("cs-app/app01")
    eventually(lambda: _snapshot_taken(handle.job()), 30, 0.02)
    stop = threading.Event()
    writer = threading.Thread(target=_keep_writing, args=(fleet, stop))
    writer.start()
    try:
        job = handle.wait(60)
    finally:
        stop.set()
        writer.join()

    vault = Vault.open(tmp_path / "vault")
    [restored] = restore(
        vault, RestoreRequest(job.properties["recovery_point_id"], tmp_path / "out", tmp_path)
    )
    assert image.read_bytes() != before
    assert restored.read_bytes() == before


def _snapshot_taken(job: Job) -> bool:
    return bool(job.subtasks) and job.subtasks[0].status == JobStatus.COMPLETED


def _keep_writing(fleet: LocalFleet, stop: threading.Event) -> None:
    seed = 100
    while not stop.is_set():
        fleet.write_disks("cs-app/app01", nbytes=1 << 20, seed=seed)
        seed += 1


def test_beat_starts_a_due_run_exactly_once_even_with_two_beats_and_skips_a_run_while_busy(
    cluster: Cluster, tmp_path: Path
) -> None:
    _, client = _protected(cluster, tmp_path, ["cs-app/app01"])
    cluster.start("beat-2", kind="beat")  # two beats send the dispatch tick
    worker = cluster.procs["worker"]
    os.killpg(worker.pid, signal.SIGSTOP)  # the job waits in the queue: its item stays busy
    try:
        due = utcnow().replace(microsecond=0)
        client.catalog.schedule(client.vault.name, "cs-app/app01", due)
        job_id = scheduling.scheduled_job_id(client.vault.name, "cs-app/app01", due)
        queued = eventually(lambda: client.catalog.get_job(job_id), 30, 0.05)
        again = due + timedelta(seconds=1)  # a run of its own (job ids count whole seconds)
        client.catalog.schedule(client.vault.name, "cs-app/app01", again)  # due again, busy
        skipped = eventually(lambda: client.catalog.events(client.vault.name, "cs-app/app01"), 30)
    finally:
        os.killpg(worker.pid, signal.SIGCONT)
        cluster.kill("beat-2")
    done = client.handle(job_id).wait(60)

    backups = client.jobs(operation="Backup")
    assert [j.id for j in backups] == [job_id] and queued.properties["trigger"] == "schedule"
    assert done.status == JobStatus.COMPLETED
    assert skipped[0].outcome == RunOutcome.SKIPPED and job_id in skipped[0].reason
    next_run = client.catalog.next_run(client.vault.name, "cs-app/app01")
    assert next_run is not None and next_run > utcnow()  # back on the policy's schedule


def test_an_incremental_after_writing_one_percent_stores_and_reads_about_one_percent(
    cluster: Cluster, tmp_path: Path
) -> None:
    fleet, client = _protected(cluster, tmp_path, [])
    fleet.create_vm("cs-app", "big01", "local-1", os_disk_bytes=100 * WRITE_RUN)
    fleet.write_disks("cs-app/big01", percent=100, seed=3)
    client.discover().wait(30)
    client.register(["cs-app/big01"])[0].wait(30)
    client.protect(["cs-app/big01"], "nightly")[0].wait(30)
    full = client.backup_now("cs-app/big01").wait(60)
    fleet.write_disks("cs-app/big01", percent=1, seed=4)

    incremental = client.backup_now("cs-app/big01").wait(60)

    assert full.properties["chunks_read"] == 100
    assert incremental.properties["chunks_read"] == 1  # only the changed extents were read
    new, size = incremental.properties["bytes_new"], incremental.properties["backup_size_bytes"]
    assert 0.009 < new / size < 0.011


def test_a_worker_killed_mid_transfer_is_reaped_retried_and_leaves_one_point_and_no_snapshot(
    cluster: Cluster, tmp_path: Path
) -> None:
    fleet, client = _protected(cluster, tmp_path, ["cs-app/app01"])
    fleet.write_disks("cs-app/app01", percent=100, seed=1)
    fleet.faults.add(Fault("transfer-timeout", "cs-app/app01", seconds=0.25))
    handle = client.backup_now("cs-app/app01")
    eventually(lambda: _transferring(handle.job()), 30, 0.05)
    for child in children(cluster.procs["worker"].pid):  # the prefork children: one runs it
        os.kill(child, signal.SIGKILL)

    job = handle.wait(60)

    assert job.status == JobStatus.COMPLETED and job.attempt == 2, job.to_dict()["attempts"]
    assert job.attempts[0].error is not None and job.attempts[0].error["code"] == "WorkerLost"
    assert len(client.recovery_points("cs-app/app01")) == 1
    assert client.catalog.lock_holder(client.vault.name, "cs-app/app01") is None
    assert not any((fleet.vm_dir("cs-app/app01") / "snapshots").iterdir())  # none left behind
    [view] = client.protected_items()
    assert view.item.state == ProtectionState.PROTECTED


def _transferring(job: Job) -> bool:
    return len(job.subtasks) == 2 and job.subtasks[1].bytes_done > 0

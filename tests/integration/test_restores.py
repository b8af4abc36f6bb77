"""Restores on real workers: into a directory under the restore root, or as a new VM.

Each test protects a VM of a demo fleet, backs it up, then restores as a user would; the
restored bytes are compared with the VM's disks.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backup_jobs.client import Client
from backup_jobs.errors import InvalidRestoreTarget, RecoveryPointNotFound
from backup_jobs.models import JobStatus, RegistrationState
from backup_jobs.policies import Retention, ScheduleKind, make_policy
from backup_jobs.providers.local import LocalFleet
from backup_jobs.providers.local_faults import Fault
from tests.harness import Cluster, protected, run_cli, wait_for_status

VM = "cs-app/app01"
POLICY = make_policy("daily", ScheduleKind.DAILY, times=["03:00"], retention=Retention(7))


@pytest.fixture
def backed_up(cluster: Cluster, tmp_path: Path) -> tuple[LocalFleet, Client, str]:
    """app01 with data on its disk, protected and backed up once: fleet, client, point id."""
    fleet, client = protected(cluster, tmp_path, [VM], POLICY, data_bytes=2 << 20)
    backup = client.backup_now(VM).wait(60)
    assert backup.status == JobStatus.COMPLETED, backup.error
    return fleet, client, str(backup.properties["recovery_point_id"])


def test_an_existing_file_is_kept_unless_overwrite_is_asked(
    backed_up: tuple[LocalFleet, Client, str], tmp_path: Path
) -> None:
    fleet, client, point = backed_up
    target = client.settings.restore_root / tmp_path.name
    target.mkdir(parents=True)
    (target / "os.img").write_bytes(b"keep me")

    refused = client.restore(VM, point, target).wait(60)
    kept = (target / "os.img").read_bytes()
    overwritten = client.restore(VM, "latest", target, overwrite=True).wait(60)

    assert refused.status == JobStatus.FAILED and refused.attempt == 1
    assert refused.error is not None and refused.error["code"] == "InvalidRestoreTarget"
    assert "exists" in refused.error["message"] and kept == b"keep me"
    assert overwritten.status == JobStatus.COMPLETED, overwritten.error
    assert (target / "os.img").read_bytes() == (fleet.vm_dir(VM) / "os.img").read_bytes()
    assert not list(target.glob("*.partial"))


def test_a_target_outside_the_worker_s_restore_root_is_refused_writing_nothing(
    backed_up: tuple[LocalFleet, Client, str], tmp_path: Path
) -> None:
    _, client, point = backed_up
    root = client.settings.restore_root
    root.mkdir(parents=True, exist_ok=True)
    escape = root / f"escape-{tmp_path.name}"
    os.symlink(tmp_path, escape)

    for text in ("a/../b", root / ".." / "out", " ", "x\0y"):  # refused before any job
        with pytest.raises(InvalidRestoreTarget):
            client.restore(VM, point, text)
    with pytest.raises(RecoveryPointNotFound, match="no such point"):
        client.restore(VM, "20990101T000000Z-000000", root / "x")
    # The root is the worker's: a path outside it (or leading out) fails the job at once.
    jobs = [client.restore(VM, point, where).wait(60) for where in (tmp_path, escape / "out")]

    for job in jobs:
        assert job.status == JobStatus.FAILED and job.attempt == 1
        assert job.error is not None and job.error["code"] == "InvalidRestoreTarget"
        assert "outside the allowed restore root" in job.error["message"]
    assert not list(tmp_path.glob("*.img*")) and not (tmp_path / "out").exists()


def test_a_backup_and_a_restore_of_one_vm_never_run_at_once(
    backed_up: tuple[LocalFleet, Client, str],
) -> None:
    fleet, client, point = backed_up
    fleet.write_disks(VM, nbytes=4096, seed=5)  # a chunk to read, and the read is slow
    fleet.faults.add(Fault("transfer-timeout", VM, 1, seconds=1.5))  # (not past the deadline)
    backup = client.backup_now(VM)
    wait_for_status(backup, JobStatus.IN_PROGRESS)

    restore = client.restore(VM, point, as_new_vm="app01-busy").wait(60)

    assert restore.status == JobStatus.FAILED
    assert restore.error is not None and restore.error["code"] == "OperationInProgress"
    assert backup.id in restore.error["message"]
    assert backup.wait(60).status == JobStatus.COMPLETED
    assert not (fleet.root / "cs-app" / "app01-busy").exists()


def test_restore_as_a_new_vm_creates_a_vm_that_discovers_and_registers_like_any_other(
    backed_up: tuple[LocalFleet, Client, str],
) -> None:
    fleet, client, point = backed_up
    fleet.write_disks(VM, nbytes=1 << 20, seed=4)  # after the point: not in the copy

    job = client.restore(VM, point, as_new_vm="app01-copy").wait(60)
    discovered = client.discover().wait(30)
    registered = client.register(["cs-app/app01-copy"])[0].wait(30)

    assert job.status == JobStatus.COMPLETED, job.error
    assert job.properties["new_vm"] == "cs-app/app01-copy"
    assert [s.name for s in job.subtasks] == ["Transfer data from vault", "Create VM"]
    assert discovered.status == JobStatus.COMPLETED
    assert registered.status == JobStatus.COMPLETED, registered.error
    [copy] = [vm for vm in client.vms() if vm.id == "cs-app/app01-copy"]
    assert copy.registration == RegistrationState.REGISTERED
    assert fleet.read("cs-app/app01-copy")["restored_from"]["recovery_point_id"] == point
    restored = client.recovery_point(VM, point)
    assert (fleet.vm_dir("cs-app/app01-copy") / "os.img").stat().st_size == restored.size_bytes
    assert not (fleet.root / ".restores" / job.id).exists()
    namesake = client.restore(VM, point, as_new_vm="web01").wait(60)  # cs-web/web01 exists
    assert namesake.status == JobStatus.COMPLETED_WITH_WARNINGS
    assert "the bare name web01 is ambiguous" in namesake.warnings[0]


def test_the_cli_restores_and_shows_points_and_refuses_garbage_without_a_traceback(
    backed_up: tuple[LocalFleet, Client, str], cluster: Cluster, tmp_path: Path
) -> None:
    _, client, point = backed_up
    env = {**cluster.child_env(), "BACKUP_JOBS_VAULT": client.vault.name}
    env.update(
        BACKUP_JOBS_FLEET_DIR=str(tmp_path / "fleet"), BACKUP_JOBS_VAULT_DIR=str(tmp_path / "vault")
    )
    target = f"cli-{tmp_path.name}"

    shown = run_cli("recovery-point", "show", "app01", "latest", env=env)
    restored = run_cli("restore", "app01", "--point", point, "--target", target, "--wait", env=env)
    garbage = [
        run_cli("restore", "app01", "--point", point, env=env),
        run_cli("restore", "app01", "--point", point, "--target", "/", "--wait", env=env),
        run_cli("restore", "app01", "--point", "nope", "--target", "x", env=env),
        run_cli("restore", "nosuchvm", "--point", point, "--target", "x", env=env),
        run_cli("restore", "app01", "--point", point, "--as-new-vm", "../x", env=env),
        run_cli("recovery-point", "show", "app01", "nope", env=env),
    ]

    assert shown.returncode == 0 and point in shown.stdout and "restore with" in shown.stdout
    assert restored.returncode == 0, restored.stderr
    assert (cluster.settings().restore_root / target / "os.img").exists()
    assert [r.returncode for r in garbage] == [2, 8, 3, 3, 8, 3]
    for result in garbage:
        assert "Traceback" not in result.stderr and result.stderr.strip()

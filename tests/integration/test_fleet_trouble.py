"""State after failures on the fleet's side: a frozen worker, a full or read-only fleet disk.

A side effect on the provider happens only while the lease is held: a worker child frozen past
its lease and resumed after another attempt completed must not install again. A full fleet
disk is a retryable error naming the path; a read-only fleet can still be discovered.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from backup_jobs.models import JobStatus, RegistrationState
from backup_jobs.providers.local_demo import create_demo_fleet
from backup_jobs.providers.local_faults import Fault
from tests.harness import (
    REGION,
    Cluster,
    children,
    eventually,
    mount_tmpfs,
    own_cluster,
    run_cli,
    wait_for_status,
    with_db,
)


@pytest.fixture
def frozen(redis_base_url: str, tmp_path: Path) -> Iterator[Cluster]:
    with own_cluster(
        with_db(redis_base_url, 4), tmp_path, BACKUP_JOBS_WORKER_CONCURRENCY="1"
    ) as cluster:
        yield cluster


def test_a_worker_frozen_past_its_lease_does_not_install_after_the_retry_completed(
    frozen: Cluster, tmp_path: Path
) -> None:
    fleet = create_demo_fleet(tmp_path / "fleet", REGION)
    frozen.start("worker-a")
    frozen.start("ticks", kind="ticks")
    frozen.start("beat", kind="beat")
    frozen.wait_ready("worker-a")
    client = frozen.client(tmp_path / "fleet")
    assert client.discover().wait(30).status == JobStatus.COMPLETED
    fleet.faults.add(Fault("install-slow", vm="cs-app/app01", seconds=2))
    handle = client.register(["cs-app/app01"])[0]
    first = wait_for_status(handle, JobStatus.IN_PROGRESS)
    [child] = children(frozen.procs["worker-a"].pid)
    os.kill(child, signal.SIGSTOP)
    try:
        frozen.start("worker-b")
        job = handle.wait(60)
        installed = json.loads((fleet.root / "cs-app/app01/vm.json").read_text())["extension"]
    finally:
        os.kill(child, signal.SIGCONT)
    eventually(lambda: "attempt_abandoned" in frozen.log("worker-a"), 30, 0.2)
    after = json.loads((fleet.root / "cs-app/app01/vm.json").read_text())["extension"]

    assert job.status == JobStatus.COMPLETED and job.attempt == 2
    assert job.attempts[0].error is not None and job.attempts[0].error["code"] == "WorkerLost"
    assert installed["fencing_tokens"][job.vault] == job.fencing_token > first.fencing_token
    assert after == installed  # the resumed child committed nothing
    assert handle.job() == job


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, "2m"):
        pytest.skip("needs to mount a small tmpfs (root) for a full or read-only fleet")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_vm_registers_in_a_second_vault_whose_tokens_are_lower_than_the_first_s(
    cluster: Cluster, tmp_path: Path
) -> None:
    fleet = create_demo_fleet(tmp_path / "fleet", REGION)
    first, second = cluster.client(fleet.root), cluster.client(fleet.root)
    for _ in range(3):  # the first vault's counter runs ahead of the second's
        first.catalog.acquire_lock(first.vault.name, "cs-app/app01", "test", 30)
        first.catalog.release_lock(first.vault.name, "cs-app/app01", "test")
    for client in (first, second):
        assert client.discover().wait(30).status == JobStatus.COMPLETED
        [handle] = client.register(["cs-app/app01"])
        job = handle.wait(30)
        assert (job.status, job.attempt) == (JobStatus.COMPLETED, 1), job.to_dict()["attempts"]

    tokens = fleet.read("cs-app/app01")["extension"]["fencing_tokens"]
    assert tokens[first.vault.name] > tokens[second.vault.name]


def test_a_full_fleet_disk_is_a_retryable_error_naming_the_path(
    cluster: Cluster, small_disk: Path
) -> None:
    create_demo_fleet(small_disk / "fleet", REGION)
    client = cluster.client(small_disk / "fleet")
    assert client.discover().wait(30).status == JobStatus.COMPLETED
    filler = small_disk / "filler"
    with open(filler, "wb") as out, contextlib.suppress(OSError):
        out.write(b"x" * (4 << 20))
    handle = client.register(["cs-app/app01"])[0]
    waiting = wait_for_status(handle, JobStatus.WAITING_TO_RETRY)
    vm = {v.id: v for v in client.vms()}["cs-app/app01"]
    filler.unlink()
    job = handle.wait(30)

    assert waiting.error is not None and waiting.error["code"] == "FleetStorageError"
    assert "No space left on device" in waiting.error["message"]
    assert str(small_disk / "fleet" / "cs-app" / "app01") in waiting.error["message"]
    assert vm.registration == RegistrationState.NOT_REGISTERED  # actionable while it waits
    assert job.status == JobStatus.COMPLETED and job.attempt == 2


def test_fleet_verbs_on_a_full_disk_say_so_and_leave_nothing_half_written(
    small_disk: Path,
) -> None:
    fleet = create_demo_fleet(small_disk / "fleet", REGION)
    folder = fleet.vm_dir("cs-app/app01")
    before = sorted(folder.iterdir())
    with open(small_disk / "filler", "wb") as out, contextlib.suppress(OSError):
        out.write(b"x" * (4 << 20))
    env = {**os.environ, "BACKUP_JOBS_FLEET_DIR": str(fleet.root)}

    results = [
        run_cli("fleet", "add-disks", "cs-app/app01", "--size-mib", "1", env=env),
        run_cli("fleet", "stop", "cs-app/app01", env=env),
    ]

    for result in results:
        assert result.returncode == 6, result.stderr
        assert "error: FleetStorageError:" in result.stderr and "No space left" in result.stderr
        assert "then run the command again" in result.stderr and "retried" not in result.stderr
        assert "Traceback" not in result.stderr
    assert sorted(folder.iterdir()) == before
    assert fleet.read("cs-app/app01")["power_state"] == "Running"


def test_a_read_only_fleet_can_still_be_discovered(cluster: Cluster, small_disk: Path) -> None:
    fleet = create_demo_fleet(small_disk / "fleet", REGION)
    fleet.faults.add(Fault("install-slow", vm="cs-app/app01", seconds=0.1))  # a faults file
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    client = cluster.client(small_disk / "fleet")

    job = client.discover().wait(30)

    assert job.status == JobStatus.COMPLETED, job.error
    assert len(client.vms()) == len(fleet.vm_files())

"""Per-item leases under concurrency, and crash recovery by the reaper, on real workers."""

from __future__ import annotations

import signal
from pathlib import Path

from backup_jobs.models import JobStatus, RegistrationState
from backup_jobs.providers.local_faults import Fault
from tests.harness import (
    Cluster,
    demo_fleet,
    discovered,
    eventually,
    flush,
    wait_for_status,
    with_db,
)


def test_second_register_of_locked_vm_fails_with_operation_in_progress(
    cluster: Cluster, tmp_path: Path
) -> None:
    fleet, client = discovered(cluster, tmp_path)
    fleet.faults.add(Fault("install-slow", vm="cs-app/app01", times=None, seconds=2))

    first = client.register(["cs-app/app01"])[0]
    second = client.register(["cs-app/app01"])[0]
    jobs = {job.id: job for job in (first.wait(30), second.wait(30))}

    statuses = sorted(job.status for job in jobs.values())
    assert statuses == [JobStatus.COMPLETED, JobStatus.FAILED]
    [winner] = [j for j in jobs.values() if j.status == JobStatus.COMPLETED]
    [loser] = [j for j in jobs.values() if j.status == JobStatus.FAILED]
    assert loser.error is not None and loser.error["code"] == "OperationInProgress"
    assert "Another operation is in progress on this item" in loser.error["message"]
    assert f"Running job: {winner.id}" in loser.error["message"]
    assert {v.id: v for v in client.vms()}[
        "cs-app/app01"
    ].registration == RegistrationState.REGISTERED
    assert client.catalog.lock_holder(client.vault.name, "cs-app/app01") is None


def test_two_discoveries_together_one_fails_with_discovery_in_progress(
    cluster: Cluster, tmp_path: Path
) -> None:
    fleet = demo_fleet(tmp_path)
    fleet.faults.add(Fault("discovery-slow", times=1, seconds=2))
    client = cluster.client(tmp_path / "fleet")

    handles = [client.discover(), client.discover()]
    jobs = [h.wait(30) for h in handles]

    assert sorted(j.status for j in jobs) == [JobStatus.COMPLETED, JobStatus.FAILED]
    [loser] = [j for j in jobs if j.status == JobStatus.FAILED]
    assert loser.error is not None and loser.error["code"] == "DiscoveryInProgress"
    assert "Another Discovery operation is already in progress" in loser.error["message"]
    assert loser.error["retryable"] is False


def test_killed_worker_job_is_reaped_retried_on_a_new_worker_and_completes(
    redis_base_url: str, tmp_path: Path
) -> None:
    url = with_db(redis_base_url, 2)
    flush(url)
    env = {
        "BACKUP_JOBS_LEASE_TTL_SECONDS": "3",
        "BACKUP_JOBS_TICK_SECONDS": "0.5",
        "BACKUP_JOBS_RETRY_DELAY_SECONDS": "1",
        "BACKUP_JOBS_INSTALL_AGENT_TIMEOUT_SECONDS": "120",
        "BACKUP_JOBS_WORKER_CONCURRENCY": "1",
    }
    crash = Cluster(url, tmp_path, env)
    fleet = demo_fleet(tmp_path)
    try:
        crash.start("beat", kind="beat")
        crash.start("ticks", kind="ticks")
        crash.start("worker-a")
        crash.wait_ready("worker-a")
        client = crash.client(tmp_path / "fleet")
        client.discover().wait(30)
        fleet.faults.add(Fault("install-agent-timeout", vm="cs-app/app01", times=1))

        handle = client.register(["cs-app/app01"])[0]
        running = wait_for_status(handle, JobStatus.IN_PROGRESS)
        assert client.catalog.lock_holder(client.vault.name, "cs-app/app01") == handle.id
        crash.kill("worker-a", signal.SIGKILL)
        crash.start("worker-b")
        job = handle.wait(60)
    finally:
        crash.stop()

    assert running.attempt == 1
    assert job.status == JobStatus.COMPLETED
    assert job.attempt == 2
    assert [a.status for a in job.attempts] == [JobStatus.FAILED, JobStatus.COMPLETED]
    assert job.attempts[0].error is not None and job.attempts[0].error["code"] == "WorkerLost"
    assert job.fencing_token > running.fencing_token + 1  # the reaper invalidated the old token
    assert client.catalog.lock_holder(client.vault.name, "cs-app/app01") is None
    assert client.catalog.in_progress() == []
    assert {v.id: v for v in client.vms()}[
        "cs-app/app01"
    ].registration == RegistrationState.REGISTERED


def test_lease_is_free_while_a_job_waits_to_retry(cluster: Cluster, tmp_path: Path) -> None:
    fleet = demo_fleet(tmp_path)
    fleet.faults.add(Fault("discovery-internal-error", times=1))
    client = cluster.client(tmp_path / "fleet")

    handle = client.discover()
    wait_for_status(handle, JobStatus.WAITING_TO_RETRY)

    assert client.catalog.lock_holder(client.vault.name, "vault") is None
    assert eventually(lambda: handle.job().status == JobStatus.COMPLETED)


def test_a_job_running_longer_than_the_lease_ttl_keeps_its_lease_by_heartbeat(
    cluster: Cluster, tmp_path: Path
) -> None:
    fleet = demo_fleet(tmp_path)
    fleet.faults.add(Fault("discovery-slow", times=1, seconds=5))  # the session lease TTL is 3 s
    client = cluster.client(tmp_path / "fleet")

    job = client.discover().wait(60)

    assert job.status == JobStatus.COMPLETED
    assert job.attempt == 1
    assert [a.status for a in job.attempts] == [JobStatus.COMPLETED]

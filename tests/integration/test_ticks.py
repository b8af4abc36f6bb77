"""The clock ticks while every job slot is busy: the reaper and due retries are never starved.

Ticks have their own queue and consumer (DESIGN §10). Here a job worker has every slot busy with
slow installs and a long queue behind them; another worker dies mid-job. Its job must be
reaped within the lease TTL plus two ticks, and its retry dispatched within two ticks of being
due, whatever the job queues hold.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from backup_jobs import jobs
from backup_jobs.client import JobHandle
from backup_jobs.clock import SystemClock
from backup_jobs.models import Job, JobStatus, Operation, utcnow
from backup_jobs.providers.local import LocalFleet
from backup_jobs.providers.local_faults import Fault
from tests.harness import (
    REGION,
    Cluster,
    demo_fleet,
    eventually,
    own_cluster,
    wait_for_status,
    with_db,
)

LEASE_TTL_SECONDS = 4.0
TICK_SECONDS = 1.0
RETRY_DELAY_SECONDS = 2.0
BUSY_SLOTS = 2
QUEUED_BEHIND = 50
# Polling granularity of the test itself.
SLACK_SECONDS = 0.3


@pytest.fixture
def busy(redis_base_url: str, tmp_path: Path) -> Iterator[Cluster]:
    env = {
        "BACKUP_JOBS_LEASE_TTL_SECONDS": str(int(LEASE_TTL_SECONDS)),
        "BACKUP_JOBS_TICK_SECONDS": str(TICK_SECONDS),
        "BACKUP_JOBS_RETRY_DELAY_SECONDS": str(int(RETRY_DELAY_SECONDS)),
        "BACKUP_JOBS_INSTALL_AGENT_TIMEOUT_SECONDS": "300",
    }
    with own_cluster(with_db(redis_base_url, 3), tmp_path, **env) as cluster:
        yield cluster


def _fleet(root: Path, count: int) -> LocalFleet:
    fleet = LocalFleet(root)
    root.mkdir(parents=True)
    for n in range(count):
        fleet.create_vm("cs-busy", f"vm{n:03d}", REGION, os_disk_bytes=1 << 20)
    return fleet


def test_a_dead_worker_s_job_is_reaped_and_retried_on_time_while_every_slot_is_busy(
    busy: Cluster, tmp_path: Path
) -> None:
    fleet = _fleet(tmp_path / "fleet", 1 + BUSY_SLOTS + QUEUED_BEHIND)
    busy.env["BACKUP_JOBS_WORKER_CONCURRENCY"] = "1"
    busy.start("victim")
    busy.start("ticks", kind="ticks")
    busy.start("beat", kind="beat")
    busy.wait_ready("victim")
    client = busy.client(tmp_path / "fleet")
    assert client.discover().wait(30).status == JobStatus.COMPLETED
    fleet.faults.add(Fault("install-agent-timeout", vm="cs-busy/vm000"))
    victim = client.register(["cs-busy/vm000"])[0]
    wait_for_status(victim, JobStatus.IN_PROGRESS)
    fleet.faults.add(Fault("install-slow", times=None, seconds=120))
    busy.env["BACKUP_JOBS_WORKER_CONCURRENCY"] = str(BUSY_SLOTS)
    busy.start("worker")
    busy.wait_ready("worker")
    others = client.register(
        [f"cs-busy/vm{n:03d}" for n in range(1, 1 + BUSY_SLOTS + QUEUED_BEHIND)]
    )
    eventually(lambda: _running(others) == BUSY_SLOTS, 30)

    busy.kill("victim", signal.SIGKILL)
    killed_at = utcnow()
    reaped = eventually(lambda: _waiting(victim.job()), 30, 0.05)
    reaped_at = utcnow()
    queued = eventually(lambda: _requeued(victim.job()), 30, 0.05)

    assert reaped.attempts[0].error is not None
    assert reaped.attempts[0].error["code"] == "WorkerLost"
    reap_delay = (reaped_at - killed_at).total_seconds()
    assert reap_delay <= LEASE_TTL_SECONDS + 2 * TICK_SECONDS + SLACK_SECONDS, reap_delay
    assert reaped.next_retry_at is not None and queued.dispatched_at is not None
    dispatch_delay = (queued.dispatched_at - reaped.next_retry_at).total_seconds()
    assert 0 <= dispatch_delay <= 2 * TICK_SECONDS, dispatch_delay
    assert _running(others) == BUSY_SLOTS  # the slots were busy all along
    assert client.catalog.due_queued(utcnow() + timedelta(seconds=1)) == []  # sent, not lost


def _running(handles: list[JobHandle]) -> int:
    return sum(h.status() == JobStatus.IN_PROGRESS for h in handles)


def _waiting(job: Job) -> Job | None:
    return job if job.status == JobStatus.WAITING_TO_RETRY else None


def _requeued(job: Job) -> Job | None:
    return job if job.status == JobStatus.QUEUED and job.attempt == 1 else None


def test_a_queued_job_whose_message_never_went_out_is_sent_by_the_sweep_and_runs(
    cluster: Cluster, tmp_path: Path
) -> None:
    demo_fleet(tmp_path)
    client = cluster.client(tmp_path / "fleet")
    client.catalog.put_vault(client.vault)
    lost = jobs.new_job(
        client.vault.name, Operation.DISCOVERY, jobs.VAULT_ITEM, client.vault.name, 3, SystemClock()
    )
    # As if the client died (or Redis refused) between creating the job and sending it.
    client.catalog.create_job(lost, utcnow())

    job = client.handle(lost.id).wait(30)

    assert job.status == JobStatus.COMPLETED and job.attempt == 1


def test_the_history_tick_deletes_a_job_that_ended_before_the_history_and_keeps_others(
    cluster: Cluster, tmp_path: Path
) -> None:
    demo_fleet(tmp_path)
    client = cluster.client(tmp_path / "fleet")
    catalog, now = client.catalog, utcnow()

    def ended(days_ago: int) -> Job:
        job = jobs.new_job(client.vault.name, Operation.DISCOVERY, jobs.VAULT_ITEM, "v", 3, clock)
        done = job.evolve(
            status=JobStatus.COMPLETED,
            queued_at=now - timedelta(days=days_ago, hours=1),
            ended_at=now - timedelta(days=days_ago),
        )
        assert catalog.create_job(done, now + timedelta(days=1)) and catalog.save_job(done)
        return done

    clock = SystemClock()
    old, kept = ended(91), ended(89)  # the session's history: the default 90 days

    eventually(lambda: catalog.get_job(old.id) is None, 15, 0.2)

    assert catalog.get_job(kept.id) is not None
    assert [j.id for j in client.jobs(since=now - timedelta(days=100))] == [kept.id]

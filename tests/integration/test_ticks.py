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

from backup_jobs.client import JobHandle
from backup_jobs.models import Job, JobStatus, utcnow
from backup_jobs.providers.local import LocalFleet
from backup_jobs.providers.local_faults import Fault
from tests.harness import REGION, Cluster, eventually, flush, wait_for_status, with_db

LEASE_TTL_SECONDS = 4.0
TICK_SECONDS = 1.0
RETRY_DELAY_SECONDS = 2.0
BUSY_SLOTS = 2
QUEUED_BEHIND = 50
# Polling granularity of the test itself.
SLACK_SECONDS = 0.3


@pytest.fixture
def busy(redis_base_url: str, tmp_path: Path) -> Iterator[Cluster]:
    url = with_db(redis_base_url, 3)
    flush(url)
    env = {
        "BACKUP_JOBS_LEASE_TTL_SECONDS": str(int(LEASE_TTL_SECONDS)),
        "BACKUP_JOBS_TICK_SECONDS": str(TICK_SECONDS),
        "BACKUP_JOBS_RETRY_DELAY_SECONDS": str(int(RETRY_DELAY_SECONDS)),
        "BACKUP_JOBS_INSTALL_AGENT_TIMEOUT_SECONDS": "300",
    }
    cluster = Cluster(url, tmp_path, env)
    try:
        yield cluster
    finally:
        for name in list(cluster.procs):
            cluster.kill(name, signal.SIGKILL)


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

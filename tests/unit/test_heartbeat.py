"""The per-process lease heartbeat, on the in-memory catalog."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from backup_jobs import jobs
from backup_jobs.errors import LeaseLost
from backup_jobs.heartbeat import Heartbeats
from backup_jobs.models import Operation
from backup_jobs.testing import FrozenClock, MemoryCatalog

TTL = 0.3


def _started(catalog: MemoryCatalog, item: str) -> jobs.Started:
    clock = FrozenClock(datetime(2026, 1, 1, tzinfo=UTC))
    job = jobs.new_job("v", Operation.REGISTER, item, item, 3, clock)
    catalog.create_job(job, clock.now())
    started = jobs.begin_attempt(catalog, job.id, 1, "t", TTL, 900, clock)
    assert started is not None
    return started


def test_leases_of_running_attempts_outlive_their_ttl() -> None:
    catalog = MemoryCatalog()
    first, second = _started(catalog, "cs/a"), _started(catalog, "cs/b")
    heartbeats = Heartbeats(catalog, TTL)

    with heartbeats.hold(first.job) as check_first, heartbeats.hold(second.job):
        time.sleep(4 * TTL)
        check_first()
        assert catalog.lock_holder("v", "cs/a") == first.job.id
        assert catalog.lock_holder("v", "cs/b") == second.job.id
    time.sleep(2 * TTL)

    assert catalog.lock_holder("v", "cs/a") is None


def test_a_lease_taken_over_by_another_job_is_reported_lost() -> None:
    catalog = MemoryCatalog()
    started = _started(catalog, "cs/a")
    heartbeats = Heartbeats(catalog, TTL)

    with heartbeats.hold(started.job) as check:
        catalog.release_lock("v", "cs/a", started.job.id)
        catalog.acquire_lock("v", "cs/a", "someone-else", 60)
        time.sleep(2 * TTL)
        with pytest.raises(LeaseLost):
            check()

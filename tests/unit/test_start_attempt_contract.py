"""``Catalog.start_attempt``, on every catalog: a job's usual start (lease taken, job saved with
its new fencing token) in one atomic step, or nothing at all."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backup_jobs import wire
from backup_jobs.catalog import Catalog, Fence
from backup_jobs.catalogs.redis import RedisCatalog
from backup_jobs.models import Attempt, Job, JobStatus, Operation

T0 = datetime(2026, 3, 1, tzinfo=UTC)
ITEM = "cs/vm"


def _queued(catalog: Catalog) -> Job:
    job = Job("j1", "v", Operation.REGISTER, ITEM, ITEM, T0, 3)
    assert catalog.create_job(job, T0 + timedelta(seconds=30))
    return job


def _started(job: Job) -> Job:
    return job.evolve(
        status=JobStatus.IN_PROGRESS,
        attempt=1,
        started_at=T0,
        fencing_token=None,
        attempts=(Attempt(1, T0, "j1.1"),),
    )


def test_start_attempt_takes_the_free_lease_and_saves_the_job_with_its_new_token(
    catalog: Catalog,
) -> None:
    job = _queued(catalog)
    catalog.acquire_lock("v", ITEM, "earlier", 60)
    catalog.release_lock("v", ITEM, "earlier")

    lock = catalog.start_attempt(_started(job), 60, expect=JobStatus.QUEUED)

    stored = catalog.get_job(job.id)
    assert lock.acquired and lock.token == 2 and lock.holder == job.id
    assert stored is not None and stored.status == JobStatus.IN_PROGRESS
    assert stored.fencing_token == 2 and stored == _started(job).evolve(fencing_token=2)
    assert catalog.lock_holder("v", ITEM) == job.id
    assert catalog.fence_is_current(Fence("v", ITEM, 2), job.id)
    assert list(catalog.in_progress()) == [job.id] and catalog.due_queued(T0 + timedelta(1)) == []


def test_start_attempt_on_a_held_lease_names_the_holder_and_changes_nothing(
    catalog: Catalog,
) -> None:
    job = _queued(catalog)
    held = catalog.acquire_lock("v", ITEM, "other", 60)

    lock = catalog.start_attempt(_started(job), 60, expect=JobStatus.QUEUED)

    assert not lock.acquired and lock.holder == "other"
    assert catalog.get_job(job.id) == job
    assert catalog.fence_is_current(Fence("v", ITEM, held.token), "other")


def test_start_attempt_of_a_job_whose_status_changed_takes_nothing(catalog: Catalog) -> None:
    job = _queued(catalog)
    cancelled = job.evolve(status=JobStatus.CANCELLED, ended_at=T0)
    assert catalog.save_job(cancelled)

    lock = catalog.start_attempt(_started(job), 60, expect=JobStatus.QUEUED)

    assert not lock.acquired and lock.holder == job.id
    assert catalog.get_job(job.id) == cancelled and catalog.lock_holder("v", ITEM) is None
    assert catalog.start_attempt(_started(job), 60, expect=JobStatus.QUEUED) == lock
    assert list(catalog.in_progress()) == []


@pytest.mark.parametrize("bad", ["lease", "counter"])
def test_start_attempt_replaces_a_lease_or_counter_that_is_not_a_string(
    scratch_url: str, bad: str
) -> None:
    catalog = RedisCatalog.from_url(scratch_url)
    job = _queued(catalog)
    key = wire.lock_key("v", ITEM) if bad == "lease" else wire.fence_key("v", ITEM)
    catalog.client.hset(key, "x", "y")

    lock = catalog.start_attempt(_started(job), 60, expect=JobStatus.QUEUED)

    stored = catalog.get_job(job.id)
    assert lock.acquired and catalog.lock_holder("v", ITEM) == job.id
    assert stored is not None and stored.fencing_token == lock.token
    assert catalog.fence_is_current(Fence("v", ITEM, lock.token), job.id)

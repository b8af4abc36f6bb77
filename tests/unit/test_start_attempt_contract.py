"""``Catalog.start_attempt``, on every catalog: a job's usual start (lease taken, job saved with
its new fencing token) in one atomic step, or nothing at all."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from backup_jobs import wire
from backup_jobs.catalog import Catalog, Fence
from backup_jobs.catalogs.redis import RedisCatalog
from backup_jobs.errors import CorruptRecord
from backup_jobs.models import VM, Attempt, Job, JobStatus, Operation, RegistrationState

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


def test_start_attempt_reads_the_vm_as_get_vm_would_when_asked(catalog: Catalog) -> None:
    vm = VM("vm", "cs", "r1", agent_version="2.7.0.0")
    catalog.put_vm("v", vm)
    catalog.put_vm_state("v", replace(vm, registration=RegistrationState.REGISTERING))
    job = _queued(catalog)

    lock = catalog.start_attempt(_started(job), 60, expect=JobStatus.QUEUED, read_vm=True)

    assert lock.acquired and lock.vm is not None
    assert lock.vm.get() == catalog.get_vm("v", ITEM)
    assert lock.vm.get().registration == RegistrationState.REGISTERING  # type: ignore[union-attr]


def test_start_attempt_reads_no_vm_unless_asked_and_none_for_a_vm_it_does_not_know(
    catalog: Catalog,
) -> None:
    first, second = _queued(catalog), Job("j2", "v", Operation.REGISTER, "cs/other", "x", T0, 3)
    assert catalog.create_job(second, T0)

    unasked = catalog.start_attempt(_started(first), 60, expect=JobStatus.QUEUED)
    unknown = catalog.start_attempt(_started(second), 60, expect=JobStatus.QUEUED, read_vm=True)

    assert unasked.acquired and unasked.vm is None
    assert unknown.acquired and unknown.vm is not None and unknown.vm.get() is None


def test_a_vm_record_a_start_cannot_read_raises_corrupt_record_when_used(
    catalog: Catalog,
) -> None:
    catalog.put_vm("v", VM("vm", "cs", "r1"))
    key = wire.vm_state_key("v", ITEM)
    if isinstance(catalog, RedisCatalog):
        catalog.client.set(key, "not json")
    else:
        catalog.records[key] = "not json"  # type: ignore[attr-defined]
    job = _queued(catalog)

    lock = catalog.start_attempt(_started(job), 60, expect=JobStatus.QUEUED, read_vm=True)

    assert lock.acquired and lock.vm is not None
    with pytest.raises(CorruptRecord) as raised:
        lock.vm.get()
    assert raised.value.item == key


def test_a_vm_record_of_the_wrong_redis_type_read_by_a_start_is_named(scratch_url: str) -> None:
    catalog = RedisCatalog.from_url(scratch_url)
    catalog.put_vm("v", VM("vm", "cs", "r1"))
    catalog.client.hset(wire.vm_state_key("v", ITEM), "registration", "Registered")
    job = _queued(catalog)

    lock = catalog.start_attempt(_started(job), 60, expect=JobStatus.QUEUED, read_vm=True)

    assert lock.acquired and lock.vm is not None and lock.vm.problem is not None
    assert lock.vm.problem.key == wire.vm_state_key("v", ITEM)
    assert "hash" in lock.vm.problem.reason

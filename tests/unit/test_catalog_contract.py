"""One contract suite for every catalog implementation: memory and Redis (a real server)."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from backup_jobs import wire
from backup_jobs.catalog import Catalog, Fence
from backup_jobs.catalogs.memory import MemoryCatalog
from backup_jobs.catalogs.redis import RedisCatalog
from backup_jobs.errors import CorruptRecord, LeaseLost
from backup_jobs.joblist import JobQuery
from backup_jobs.models import (
    VM,
    Job,
    JobStatus,
    Operation,
    PowerState,
    Problem,
    RegistrationState,
    VaultConfig,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _job(job_id: str, minutes: int = 0) -> Job:
    return Job(job_id, "v", Operation.DISCOVERY, "vault", "v", T0 + timedelta(minutes=minutes), 3)


def _create(catalog: Catalog, job: Job) -> bool:
    return catalog.create_job(job, job.queued_at + timedelta(seconds=30))


def test_vault_and_vm_records_round_trip(catalog: Catalog) -> None:
    vault = VaultConfig("v", "r1", "local", "/f")
    vm = VM("web01", "cs1", "r1", last_error={"code": "X"}, last_job_id="j")
    catalog.put_vault(vault)
    catalog.put_vm("v", vm)
    catalog.put_vm_state("v", vm)
    catalog.put_vm("v", VM("app01", "cs1", "r1"))

    assert catalog.get_vault("v") == vault
    assert catalog.get_vm("v", "cs1/web01") == vm
    assert [v.id for v in catalog.list_vms("v")] == ["cs1/app01", "cs1/web01"]
    assert catalog.list_vms("other") == [] and catalog.get_vm("v", "nope") is None


def test_jobs_are_created_once_and_listed_newest_first_since_a_time(catalog: Catalog) -> None:
    assert _create(catalog, _job("a", 0))
    assert _create(catalog, _job("b", 10))
    assert not _create(catalog, _job("a", 99))

    assert [j.id for j in catalog.list_jobs("v")] == ["b", "a"]
    assert [j.id for j in catalog.list_jobs("v", JobQuery(since=T0 + timedelta(minutes=5)))] == [
        "b"
    ]
    assert catalog.get_job("a") == _job("a", 0)


def test_lease_is_exclusive_renewable_and_released_only_by_its_holder(catalog: Catalog) -> None:
    first = catalog.acquire_lock("v", "vm", "job-1", 30)
    second = catalog.acquire_lock("v", "vm", "job-2", 30)

    assert first.acquired and first.token >= 1
    assert not second.acquired and second.holder == "job-1"
    assert catalog.renew_lock("v", "vm", "job-1", 30)
    assert not catalog.renew_lock("v", "vm", "job-2", 30)
    catalog.release_lock("v", "vm", "job-2")
    assert catalog.lock_holder("v", "vm") == "job-1"
    catalog.release_lock("v", "vm", "job-1")
    assert catalog.lock_holder("v", "vm") is None
    third = catalog.acquire_lock("v", "vm", "job-3", 30)
    assert third.acquired and third.token == first.token + 1


def test_lease_expires_after_its_ttl(catalog: Catalog) -> None:
    catalog.acquire_lock("v", "vm", "job-1", 0.05)
    time.sleep(0.1)

    assert catalog.lock_holder("v", "vm") is None
    assert catalog.acquire_lock("v", "vm", "job-2", 30).acquired


def test_fenced_writes_are_refused_once_the_token_is_stale(catalog: Catalog) -> None:
    lock = catalog.acquire_lock("v", "cs1/web01", "job-1", 30)
    fence = Fence("v", "cs1/web01", lock.token)
    catalog.put_vm("v", VM("web01", "cs1", "r1"))
    catalog.put_vm_state("v", VM("web01", "cs1", "r1", last_job_id="job-1"), fence)
    _create(catalog, _job("job-1"))
    catalog.save_job(_job("job-1").evolve(status=JobStatus.IN_PROGRESS), fence)

    catalog.invalidate_fence("v", "cs1/web01")

    with pytest.raises(LeaseLost):
        catalog.put_vm_state("v", VM("web01", "cs1", "r1", last_job_id="stale"), fence)
    with pytest.raises(LeaseLost):
        catalog.save_job(_job("job-1", 5).evolve(status=JobStatus.FAILED), fence)
    assert catalog.get_vm("v", "cs1/web01").last_job_id == "job-1"  # type: ignore[union-attr]


def test_discovery_and_job_writes_to_one_vm_never_overwrite_each_other(catalog: Catalog) -> None:
    seen = VM("web01", "cs1", "r1", power_state=PowerState.RUNNING)
    catalog.put_vm("v", seen)  # discovery read the fleet ...
    catalog.put_vm_state("v", replace(seen, registration=RegistrationState.REGISTERED))  # a job
    catalog.put_vm("v", replace(seen, power_state=PowerState.STOPPED))  # ... discovery writes

    vm = catalog.get_vm("v", "cs1/web01")

    assert vm is not None
    assert vm.registration == RegistrationState.REGISTERED
    assert vm.power_state == PowerState.STOPPED


def test_a_vm_no_job_has_touched_is_not_registered(catalog: Catalog) -> None:
    catalog.put_vm("v", VM("web01", "cs1", "r1", registration=RegistrationState.REGISTERED))

    assert catalog.get_vm("v", "cs1/web01").registration == RegistrationState.NOT_REGISTERED  # type: ignore[union-attr]


def test_retry_set_follows_every_job_save_and_returns_due_jobs_oldest_first(
    catalog: Catalog,
) -> None:
    for job_id, seconds in (("late", 20), ("early", 10), ("future", 3600)):
        _create(catalog, _job(job_id))
        retry_at = T0 + timedelta(seconds=seconds)
        catalog.save_job(
            _job(job_id).evolve(status=JobStatus.WAITING_TO_RETRY, next_retry_at=retry_at)
        )

    assert catalog.due_retries(T0 + timedelta(seconds=30)) == ["early", "late"]
    catalog.save_job(_job("early").evolve(status=JobStatus.IN_PROGRESS))
    assert catalog.due_retries(T0 + timedelta(seconds=30)) == ["late"]
    catalog.drop_from_index(wire.RETRY_SET_KEY, "late")
    assert catalog.due_retries(T0 + timedelta(hours=2)) == ["future"]


def test_queued_set_holds_queued_jobs_until_they_leave_queued(catalog: Catalog) -> None:
    _create(catalog, _job("a"))
    _create(catalog, _job("b"))
    catalog.mark_sent({"b": T0 + timedelta(hours=1)})
    catalog.save_job(_job("c").evolve(status=JobStatus.QUEUED), check_at=T0)

    assert catalog.due_queued(T0 + timedelta(minutes=1)) == ["c", "a"]
    catalog.save_job(_job("a").evolve(status=JobStatus.IN_PROGRESS))
    catalog.mark_sent({"a": T0, "c": T0 + timedelta(hours=3)})  # only jobs still queued
    assert catalog.due_queued(T0 + timedelta(hours=2)) == ["b"]
    assert catalog.due_queued(T0 + timedelta(hours=3)) == ["b", "c"]
    with pytest.raises(ValueError, match="check_at"):
        catalog.save_job(_job("d").evolve(status=JobStatus.QUEUED))


def test_save_with_an_expected_status_writes_only_if_the_stored_job_has_it(
    catalog: Catalog,
) -> None:
    _create(catalog, _job("a"))

    assert not catalog.save_job(
        _job("a").evolve(status=JobStatus.FAILED), expect=JobStatus.WAITING_TO_RETRY
    )
    assert catalog.get_job("a").status == JobStatus.QUEUED  # type: ignore[union-attr]
    assert catalog.save_job(_job("a").evolve(status=JobStatus.FAILED), expect=JobStatus.QUEUED)
    assert catalog.get_job("a").status == JobStatus.FAILED  # type: ignore[union-attr]
    assert not catalog.save_job(_job("gone"), expect=JobStatus.QUEUED, check_at=T0)


def test_a_vm_state_saved_with_a_job_is_written_only_with_it_and_under_its_fence(
    catalog: Catalog,
) -> None:
    vm = VM("web01", "cs1", "r1")
    catalog.put_vm("v", vm)
    lock = catalog.acquire_lock("v", vm.id, "a", 30)
    fence = Fence("v", vm.id, lock.token)
    _create(catalog, _job("a"))
    registered = replace(vm, registration=RegistrationState.REGISTERED, last_job_id="a")
    running = _job("a").evolve(status=JobStatus.IN_PROGRESS)
    done = _job("a").evolve(status=JobStatus.COMPLETED, ended_at=T0)

    refused = catalog.save_job(done, fence, expect=JobStatus.IN_PROGRESS, vm_state=registered)
    catalog.save_job(running, fence)
    catalog.invalidate_fence("v", vm.id)
    with pytest.raises(LeaseLost):
        catalog.save_job(done, fence, vm_state=registered)
    untouched = catalog.get_vm("v", vm.id)
    fresh = Fence("v", vm.id, catalog.invalidate_fence("v", vm.id))
    written = catalog.save_job(done, fresh, vm_state=registered)

    assert not refused
    assert untouched is not None and untouched.registration == RegistrationState.NOT_REGISTERED
    assert written and catalog.get_vm("v", vm.id) == registered
    assert catalog.get_job("a").status == JobStatus.COMPLETED  # type: ignore[union-attr]


def test_a_stale_holder_s_lease_is_taken_over_with_a_new_token(catalog: Catalog) -> None:
    first = catalog.acquire_lock("v", "vm", "dead-job", 30)

    refused = catalog.acquire_lock("v", "vm", "job-2", 30, stale_holder="someone-else")
    taken = catalog.acquire_lock("v", "vm", "job-2", 30, stale_holder="dead-job")

    assert not refused.acquired and refused.holder == "dead-job"
    assert taken.acquired and taken.token > first.token
    assert catalog.lock_holder("v", "vm") == "job-2"


def test_fence_is_current_only_for_the_holder_with_the_latest_token(catalog: Catalog) -> None:
    lock = catalog.acquire_lock("v", "vm", "job-1", 30)
    fence = Fence("v", "vm", lock.token)

    assert catalog.fence_is_current(fence, "job-1")
    assert not catalog.fence_is_current(fence, "job-2")
    assert catalog.invalidate_fence("v", "vm") == lock.token + 1
    assert not catalog.fence_is_current(fence, "job-1")


def test_problems_are_kept_one_per_key_and_cleared(catalog: Catalog) -> None:
    catalog.record_problem(Problem("bj:job:x", "not JSON", "reap", T0))
    catalog.record_problem(Problem("bj:job:x", "still not JSON", "reap", T0))
    catalog.record_problem(Problem("bj:job:a", "field 'id' is missing", "sweep", T0))

    assert [(p.key, p.reason) for p in catalog.problems()] == [
        ("bj:job:a", "field 'id' is missing"),
        ("bj:job:x", "still not JSON"),
    ]
    assert catalog.clear_problems() == 2 and catalog.problems() == []


def test_ticks_are_recorded_by_name(catalog: Catalog) -> None:
    catalog.record_tick("reap", T0)
    catalog.record_tick("reap", T0 + timedelta(seconds=1))

    assert catalog.last_ticks() == {"reap": T0 + timedelta(seconds=1)}


def test_in_progress_index_follows_every_job_save(catalog: Catalog) -> None:
    for job_id in ("a", "b"):
        _create(catalog, _job(job_id))
        catalog.save_job(_job(job_id).evolve(status=JobStatus.IN_PROGRESS))
    catalog.save_job(_job("b").evolve(status=JobStatus.COMPLETED))

    assert catalog.in_progress() == ["a"]


def test_saving_a_job_that_no_longer_runs_frees_its_lease_and_only_its_own(
    catalog: Catalog,
) -> None:
    _create(catalog, _job("a"))
    catalog.acquire_lock("v", "vault", "a", 30)
    catalog.save_job(_job("a").evolve(status=JobStatus.IN_PROGRESS))
    assert catalog.lock_holder("v", "vault") == "a"

    catalog.save_job(_job("a").evolve(status=JobStatus.WAITING_TO_RETRY))
    assert catalog.lock_holder("v", "vault") is None

    catalog.acquire_lock("v", "vault", "b", 30)
    catalog.save_job(_job("a").evolve(status=JobStatus.FAILED))
    assert catalog.lock_holder("v", "vault") == "b"


def test_a_cancelling_job_still_runs_keeping_its_lease_and_in_progress_entry(
    catalog: Catalog,
) -> None:
    _create(catalog, _job("a"))
    catalog.acquire_lock("v", "vault", "a", 30)
    catalog.save_job(_job("a").evolve(status=JobStatus.IN_PROGRESS))

    asked = catalog.save_job(
        _job("a").evolve(status=JobStatus.CANCELLING), expect=JobStatus.IN_PROGRESS
    )
    held, listed = catalog.lock_holder("v", "vault"), list(catalog.in_progress())
    progress = _job("a").evolve(status=JobStatus.IN_PROGRESS)
    overwritten = catalog.save_job(progress, expect=JobStatus.IN_PROGRESS)
    catalog.save_job(_job("a").evolve(status=JobStatus.CANCELLED))

    assert asked and held == "a" and listed == ["a"] and not overwritten
    assert catalog.lock_holder("v", "vault") is None and catalog.in_progress() == []


def test_restoring_the_job_indexes_puts_back_what_each_job_s_status_implies(
    catalog: Catalog,
) -> None:
    statuses = {
        "q": JobStatus.QUEUED,
        "r": JobStatus.IN_PROGRESS,
        "x": JobStatus.CANCELLING,
        "w": JobStatus.WAITING_TO_RETRY,
        "c": JobStatus.COMPLETED,
    }
    for job_id, status in statuses.items():
        _create(catalog, _job(job_id))
        job = _job(job_id).evolve(status=status, next_retry_at=T0 + timedelta(minutes=5))
        catalog.save_job(job, check_at=T0)
        for index in (wire.IN_PROGRESS_KEY, wire.RETRY_SET_KEY, wire.QUEUED_KEY):
            catalog.drop_from_index(index, job_id)
    _create(catalog, _job("bad"))
    _write_raw(catalog, wire.job_key("bad"), "{not json")
    later = T0 + timedelta(hours=1)

    restored = catalog.restore_job_indexes(later)
    again = catalog.restore_job_indexes(later)

    assert sorted(restored) == ["q", "r", "w", "x"] and list(again) == []
    assert [p.key for p in restored.problems] == [wire.job_key("bad")]
    assert catalog.in_progress() == ["r", "x"]  # the reaper finds a cancelling job too
    assert catalog.due_retries(T0 + timedelta(minutes=5)) == ["w"]
    assert catalog.due_queued(later) == ["bad", "q"]  # "bad" was queued when created


def test_postponing_moves_an_entry_of_a_sorted_index_later_only_if_it_is_there(
    catalog: Catalog,
) -> None:
    _create(catalog, _job("a"))
    later = T0 + timedelta(hours=1)

    catalog.postpone(wire.QUEUED_KEY, "a", later)
    catalog.postpone(wire.RETRY_SET_KEY, "a", later)
    catalog.postpone(wire.IN_PROGRESS_KEY, "a", later)  # a set has no time: nothing to do

    assert catalog.due_queued(later - timedelta(seconds=1)) == []
    assert catalog.due_queued(later) == ["a"]
    assert catalog.due_retries(later) == [] and catalog.in_progress() == []


def _write_raw(catalog: Catalog, key: str, value: str | bytes) -> None:
    """Put garbage where a record lives, as a bad tool or a bug would."""
    if isinstance(catalog, MemoryCatalog):
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        catalog.records[key] = text
    else:
        assert isinstance(catalog, RedisCatalog)
        catalog.client.set(key, value)


GARBAGE: list[str | bytes] = ["not json", "[]", "{}", '{"id": 1}', b"\xff\xfe not UTF-8"]


@pytest.mark.parametrize("garbage", GARBAGE)
def test_an_unreadable_job_is_named_by_get_and_skipped_by_listings(
    catalog: Catalog, garbage: str | bytes
) -> None:
    _create(catalog, _job("good"))
    _create(catalog, _job("bad", 1))
    _write_raw(catalog, wire.job_key("bad"), garbage)

    with pytest.raises(CorruptRecord) as raised:
        catalog.get_job("bad")
    listing = catalog.list_jobs("v")

    assert raised.value.item == wire.job_key("bad")
    assert [j.id for j in listing] == ["good"]
    assert [p.key for p in listing.problems] == [wire.job_key("bad")]


@pytest.mark.parametrize("which", ["properties", "state"])
def test_an_unreadable_vm_record_is_named_and_skipped_and_its_state_can_be_repaired(
    catalog: Catalog, which: str
) -> None:
    for name in ("good", "bad"):
        catalog.put_vm("v", VM(name, "cs", "r1"))
        catalog.put_vm_state("v", VM(name, "cs", "r1"))
    key = wire.vm_key("v", "cs/bad") if which == "properties" else wire.vm_state_key("v", "cs/bad")
    _write_raw(catalog, key, '{"registration": "Sideways"}')

    listing = catalog.list_vms("v")
    with pytest.raises(CorruptRecord):
        catalog.get_vm("v", "cs/bad")

    assert [vm.id for vm in listing] == ["cs/good"]
    assert [p.key for p in listing.problems] == [key]
    if which == "state":
        repaired = VM("bad", "cs", "r1", registration=RegistrationState.REGISTERED)
        assert catalog.repair_vm_state("v", repaired)
        assert not catalog.repair_vm_state("v", VM("bad", "cs", "r1"))  # readable now: kept
        assert catalog.get_vm("v", "cs/bad").registration == RegistrationState.REGISTERED  # type: ignore[union-attr]


def test_an_unreadable_vault_record_is_named(catalog: Catalog) -> None:
    _write_raw(catalog, wire.vault_key("v"), "{")

    with pytest.raises(CorruptRecord) as raised:
        catalog.get_vault("v")

    assert raised.value.item == wire.vault_key("v") and "not JSON" in raised.value.message

"""One contract suite for every catalog implementation: memory and Redis (a real server)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from backup_jobs.catalog import Catalog, Fence
from backup_jobs.catalogs.memory import MemoryCatalog
from backup_jobs.catalogs.redis import RedisCatalog
from backup_jobs.errors import LeaseLost
from backup_jobs.models import (
    VM,
    Job,
    JobStatus,
    Operation,
    PowerState,
    RegistrationState,
    VaultConfig,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(params=["memory", "redis"])
def catalog(request: pytest.FixtureRequest) -> Iterator[Catalog]:
    if request.param == "memory":
        yield MemoryCatalog()
    else:
        yield RedisCatalog.from_url(request.getfixturevalue("scratch_url"))


def _job(job_id: str, minutes: int = 0) -> Job:
    return Job(job_id, "v", Operation.DISCOVERY, "vault", "v", T0 + timedelta(minutes=minutes), 3)


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
    assert catalog.create_job(_job("a", 0))
    assert catalog.create_job(_job("b", 10))
    assert not catalog.create_job(_job("a", 99))

    assert [j.id for j in catalog.list_jobs("v")] == ["b", "a"]
    assert [j.id for j in catalog.list_jobs("v", since=T0 + timedelta(minutes=5))] == ["b"]
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
    catalog.create_job(_job("job-1"))
    catalog.save_job(_job("job-1"), fence)

    catalog.invalidate_fence("v", "cs1/web01")

    with pytest.raises(LeaseLost):
        catalog.put_vm_state("v", VM("web01", "cs1", "r1", last_job_id="stale"), fence)
    with pytest.raises(LeaseLost):
        catalog.save_job(_job("job-1", 5), fence)
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


def test_retry_set_returns_due_jobs_oldest_first(catalog: Catalog) -> None:
    catalog.schedule_retry("late", T0 + timedelta(seconds=20))
    catalog.schedule_retry("early", T0 + timedelta(seconds=10))
    catalog.schedule_retry("future", T0 + timedelta(hours=1))

    assert catalog.due_retries(T0 + timedelta(seconds=30)) == ["early", "late"]
    assert catalog.remove_retry("early") and not catalog.remove_retry("early")
    assert catalog.due_retries(T0 + timedelta(seconds=30)) == ["late"]


def test_in_progress_index_follows_every_job_save(catalog: Catalog) -> None:
    for job_id in ("a", "b"):
        catalog.create_job(_job(job_id))
        catalog.save_job(_job(job_id).evolve(status=JobStatus.IN_PROGRESS))
    catalog.save_job(_job("b").evolve(status=JobStatus.COMPLETED))

    assert catalog.in_progress() == ["a"]


def test_saving_a_job_that_no_longer_runs_frees_its_lease_and_only_its_own(
    catalog: Catalog,
) -> None:
    catalog.create_job(_job("a"))
    catalog.acquire_lock("v", "vault", "a", 30)
    catalog.save_job(_job("a").evolve(status=JobStatus.IN_PROGRESS))
    assert catalog.lock_holder("v", "vault") == "a"

    catalog.save_job(_job("a").evolve(status=JobStatus.WAITING_TO_RETRY))
    assert catalog.lock_holder("v", "vault") is None

    catalog.acquire_lock("v", "vault", "b", 30)
    catalog.save_job(_job("a").evolve(status=JobStatus.FAILED))
    assert catalog.lock_holder("v", "vault") == "b"

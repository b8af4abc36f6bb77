"""The Redis catalog against keys no code of ours writes: wrong Redis types, non-UTF-8 members.

What Redis alone can hold (the memory catalog cannot): an index key that is a string, a record
key that is a hash, a set member that is not UTF-8. Each must be named in a problem, and none
may strand a job or make a VM look unregistered. A real server, database 9, no workers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from backup_jobs import ticks, wire
from backup_jobs.catalog import Catalog, Fence
from backup_jobs.catalogs.redis import RedisCatalog
from backup_jobs.client import Client
from backup_jobs.dashboard import build_dashboard, item_views
from backup_jobs.errors import BackupJobsError, CorruptRecord
from backup_jobs.items import ProtectedItem, ProtectionState, RecoveryPointRecord
from backup_jobs.joblist import JobQuery
from backup_jobs.models import VM, Job, JobStatus, Listing, Operation, RegistrationState
from backup_jobs.settings import Settings
from backup_jobs.testing import FrozenClock, RecordingDispatcher

T0 = datetime(2026, 3, 1, tzinfo=UTC)
TYPES = {wire.IN_PROGRESS_KEY: "set", wire.RETRY_SET_KEY: "zset", wire.QUEUED_KEY: "zset"}
STATUSES = {
    wire.IN_PROGRESS_KEY: JobStatus.IN_PROGRESS,
    wire.RETRY_SET_KEY: JobStatus.WAITING_TO_RETRY,
    wire.QUEUED_KEY: JobStatus.QUEUED,
}


@pytest.fixture
def catalog(scratch_url: str) -> RedisCatalog:
    return RedisCatalog.from_url(scratch_url)


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0 + timedelta(days=1))  # every job below is due


@pytest.fixture
def raw(scratch_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(scratch_url)
    yield client
    client.close()


def _job(job_id: str, status: JobStatus = JobStatus.QUEUED) -> Job:
    job = Job(job_id, "v", Operation.REGISTER, f"cs/{job_id}", f"cs/{job_id}", T0, 3)
    return job.evolve(status=status, attempt=1, next_retry_at=T0)


def _no_rollback(catalog: Catalog, job: Job, fence: Fence, error: BackupJobsError) -> None:
    pass


def _tick(index: str, catalog: Catalog, clock: FrozenClock) -> ticks.TickReport:
    """Run the tick that reads ``index``."""
    if index == wire.IN_PROGRESS_KEY:
        return ticks.reap_lost_jobs(catalog, 900, clock, _no_rollback)
    if index == wire.RETRY_SET_KEY:
        return ticks.dispatch_due_retries(catalog, RecordingDispatcher(), clock)
    return ticks.sweep_queued(catalog, RecordingDispatcher(), clock, 7 * 24 * 3600)


@pytest.mark.parametrize("index", list(TYPES))
def test_saving_a_job_replaces_an_index_key_of_the_wrong_type_and_names_it(
    catalog: RedisCatalog, raw: redis.Redis, index: str
) -> None:
    catalog.create_job(_job("a"), T0)
    raw.set(index, "garbage")

    saved = catalog.save_job(_job("a", STATUSES[index]), check_at=T0)

    assert saved
    assert raw.type(index) == TYPES[index].encode()
    assert (
        raw.zscore(index, "a") is not None if TYPES[index] == "zset" else raw.sismember(index, "a")
    )
    assert [(p.key, p.seen_by) for p in catalog.problems()] == [(index, "save job")]
    assert "string" in catalog.problems()[0].reason


@pytest.mark.parametrize("start", [False, True], ids=["save", "start"])
def test_a_job_write_that_replaces_an_index_key_asks_for_a_repair_pass_at_once(
    catalog: RedisCatalog, raw: redis.Redis, start: bool
) -> None:
    catalog.create_job(_job("a"), T0)
    catalog.record_tick(wire.INDEX_REPAIR_STARTED, T0)
    raw.set(wire.IN_PROGRESS_KEY, "garbage")  # the entries it held are for the pass to put back

    running = _job("a", JobStatus.IN_PROGRESS)
    if start:
        assert catalog.start_attempt(running, 60, expect=JobStatus.QUEUED).acquired
    else:
        assert catalog.save_job(running)

    assert wire.INDEX_REPAIR_STARTED not in catalog.last_ticks()
    assert [p.key for p in catalog.problems()] == [wire.IN_PROGRESS_KEY]


@pytest.mark.parametrize("index", [wire.QUEUED_KEY, wire.job_index_key("v")])
def test_creating_a_job_replaces_an_index_key_of_the_wrong_type(
    catalog: RedisCatalog, raw: redis.Redis, index: str
) -> None:
    raw.set(index, "garbage")

    assert catalog.create_job(_job("a"), T0)
    assert catalog.due_queued(T0) == ["a"]
    assert [j.id for j in catalog.list_jobs("v")] == ["a"]
    assert [p.key for p in catalog.problems()] == [index]


PAGE_INDEXES = [
    wire.jobs_by_status_key("v", "Failed"),
    wire.jobs_by_status_key("v", "Queued"),
    wire.jobs_by_operation_key("v", "Register"),
    wire.jobs_by_item_key("v", "cs/a"),
    wire.ENDED_KEY,
]


@pytest.mark.parametrize("index", PAGE_INDEXES)
def test_saving_a_job_replaces_a_jobs_page_index_of_the_wrong_type(
    catalog: RedisCatalog, raw: redis.Redis, index: str
) -> None:
    catalog.create_job(_job("a"), T0)
    raw.set(index, "garbage")

    failed = _job("a", JobStatus.FAILED).evolve(ended_at=T0)
    assert catalog.save_job(failed)

    assert raw.type(index) in (b"zset", b"none")
    assert [j.id for j in catalog.list_jobs("v", JobQuery(status=JobStatus.FAILED))] == ["a"]
    assert [j.id for j in catalog.list_jobs("v", JobQuery(item="cs/a"))] == ["a"]
    assert [(p.key, p.seen_by) for p in catalog.problems()] == [(index, "save job")]


@pytest.mark.parametrize("index", [PAGE_INDEXES[0], *PAGE_INDEXES[2:4]])
def test_a_jobs_page_index_made_a_string_is_replaced_by_the_listing_and_repaired(
    catalog: RedisCatalog, raw: redis.Redis, clock: FrozenClock, index: str
) -> None:
    catalog.create_job(_job("a"), T0)
    catalog.save_job(_job("a", JobStatus.FAILED).evolve(ended_at=T0))
    raw.set(index, "garbage")
    query = {
        "status": JobQuery(status=JobStatus.FAILED),
        "operation": JobQuery(operation=Operation.REGISTER),
        "item": JobQuery(item="cs/a"),
    }[index.split(":")[1].removeprefix("jobs-by-")]

    first = catalog.list_jobs("v", query)
    counted = catalog.count_jobs("v", status=JobStatus.FAILED)
    ticks.repair_job_indexes(catalog, clock)
    second = catalog.list_jobs("v", query)

    assert first == [] and [p.key for p in first.problems] == [index]
    assert counted == (0 if "status" in index else 1)
    assert [j.id for j in second] == ["a"]


@pytest.mark.parametrize("index", list(TYPES))
def test_a_tick_index_made_a_string_is_named_replaced_and_its_lost_jobs_come_back(
    catalog: RedisCatalog, raw: redis.Redis, clock: FrozenClock, index: str
) -> None:
    catalog.create_job(_job("a"), T0)
    catalog.save_job(_job("a", STATUSES[index]), check_at=T0)
    raw.set(index, "garbage")  # the job's entry is lost with the set

    first = _tick(index, catalog, clock)
    repaired = ticks.repair_job_indexes(catalog, clock)
    second = _tick(index, catalog, clock)

    assert first.jobs == [] and [p.key for p in first.problems] == [index]
    assert raw.type(index) in (b"none", TYPES[index].encode())
    assert index in [p.key for p in catalog.problems()]
    assert "(unknown key)" not in str(catalog.problems())
    assert repaired.jobs == ["a"]
    assert second.jobs == ["a"]


@pytest.mark.parametrize("index", list(TYPES))
def test_a_job_saved_while_its_index_was_a_string_is_moved_by_its_tick(
    catalog: RedisCatalog, raw: redis.Redis, clock: FrozenClock, index: str
) -> None:
    catalog.create_job(_job("a"), T0)
    raw.set(index, "garbage")
    catalog.save_job(_job("a", STATUSES[index]), check_at=T0)

    assert _tick(index, catalog, clock).jobs == ["a"]


@pytest.mark.parametrize("which", ["properties", "state"])
def test_a_vm_record_of_the_wrong_redis_type_is_a_problem_not_an_absent_record(
    catalog: RedisCatalog, raw: redis.Redis, which: str
) -> None:
    for name in ("good", "bad"):
        vm = VM(name, "cs", "r1", registration=RegistrationState.REGISTERED)
        catalog.put_vm("v", vm)
        catalog.put_vm_state("v", vm)
    key = wire.vm_key("v", "cs/bad") if which == "properties" else wire.vm_state_key("v", "cs/bad")
    raw.delete(key)
    raw.hset(key, "registration", "Registered")

    listing = catalog.list_vms("v")

    assert [vm.id for vm in listing] == ["cs/good"]
    assert [p.key for p in listing.problems] == [key]
    assert "hash" in listing.problems[0].reason
    with pytest.raises(CorruptRecord) as raised:
        catalog.get_vm("v", "cs/bad")
    assert raised.value.item == key


def test_a_vm_state_of_the_wrong_redis_type_is_repaired_by_discovery_s_rewrite(
    catalog: RedisCatalog, raw: redis.Redis
) -> None:
    catalog.put_vm("v", VM("bad", "cs", "r1"))
    raw.hset(wire.vm_state_key("v", "cs/bad"), "registration", "Registered")

    assert catalog.repair_vm_state(
        "v", VM("bad", "cs", "r1", registration=RegistrationState.REGISTERED)
    )
    assert catalog.get_vm("v", "cs/bad").registration == RegistrationState.REGISTERED  # type: ignore[union-attr]


def test_a_job_record_of_the_wrong_redis_type_is_named_by_the_job_listing(
    catalog: RedisCatalog, raw: redis.Redis
) -> None:
    catalog.create_job(_job("good"), T0)
    catalog.create_job(_job("bad"), T0)
    raw.delete(wire.job_key("bad"))
    raw.rpush(wire.job_key("bad"), "a", "list")

    listing = catalog.list_jobs("v")

    assert [j.id for j in listing] == ["good"]
    assert [p.key for p in listing.problems] == [wire.job_key("bad")]


def _listing(catalog: RedisCatalog, index: str) -> Listing[Any]:
    """What reads ``index``: a VM or job listing, or a tick's index."""
    later = T0 + timedelta(days=1)
    reads: dict[str, Callable[[], Listing[Any]]] = {
        wire.vm_index_key("v"): lambda: catalog.list_vms("v"),
        wire.job_index_key("v"): lambda: catalog.list_jobs("v"),
        wire.IN_PROGRESS_KEY: catalog.in_progress,
        wire.RETRY_SET_KEY: lambda: catalog.due_retries(later),
        wire.QUEUED_KEY: lambda: catalog.due_queued(later),
    }
    return reads[index]()


@pytest.mark.parametrize(
    "index",
    [
        wire.vm_index_key("v"),
        wire.job_index_key("v"),
        wire.IN_PROGRESS_KEY,
        wire.RETRY_SET_KEY,
        wire.QUEUED_KEY,
    ],
)
def test_an_index_member_that_is_not_utf8_is_named_and_removed(
    catalog: RedisCatalog, raw: redis.Redis, index: str
) -> None:
    catalog.put_vm("v", VM("good", "cs", "r1"))
    catalog.create_job(_job("good"), T0)
    catalog.save_job(_job("good", STATUSES.get(index, JobStatus.QUEUED)), check_at=T0)
    if index in (wire.vm_index_key("v"), wire.IN_PROGRESS_KEY):
        raw.sadd(index, b"\xff\xfe")
    else:
        raw.zadd(index, {b"\xff\xfe": 0})

    listing = _listing(catalog, index)
    again = _listing(catalog, index)

    assert len(listing) == 1
    assert [p.key for p in listing.problems] == [index]
    assert "UTF-8" in listing.problems[0].reason
    assert again.problems == []
    assert index in [p.key for p in catalog.problems()]


def _point(rp_id: str, vm_id: str = "cs/vm") -> RecoveryPointRecord:
    return RecoveryPointRecord(rp_id, vm_id, T0, "CrashConsistent", 10, 10)


def test_a_point_index_of_the_wrong_type_is_replaced_when_a_backup_mirrors_its_point(
    catalog: RedisCatalog, raw: redis.Redis
) -> None:
    index = wire.recovery_points_key("v", "cs/vm")
    raw.rpush(index, "garbage")

    catalog.add_recovery_point("v", _point("rp1"))

    assert [p.id for p in catalog.recovery_points("v", "cs/vm")] == ["rp1"]
    [problem] = catalog.problems()
    assert problem.key == index and "it was a Redis list" in problem.reason


def test_a_point_record_of_the_wrong_type_or_unreadable_is_named_not_taken_as_absent(
    catalog: RedisCatalog, raw: redis.Redis, scratch_url: str
) -> None:
    settings = Settings(vault="v", region="r")
    client = Client(settings, catalog, RecordingDispatcher())
    catalog.put_vm("v", VM("vm", "cs", "r"))
    for rp_id in ("rp1", "rp2", "rp3"):
        catalog.add_recovery_point("v", _point(rp_id))
    raw.delete(wire.recovery_point_key("v", "rp2"))
    raw.hset(wire.recovery_point_key("v", "rp2"), "a", "b")
    raw.set(wire.recovery_point_key("v", "rp3"), "not json")

    listed = client.recovery_points("cs/vm")

    assert [p.id for p in listed] == ["rp1"]
    assert {p.key for p in listed.problems} == {
        wire.recovery_point_key("v", "rp2"),
        wire.recovery_point_key("v", "rp3"),
    }
    for rp_id in ("rp2", "rp3"):
        with pytest.raises(CorruptRecord, match=rp_id):
            client.recovery_point("cs/vm", rp_id)


def test_one_item_s_unreadable_point_index_never_blocks_the_protection_listing(
    catalog: RedisCatalog, raw: redis.Redis
) -> None:
    for vm_id in ("cs/a", "cs/b"):
        catalog.put_item(ProtectedItem("v", vm_id, "p", ProtectionState.PROTECTED))
        catalog.add_recovery_point("v", _point(f"rp-{vm_id[-1]}", vm_id))
    raw.delete(wire.recovery_points_key("v", "cs/a"))
    raw.set(wire.recovery_points_key("v", "cs/a"), "garbage")

    views = item_views(catalog, "v", T0)
    board = build_dashboard(catalog, "v", None, T0)

    assert [v.item.vm_id for v in views] == ["cs/a", "cs/b"]
    assert [p.key for p in views.problems] == [wire.recovery_points_key("v", "cs/a")]
    assert board.storage.points == 1 and board.problems


def test_saving_and_creating_jobs_asks_no_index_type_while_every_index_is_fine(
    catalog: RedisCatalog, raw: redis.Redis
) -> None:
    def types_asked() -> int:
        return int(raw.info("commandstats").get("cmdstat_type", {}).get("calls", 0))

    before = types_asked()
    catalog.create_job(_job("a"), T0)
    catalog.save_job(_job("a", JobStatus.IN_PROGRESS))
    catalog.save_job(_job("a", JobStatus.FAILED).evolve(ended_at=T0))

    assert types_asked() == before
    assert catalog.problems() == []


@pytest.mark.parametrize("vault", ["v", "odd*[v]?"])
def test_discovery_replaces_a_vm_index_of_the_wrong_type_with_every_vm_record(
    catalog: RedisCatalog, raw: redis.Redis, vault: str
) -> None:
    # A CorruptRecord of the index tells the user to run discovery: discovery must mend it,
    # keeping the VMs the provider no longer lists (deleted ones the catalog keeps).
    for name in ("gone", "kept"):
        catalog.put_vm(vault, VM(name, "cs", "r1"))
    catalog.put_vm("other", VM("elsewhere", "cs", "r1"))
    raw.set(wire.vm_index_key(vault), "junk")

    catalog.put_vm(vault, VM("kept", "cs", "r1"))

    assert [vm.id for vm in catalog.list_vms(vault)] == ["cs/gone", "cs/kept"]
    [problem] = catalog.problems()
    assert problem.key == wire.vm_index_key(vault) and "rebuilt from the 2 VM records" in (
        problem.reason
    )

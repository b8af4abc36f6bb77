"""The jobs page and history retention, one contract for every catalog: memory and Redis.

Filters, time ranges, paging with a cursor while jobs arrive, ``before``, status moves between
the status indexes, counts, and the retention that deletes old final jobs with their entries.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from backup_jobs import wire
from backup_jobs.catalog import Catalog
from backup_jobs.catalogs.memory import MemoryCatalog
from backup_jobs.catalogs.redis import RedisCatalog
from backup_jobs.joblist import JobQuery, Position, decode_cursor
from backup_jobs.models import Job, JobStatus, Operation

T0 = datetime(2026, 3, 1, tzinfo=UTC)
OPERATIONS = [Operation.REGISTER, Operation.BACKUP, Operation.CONFIGURE_PROTECTION]


def _job(n: int, minutes: float | None = None, status: JobStatus = JobStatus.QUEUED) -> Job:
    """Job ``j<n>``, queued ``minutes`` (default n) after T0, of one of three VMs and operations."""
    at = T0 + timedelta(minutes=n if minutes is None else minutes)
    vm = f"cs/vm{n % 3}"
    return Job(f"j{n:03d}", "v", OPERATIONS[n % 3], vm, vm, at, 3, status=status)


def _create(catalog: Catalog, job: Job) -> None:
    assert catalog.create_job(job, job.queued_at + timedelta(seconds=30))


def _end(catalog: Catalog, job: Job, status: JobStatus, ended: datetime) -> Job:
    final = job.evolve(status=status, started_at=job.queued_at, ended_at=ended)
    assert catalog.save_job(final)
    return final


def _ids(catalog: Catalog, query: JobQuery, vault: str = "v") -> list[str]:
    return [job.id for job in catalog.list_jobs(vault, query)]


def test_a_listing_filters_by_status_operation_item_and_time_newest_first(
    catalog: Catalog,
) -> None:
    for n in range(12):
        _create(catalog, _job(n))
    for n in (3, 6, 7):
        _end(catalog, _job(n), JobStatus.FAILED, T0 + timedelta(hours=1))
    _create(catalog, Job("other", "w", Operation.REGISTER, "cs/vm0", "cs/vm0", T0, 3))

    assert _ids(catalog, JobQuery(status=JobStatus.FAILED)) == ["j007", "j006", "j003"]
    assert _ids(catalog, JobQuery(operation=Operation.REGISTER)) == [
        "j009",
        "j006",
        "j003",
        "j000",
    ]
    assert _ids(catalog, JobQuery(item="cs/vm1")) == ["j010", "j007", "j004", "j001"]
    both = JobQuery(status=JobStatus.FAILED, operation=Operation.REGISTER, item="cs/vm0")
    assert _ids(catalog, both) == ["j006", "j003"]
    ranged = JobQuery(since=T0 + timedelta(minutes=4), until=T0 + timedelta(minutes=6))
    assert _ids(catalog, ranged) == ["j006", "j005", "j004"]
    assert _ids(catalog, JobQuery(status=JobStatus.QUEUED, limit=2)) == ["j011", "j010"]
    assert _ids(catalog, JobQuery(status=JobStatus.CANCELLED)) == []
    assert _ids(catalog, JobQuery(), vault="w") == ["other"]


def test_a_status_change_moves_the_job_between_status_indexes(catalog: Catalog) -> None:
    job = _job(1)
    _create(catalog, job)
    running = job.evolve(status=JobStatus.IN_PROGRESS, started_at=job.queued_at, attempt=1)
    catalog.save_job(running)

    assert _ids(catalog, JobQuery(status=JobStatus.IN_PROGRESS)) == ["j001"]
    assert _ids(catalog, JobQuery(status=JobStatus.QUEUED)) == []
    _end(catalog, running, JobStatus.COMPLETED, T0 + timedelta(hours=1))
    assert _ids(catalog, JobQuery(status=JobStatus.COMPLETED)) == ["j001"]
    assert _ids(catalog, JobQuery(status=JobStatus.IN_PROGRESS)) == []
    assert catalog.count_jobs("v", status=JobStatus.IN_PROGRESS) == 0
    assert catalog.count_jobs("v", status=JobStatus.COMPLETED) == 1


def test_paging_with_cursors_while_jobs_arrive_shows_every_job_once(catalog: Catalog) -> None:
    # Ten jobs share one queue time (a batch): the cursor must order them by id too.
    for n in range(30):
        _create(catalog, _job(n, minutes=min(n, 10)))
    existing = [j.id for j in catalog.list_jobs("v")]
    seen: list[str] = []
    query = JobQuery(limit=7)
    arriving = 100
    while True:
        page = catalog.list_jobs("v", query)
        seen.extend(job.id for job in page)
        assert len(page) <= 7
        if page.next_cursor is None:
            break
        _create(catalog, _job(arriving, minutes=60 + arriving))  # newer than every page
        arriving += 1
        query = JobQuery(limit=7, after=decode_cursor(page.next_cursor))

    assert seen == existing and len(set(seen)) == 30
    assert arriving > 103  # jobs did arrive between pages


def test_a_cursor_goes_on_after_its_job_left_the_status_index(catalog: Catalog) -> None:
    for n in range(6):
        _create(catalog, _job(n, minutes=5))  # all tied: the fallback counts by id
    first = catalog.list_jobs("v", JobQuery(status=JobStatus.QUEUED, limit=3))
    assert [j.id for j in first] == ["j005", "j004", "j003"]
    _end(catalog, _job(3, minutes=5), JobStatus.FAILED, T0)  # the cursor's own job moves
    assert first.next_cursor is not None

    after = decode_cursor(first.next_cursor)
    rest = _ids(catalog, JobQuery(status=JobStatus.QUEUED, after=after, limit=3))

    assert rest == ["j002", "j001", "j000"]


def test_before_lists_the_jobs_queued_strictly_before_a_time(catalog: Catalog) -> None:
    for n in range(5):
        _create(catalog, _job(n))

    before = Position((T0 + timedelta(minutes=3)).timestamp(), "")

    assert _ids(catalog, JobQuery(after=before)) == ["j002", "j001", "j000"]
    assert _ids(catalog, JobQuery(after=before, since=T0 + timedelta(minutes=1))) == [
        "j002",
        "j001",
    ]


def test_count_jobs_counts_by_status_operation_and_time(catalog: Catalog) -> None:
    for n in range(9):
        _create(catalog, _job(n))
    for n in (0, 1, 3, 4):
        _end(catalog, _job(n), JobStatus.FAILED, T0 + timedelta(hours=1))
    later = T0 + timedelta(minutes=2)

    assert catalog.count_jobs("v") == 9
    assert catalog.count_jobs("v", status=JobStatus.FAILED) == 4
    assert catalog.count_jobs("v", status=JobStatus.FAILED, since=later) == 2
    assert catalog.count_jobs("v", status=JobStatus.QUEUED, until=later) == 1
    assert catalog.count_jobs("v", operation=Operation.REGISTER) == 3
    assert catalog.count_jobs("v", status=JobStatus.FAILED, operation=Operation.REGISTER) == 2
    assert catalog.count_jobs("w", status=JobStatus.FAILED) == 0


def test_expire_jobs_deletes_old_final_jobs_with_every_entry_and_never_others(
    catalog: Catalog,
) -> None:
    for n in range(8):
        _create(catalog, _job(n))
    for n in range(5):  # ended a day apart: 0..4 days after T0
        _end(catalog, _job(n), JobStatus.COMPLETED, T0 + timedelta(days=n))
    running = _job(5).evolve(status=JobStatus.IN_PROGRESS, attempt=1)
    catalog.save_job(running)
    cutoff = T0 + timedelta(days=3)

    first = catalog.expire_jobs(cutoff, limit=2)
    second = catalog.expire_jobs(cutoff, limit=2)
    third = catalog.expire_jobs(cutoff, limit=2)

    assert (list(first), list(second), list(third)) == (["j000", "j001"], ["j002"], [])
    assert catalog.get_job("j000") is None and catalog.get_job("j003") is not None
    assert _ids(catalog, JobQuery()) == ["j007", "j006", "j005", "j004", "j003"]
    assert _ids(catalog, JobQuery(status=JobStatus.COMPLETED)) == ["j004", "j003"]
    assert _ids(catalog, JobQuery(item="cs/vm0")) == ["j006", "j003"]
    assert catalog.count_jobs("v", operation=Operation.REGISTER) == 2
    assert list(catalog.expire_jobs(T0 + timedelta(days=365), limit=100)) == ["j003", "j004"]
    assert _ids(catalog, JobQuery()) == ["j007", "j006", "j005"]  # never a job not final
    assert _index_members(catalog, wire.ENDED_KEY) == []


def test_a_job_saved_final_again_is_not_expired_by_its_old_entry(catalog: Catalog) -> None:
    job = _job(1)
    _create(catalog, job)
    _end(catalog, job, JobStatus.FAILED, T0)
    # A retry made it run again (not final): its retention entry goes with the save.
    catalog.save_job(job.evolve(status=JobStatus.IN_PROGRESS, attempt=2))
    assert _index_members(catalog, wire.ENDED_KEY) == []
    _add_entry(catalog, wire.ENDED_KEY, "j001", T0.timestamp())  # a stale entry, say

    assert list(catalog.expire_jobs(T0 + timedelta(days=1), limit=10)) == []
    assert catalog.get_job("j001") is not None
    assert _index_members(catalog, wire.ENDED_KEY) == []  # the stale entry is dropped


def test_the_index_repair_puts_back_the_jobs_page_entries(catalog: Catalog) -> None:
    for n in range(4):
        _create(catalog, _job(n))
    _end(catalog, _job(1), JobStatus.FAILED, T0 + timedelta(hours=1))
    lost = [
        wire.job_index_key("v"),
        wire.jobs_by_status_key("v", "Failed"),
        wire.jobs_by_operation_key("v", "Register"),
        wire.jobs_by_item_key("v", "cs/vm1"),
        wire.ENDED_KEY,
    ]
    _delete_indexes(catalog, lost)
    assert _ids(catalog, JobQuery(status=JobStatus.FAILED)) == []

    restored = catalog.restore_job_indexes(T0)

    assert "j001" in restored
    assert _ids(catalog, JobQuery()) == ["j003", "j002", "j001", "j000"]
    assert _ids(catalog, JobQuery(status=JobStatus.FAILED)) == ["j001"]
    assert _ids(catalog, JobQuery(item="cs/vm1")) == ["j001"]
    assert _ids(catalog, JobQuery(operation=Operation.REGISTER)) == ["j003", "j000"]
    assert list(catalog.expire_jobs(T0 + timedelta(days=1), limit=10)) == ["j001"]


def _delete_indexes(catalog: Catalog, keys: list[str]) -> None:
    if isinstance(catalog, MemoryCatalog):
        for key in keys:
            catalog._pages.scores.pop(key, None)
    else:
        assert isinstance(catalog, RedisCatalog)
        catalog.client.delete(*keys)


def _add_entry(catalog: Catalog, key: str, member: str, score: float) -> None:
    if isinstance(catalog, MemoryCatalog):
        catalog._pages.scores.setdefault(key, {})[member] = score
    else:
        assert isinstance(catalog, RedisCatalog)
        catalog.client.zadd(key, {member: score})


def _index_members(catalog: Catalog, key: str) -> list[str]:
    if isinstance(catalog, MemoryCatalog):
        return sorted(catalog._pages.scores.get(key, {}))
    assert isinstance(catalog, RedisCatalog)
    return sorted(str(m) for m in catalog.client.zrange(key, 0, -1))

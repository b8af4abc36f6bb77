"""The jobs page at scale: pages and counts over 1,000,000 job records, beside bare Redis reads.

N job records are written into a real Redis (a database of the embedded server, or of
BACKUP_JOBS_REDIS_URL) as the catalog writes them: the real JSON codec, the jobs page's indexes
and the retention index from the same functions the scripts' callers use (pipelined: a script
per job would take an hour). The mix is realistic: mostly Backup jobs of 10,000 VMs, queued over
90 days, 80 % Completed, 10 % Failed, a few of every other status. Then the catalog's queries
(``RedisCatalog.list_jobs`` / ``count_jobs``) are timed several times each: newest 50 with a
status, by VM, by operation and status, the second page by cursor, and the dashboard's counts of
the last 24 h per status. Baselines in the same run: a bare ZREVRANGE of 50 ids, that plus the
MGET of their records, and the old "load every job of the vault and filter" on a sample vault of
``--sample`` jobs, extrapolated linearly to N. Memory per job: INFO used_memory before and
after, divided by N, and MEMORY USAGE of sampled records and index keys.

    python -m benchmarks.job_list [--jobs 1000000] [--sample 20000] [--runs 5] [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from backup_jobs import jobs, wire
from backup_jobs.catalogs.records import dump, listing_entries
from backup_jobs.catalogs.redis import RedisCatalog
from backup_jobs.joblist import JobQuery, decode_cursor
from backup_jobs.models import Attempt, Job, JobStatus, Operation
from benchmarks.common import JOB_LIST_DB, arguments, header, redis_database, row, workspace

VAULT = "bench"
SAMPLE_VAULT = "bench-sample"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SPAN = timedelta(days=90)
VMS = 10_000
BATCH = 2000
PAGE = 50
STATUSES = {
    JobStatus.COMPLETED: 80,
    JobStatus.FAILED: 10,
    JobStatus.COMPLETED_WITH_WARNINGS: 5,
    JobStatus.CANCELLED: 2,
    JobStatus.QUEUED: 1,
    JobStatus.IN_PROGRESS: 1,
    JobStatus.WAITING_TO_RETRY: 1,
}
OPERATIONS = {
    Operation.BACKUP: 85,
    Operation.REGISTER: 6,
    Operation.CONFIGURE_PROTECTION: 6,
    Operation.DISCOVERY: 3,
}
ERROR = {
    "code": "BackupInternalError",
    "message": "The backup failed on cs07/vm000123: the snapshot could not be read.",
    "recommended_action": "Retry the backup; if it fails again, check the VM's disks.",
    "retryable": True,
}


def make_job(n: int, total: int, vault: str, rng: random.Random) -> Job:
    """Job ``n`` of ``total`` (n = total - 1 the newest), as a worker would have left it."""
    status = rng.choices(list(STATUSES), weights=list(STATUSES.values()))[0]
    operation = rng.choices(list(OPERATIONS), weights=list(OPERATIONS.values()))[0]
    k = rng.randrange(VMS)
    vm = f"cs{k % 100:02d}/vm{k:06d}"
    item, name = (jobs.VAULT_ITEM, vault) if operation == Operation.DISCOVERY else (vm, vm)
    queued = NOW - SPAN * (total - 1 - n) / total
    job = Job(f"job-{n:08d}", vault, operation, item, name, queued, 3, status=status)
    if status in (JobStatus.QUEUED, JobStatus.WAITING_TO_RETRY):
        return job.evolve(next_retry_at=queued + timedelta(minutes=15) if n % 2 else None)
    started, ended = queued + timedelta(seconds=2), queued + timedelta(minutes=rng.randrange(60))
    failed = status == JobStatus.FAILED
    final = status.is_final
    attempt = Attempt(
        1,
        started,
        f"{n:08d}-celery-task-id-0000-000000000000",
        ended_at=ended if final else None,
        status=status if final else JobStatus.IN_PROGRESS,
        error=ERROR if failed else None,
    )
    return job.evolve(
        started_at=started,
        ended_at=ended if final else None,
        attempt=1,
        attempts=(attempt,),
        error=ERROR if failed else None,
        fencing_token=n % 50,
        properties={"vm_name": name, "recovery_point_id": f"rp-{n:08d}"} if not failed else {},
    )


def load(r: redis.Redis, vault: str, total: int) -> None:
    """Write ``total`` jobs into ``vault`` with every index entry the save script writes."""
    rng = random.Random(total)
    pipe = r.pipeline(transaction=False)
    for n in range(total):
        job = make_job(n, total, vault, rng)
        pipe.set(wire.job_key(job.id), dump(job.to_dict()))
        for key, score in listing_entries(job):
            pipe.zadd(key, {job.id: score})
        if n % BATCH == BATCH - 1:
            pipe.execute()
        if n % 100_000 == 99_999:
            print(f"  {n + 1} jobs loaded", flush=True)
    pipe.execute()


def check_loaded(catalog: RedisCatalog, vault: str, total: int) -> None:
    """The catalog reads back what was loaded, and a real save moves a loaded job as loaded."""
    newest = catalog.get_job(f"job-{total - 1:08d}")
    if newest is None or catalog.count_jobs(vault) != total:
        raise SystemExit("load: the catalog does not read the jobs back as written")
    catalog.save_job(newest)  # the real script: it must change no index
    if catalog.count_jobs(vault) != total:
        raise SystemExit("load: a real save changed the indexes the load wrote")


def old_list(r: redis.Redis, vault: str, status: JobStatus) -> list[Job]:
    """The jobs page before: every id of the vault, every record, decoded, then filtered."""
    ids = _texts(r.zrevrangebyscore(wire.job_index_key(vault), "+inf", "-inf"))
    found: list[Job] = []
    for start in range(0, len(ids), 500):
        keys = [wire.job_key(i) for i in ids[start : start + 500]]
        found.extend(Job.from_dict(json.loads(raw)) for raw in r.mget(keys) if raw)
    return [job for job in found if job.status == status][:PAGE]


def _texts(members: Any) -> list[str]:
    """Sorted-set members as text (the raw client answers bytes)."""
    return [m.decode() if isinstance(m, bytes) else str(m) for m in members]


def timed(call: Callable[[], object], repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def queries(catalog: RedisCatalog, r: redis.Redis) -> dict[str, Callable[[], object]]:
    """What is timed, by report row."""
    failed = JobQuery(status=JobStatus.FAILED, limit=PAGE)
    first = catalog.list_jobs(VAULT, failed)
    if len(first) != PAGE or first.next_cursor is None:
        raise SystemExit(f"the first page has {len(first)} jobs, wanted {PAGE} and a cursor")
    after = decode_cursor(first.next_cursor)
    vm = first[0].item
    since = NOW - timedelta(hours=24)
    status_key = wire.jobs_by_status_key(VAULT, JobStatus.FAILED.value)

    def page_ids() -> object:
        ids = _texts(r.zrevrange(status_key, 0, PAGE - 1))
        return r.mget([wire.job_key(i) for i in ids])

    return {
        "newest 50, Failed": lambda: catalog.list_jobs(VAULT, failed),
        "newest 50, Queued (1 %)": lambda: catalog.list_jobs(
            VAULT, JobQuery(status=JobStatus.QUEUED, limit=PAGE)
        ),
        "newest 50 of one VM": lambda: catalog.list_jobs(VAULT, JobQuery(item=vm, limit=PAGE)),
        "newest 50, Backup + Failed": lambda: catalog.list_jobs(
            VAULT, JobQuery(status=JobStatus.FAILED, operation=Operation.BACKUP, limit=PAGE)
        ),
        "newest 50, Register + Failed": lambda: catalog.list_jobs(
            VAULT, JobQuery(status=JobStatus.FAILED, operation=Operation.REGISTER, limit=PAGE)
        ),
        "2nd page by cursor, Failed": lambda: catalog.list_jobs(
            VAULT, JobQuery(status=JobStatus.FAILED, after=after, limit=PAGE)
        ),
        "count_jobs 24 h, 8 statuses": lambda: [
            catalog.count_jobs(VAULT, status=status, since=since) for status in JobStatus
        ],
        "bare ZREVRANGE 50": lambda: r.zrevrange(status_key, 0, PAGE - 1),
        "bare ZREVRANGE 50 + MGET": page_ids,
    }


def memory(r: redis.Redis, total: int, before: int) -> dict[str, float]:
    """Bytes per job: the whole delta, and MEMORY USAGE of sampled records and index keys."""
    used = int(r.info("memory")["used_memory"]) - before
    sample = [wire.job_key(f"job-{n:08d}") for n in range(0, total, max(1, total // 200))]
    records = statistics.mean(int(r.memory_usage(key) or 0) for key in sample)
    index_keys = [
        wire.job_index_key(VAULT),
        *(wire.jobs_by_status_key(VAULT, s.value) for s in JobStatus),
        *(wire.jobs_by_operation_key(VAULT, o.value) for o in Operation),
        wire.ENDED_KEY,
    ]
    indexes = sum(int(r.memory_usage(key, samples=0) or 0) for key in index_keys)
    for key in r.scan_iter(wire.jobs_by_item_key(VAULT, "*"), count=5000):
        indexes += int(r.memory_usage(key) or 0)
    return {"total": used / total, "record": records, "indexes": indexes / total}


def run(url: str, args: argparse.Namespace) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Load, check, then every query ``args.runs`` x ``args.repeats`` times."""
    catalog = RedisCatalog.from_url(url)
    r = redis.Redis.from_url(url)
    before = int(r.info("memory")["used_memory"])
    start = time.perf_counter()
    load(r, VAULT, args.jobs)
    print(f"loaded {args.jobs} jobs in {time.perf_counter() - start:.1f}s", flush=True)
    check_loaded(catalog, VAULT, args.jobs)
    mem = memory(r, args.jobs, before)
    load(r, SAMPLE_VAULT, args.sample)
    timings: dict[str, list[float]] = {}
    calls = queries(catalog, r)
    for n in range(args.runs):
        for label, call in calls.items():
            timings.setdefault(label, []).append(statistics.median(timed(call, args.repeats)))
        old = timed(lambda: old_list(r, SAMPLE_VAULT, JobStatus.FAILED), 1)
        timings.setdefault("old: load all + filter", []).extend(old)
        print(f"run {n + 1}/{args.runs} done", flush=True)
    return timings, mem


def report(args: argparse.Namespace, m: dict[str, list[float]], mem: dict[str, float]) -> None:
    """Medians, ranges and ratios against the bare reads and the old listing."""
    header(
        f"{args.jobs} jobs of {VMS} VMs over 90 days",
        f"{args.runs} runs x {args.repeats} repeats (median of each run)",
    )
    bare = statistics.median(m["bare ZREVRANGE 50"])
    bare_mget = statistics.median(m["bare ZREVRANGE 50 + MGET"])
    old = statistics.median(m["old: load all + filter"]) * args.jobs / args.sample
    for label, values in m.items():
        if label.startswith(("bare", "old")):
            continue
        mid = statistics.median(values)
        note = f"x{mid / bare_mget:.1f} bare+MGET; old x{old / mid:,.0f} slower"
        if label == "newest 50, Failed":
            note += " (goal < 50 ms)"
        row(label, values, "ms", note)
    row("bare ZREVRANGE 50", m["bare ZREVRANGE 50"], "ms")
    row("bare ZREVRANGE 50 + MGET", m["bare ZREVRANGE 50 + MGET"], "ms", f"x{bare_mget / bare:.1f}")
    row(
        f"old, {args.sample} jobs",
        m["old: load all + filter"],
        "s",
        f"-> {old:.1f} s extrapolated to {args.jobs}",
    )
    print(
        f"memory per job: {mem['total']:.0f} B (INFO used_memory delta / N); record "
        f"{mem['record']:.0f} B, index entries {mem['indexes']:.0f} B (MEMORY USAGE)"
    )


def main() -> None:
    parser = arguments(__doc__, runs=5)
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=20_000, help="jobs of the old listing")
    parser.add_argument("--repeats", type=int, default=20, help="calls of each query per run")
    args = parser.parse_args()
    if args.jobs < 2 * PAGE * 20 or args.sample < 1:
        parser.error(f"--jobs must be at least {2 * PAGE * 20} (two pages of Failed jobs)")
    with workspace(args.dir, "bj-joblist-bench-") as work, redis_database(work, JOB_LIST_DB) as url:
        m, mem = run(url, args)
    report(args, m, mem)


if __name__ == "__main__":
    main()

"""The dispatch tick: its time at 0 due and to start 10,000 due runs, beside bare Redis calls.

N protected items over P policies are written into a real Redis catalog (a database of the
embedded server, or of BACKUP_JOBS_REDIS_URL); D of them are due. The tick
(``scheduling.dispatch_due_backups``) runs with a frozen clock before the due time (nothing
due: timed several times) and after it (ticks until none is left: the tick takes at most
``due_runs``' limit per call), sending through Celery to the broker (nothing consumes) or only
recording. The baseline, in the same run: a bare ZRANGEBYSCORE of the schedule (0 due), and
that plus one SET per due item (D due). Medians and ranges of several runs.

    python -m benchmarks.scheduler [--items 100000] [--policies 50] [--due 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import redis
from celery import Celery

from backup_jobs import scheduling, wire
from backup_jobs.catalogs.records import dump
from backup_jobs.catalogs.redis import RedisCatalog
from backup_jobs.clock import FrozenClock
from backup_jobs.dispatcher import Dispatcher
from backup_jobs.dispatchers.celery import CeleryDispatcher, client_config
from backup_jobs.items import ProtectedItem, ProtectionState
from backup_jobs.models import Operation
from backup_jobs.policies import Retention, ScheduleKind, make_policy
from backup_jobs.settings import Settings
from backup_jobs.testing import RecordingDispatcher
from benchmarks.common import SCHEDULER_DB, arguments, header, redis_database, row, workspace

VAULT = "bench"
DUE_AT = datetime(2026, 5, 1, 22, 0, tzinfo=UTC)
BATCH = 2000
WINDOW_SECONDS = 2 * 3600
MAX_ATTEMPTS = 3

Sender = Callable[[bytes], object]


def vm_id(n: int) -> str:
    """The id of item ``n`` (100 cloud services)."""
    return f"cs{n % 100:02d}/vm{n:06d}"


def populate(catalog: RedisCatalog, items: int, policies: int, due: int) -> None:
    """P daily policies and N protected items; items 0..D-1 due at ``DUE_AT``, the rest later.

    The items are written as ``put_item`` writes them (record, item index, policy's item set,
    schedule entry), but pipelined: a round trip per item would take minutes.
    """
    for p in range(policies):
        daily = f"{p % 24:02d}:{p * 7 % 60:02d}"
        made = make_policy(f"p{p:02d}", ScheduleKind.DAILY, times=[daily], retention=Retention(7))
        catalog.put_policy(VAULT, made, replace=True)
    pipe = catalog.client.pipeline(transaction=False)
    for n in range(items):
        vm, policy = vm_id(n), f"p{n % policies:02d}"
        item = ProtectedItem(VAULT, vm, policy, ProtectionState.PROTECTED, protected_at=DUE_AT)
        at = DUE_AT if n < due else DUE_AT + timedelta(hours=1, minutes=n % 1440)
        pipe.set(wire.item_key(VAULT, vm), dump(item.to_dict()))
        pipe.sadd(wire.item_index_key(VAULT), vm)
        pipe.sadd(wire.policy_items_key(VAULT, policy), vm)
        pipe.zadd(wire.SCHEDULE_KEY, {wire.schedule_member(VAULT, vm): at.timestamp()})
        if n % BATCH == BATCH - 1:
            pipe.execute()
    pipe.execute()
    if catalog.get_item(VAULT, vm_id(0)) is None or catalog.next_run(VAULT, vm_id(0)) is None:
        raise SystemExit("populate: the catalog does not read the items back as written")


def reset(r: redis.Redis, job_ids: list[str], due: int) -> None:
    """Undo what ticks and baselines did: jobs, indexes, messages; the due items due again."""
    pipe = r.pipeline(transaction=False)
    for start in range(0, len(job_ids), BATCH):
        pipe.delete(*[wire.job_key(j) for j in job_ids[start : start + BATCH]])
    pipe.delete(wire.job_index_key(VAULT), wire.QUEUED_KEY, wire.QUEUE_BACKUP)
    for key in r.scan_iter(b"bench:sent:*", count=BATCH):
        pipe.delete(key)
    for n in range(due):
        pipe.delete(wire.active_backup_key(VAULT, vm_id(n)))
        pipe.zadd(wire.SCHEDULE_KEY, {wire.schedule_member(VAULT, vm_id(n)): DUE_AT.timestamp()})
        if n % BATCH == BATCH - 1:
            pipe.execute()
    pipe.execute()


def tick(catalog: RedisCatalog, dispatcher: Dispatcher, now: datetime) -> list[str]:
    """One dispatch tick at ``now``; the jobs it started."""
    clock = FrozenClock(now)
    return scheduling.dispatch_due_backups(
        catalog, dispatcher, clock, WINDOW_SECONDS, MAX_ATTEMPTS
    ).jobs


def drain(catalog: RedisCatalog, dispatcher: Dispatcher, now: datetime) -> tuple[list[str], int]:
    """Ticks until one starts nothing: every job started, and how many ticks started some."""
    started: list[str] = []
    ticks = 0
    while batch := tick(catalog, dispatcher, now):
        started += batch
        ticks += 1
    return started, ticks


def bare_zrange(r: redis.Redis, now: datetime) -> list[bytes]:
    """The baseline's read: the due members of the schedule."""
    members = r.zrangebyscore(wire.SCHEDULE_KEY, "-inf", now.timestamp())
    return [m if isinstance(m, bytes) else str(m).encode() for m in members]


def bare_enqueue(r: redis.Redis, now: datetime, send: Callable[[bytes], object]) -> None:
    """The baseline of starting the due runs: their members, then ``send`` for each."""
    for member in bare_zrange(r, now):
        send(member)


def bare_senders(r: redis.Redis, url: str, work: Path, celery: bool) -> dict[str, Sender]:
    """One SET per due run; with Celery, also one ``send_task`` per due run, as jobs are sent."""
    senders: dict[str, Sender] = {"bare": lambda member: r.set(b"bench:sent:" + member, b"1")}
    if celery:
        app = Celery("bench-sender", set_as_current=False)
        app.conf.update(client_config(Settings(redis_url=url, data_dir=work), url))
        senders["bare_celery"] = lambda member: app.send_task(
            wire.task_name(Operation.BACKUP),
            kwargs={"job_id": member.decode(), "attempt": 1},
            queue=wire.QUEUE_BACKUP,
        )
    return senders


def timed(call: Callable[[], object]) -> float:
    """Seconds ``call`` takes."""
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def run(url: str, args: argparse.Namespace, work: Path) -> dict[str, list[float]]:
    """Every measurement, ``args.runs`` times; the seconds of each, by row."""
    catalog = RedisCatalog.from_url(url)
    r = redis.Redis.from_url(url)
    dispatcher: Dispatcher = RecordingDispatcher()
    if args.dispatcher == "celery":
        dispatcher = CeleryDispatcher.from_url(Settings(redis_url=url, data_dir=work), url)
    idle, due_now = DUE_AT - timedelta(seconds=1), DUE_AT + timedelta(minutes=1)
    senders = bare_senders(r, url, work, args.dispatcher == "celery")
    rows = ("empty", "zero", "bare0", "due", "ticks", *senders)
    m: dict[str, list[float]] = {k: [] for k in rows}
    m["empty"] = [timed(lambda: tick(catalog, dispatcher, idle)) for _ in range(args.repeats)]
    start = time.perf_counter()
    populate(catalog, args.items, args.policies, args.due)
    print(f"populated {args.items} items in {time.perf_counter() - start:.1f}s", flush=True)
    for n in range(args.runs):
        m["zero"] += [timed(lambda: tick(catalog, dispatcher, idle)) for _ in range(args.repeats)]
        m["bare0"] += [timed(lambda: bare_zrange(r, idle)) for _ in range(args.repeats)]
        for key, send in senders.items():
            m[key].append(timed(partial(bare_enqueue, r, due_now, send)))
            reset(r, [], 0)
        start = time.perf_counter()
        started, ticks = drain(catalog, dispatcher, due_now)
        m["due"].append(time.perf_counter() - start)
        m["ticks"].append(ticks)
        if len(started) != args.due:
            raise SystemExit(f"run {n + 1}: {len(started)} jobs started, {args.due} due")
        print(
            f"run {n + 1}/{args.runs}: {len(started)} jobs in {ticks} ticks, "
            f"{m['due'][-1]:.2f}s (baseline {m['bare'][-1]:.2f}s)",
            flush=True,
        )
        reset(r, started, args.due)
    return m


def report(args: argparse.Namespace, m: dict[str, list[float]]) -> None:
    """Medians, ranges and ratios against the goals."""
    zero, due = statistics.median(m["zero"]), statistics.median(m["due"])
    header(
        f"{args.items} items over {args.policies} policies",
        f"dispatcher {args.dispatcher}",
        f"{args.runs} runs x {args.repeats} idle ticks",
    )
    row("tick, empty schedule", m["empty"], "ms")
    ratio = zero / statistics.median(m["bare0"])
    row("tick, 0 due", m["zero"], "ms", f"x{ratio:.1f} bare (goal < 50 ms)")
    row("bare ZRANGEBYSCORE, 0 due", m["bare0"], "ms")
    ticks = statistics.median(m["ticks"])
    note = f"{ticks:.0f} ticks, {due / args.due * 1000:.2f} ms a run (goal < 10 s)"
    row(f"ticks, {args.due} due", m["due"], "s", note)
    row("bare ZRANGEBYSCORE + SET each", m["bare"], "s", f"ticks x{due / min(m['bare']):.1f}")
    if "bare_celery" in m:
        ratio = due / statistics.median(m["bare_celery"])
        row("bare ZRANGEBYSCORE + send_task", m["bare_celery"], "s", f"ticks x{ratio:.1f}")


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--policies", type=int, default=50)
    parser.add_argument("--due", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=20, help="idle ticks timed per run")
    parser.add_argument("--dispatcher", choices=("celery", "record"), default="celery")
    args = parser.parse_args()
    if not 0 < args.due <= args.items:
        parser.error("--due must be between 1 and --items")
    with workspace(args.dir, "bj-sched-bench-") as work, redis_database(work, SCHEDULER_DB) as url:
        m = run(url, args, work)
    report(args, m)


if __name__ == "__main__":
    main()

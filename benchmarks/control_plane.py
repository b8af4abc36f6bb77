"""Control-plane cost: Register jobs against bare Celery no-op tasks, batch and one at a time.

Same broker (a fresh database of the embedded server, or BACKUP_JOBS_REDIS_URL), same worker
command line and concurrency, both workers up for the whole run; each run measures both sides,
in alternating order:

- throughput: N Register jobs (one ``client.register`` of N VMs of a fresh vault) against N
  no-op tasks, submission included, until the last one ended;
- latency: K Register jobs one after another (``client.register(one VM)``, submit to end) in a
  vault of N VMs, against K no-op round trips (``send_task`` to end).

A task's end is learnt the same way on both sides: the worker child pushes its id onto a Redis
list after Celery stored its result (``benchmarks.finished``); a batch polls the list's length,
a single task BLPOPs it. Every job must end Completed and every no-op task SUCCESS, or the run
fails. Redis commands per task are INFO commandstats deltas over the batches; CPU per task
is the batches' CPU time of the side's worker (main process and children, from /proc), of the
Redis server (INFO cpu) and of this process (the client), which other load on the machine
changes far less than it changes the rates.

    python -m benchmarks.control_plane [--vms 2000] [--latency-jobs 50] [--concurrency 2]
        [--runs 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import redis
from celery import Celery

from backup_jobs.catalogs.redis import RedisCatalog
from backup_jobs.client import Client
from backup_jobs.dispatchers.celery import CeleryDispatcher, client_config
from backup_jobs.models import JobStatus, Operation
from backup_jobs.providers.local import LocalFleet
from backup_jobs.runtime import processes
from backup_jobs.settings import Settings
from benchmarks.common import (
    CONTROL_PLANE_DB,
    FINISHED_KEY,
    arguments,
    redis_database,
    spread,
    workspace,
)

# The no-op worker's queue: both workers are up at once, each consuming its own queues.
NOOP_QUEUE = "bench-noop"
# How often a batch looks at the finished list (one LLEN), and how long anything may take.
POLL_SECONDS = 0.01
TIMEOUT_SECONDS = 600.0
# Commands the benchmark itself sends while it waits: left out of the per-task counts.
_OWN_COMMANDS = {"llen", "info"}
# The pseudo-commands under which ``_counts`` counts CPU time, in microseconds: the Redis
# server's, the side's worker's (main process and children) and this process's (the client).
_CPU = "server cpu us"
_WORKER_CPU = "worker cpu us"
_CLIENT_CPU = "client cpu us"
_PSEUDO = (_CPU, _WORKER_CPU, _CLIENT_CPU)


class BenchmarkFailed(RuntimeError):
    """Raised when a job or task did not end as it should: the figures would mean nothing."""


@dataclass
class Figures:
    """What each run measured, per side."""

    noop_rate: list[float] = field(default_factory=list)
    register_rate: list[float] = field(default_factory=list)
    noop_latency: list[float] = field(default_factory=list)  # per-run medians, seconds
    register_latency: list[float] = field(default_factory=list)
    noop_commands: Counter[str] = field(default_factory=Counter)
    register_commands: Counter[str] = field(default_factory=Counter)
    noop_tasks: int = 0
    register_jobs: int = 0
    work_bytes: int = 0


@dataclass
class Bench:
    """The run's broker, sender, fleet and settings."""

    r: redis.Redis
    url: str
    sender: Celery
    settings: Settings
    noop_pid: int
    worker_pid: int

    def client(self) -> Client:
        """A client of a fresh vault whose VMs a Discovery job has catalogued."""
        settings = Settings(
            redis_url=self.url,
            data_dir=self.settings.data_dir,
            fleet_dir=self.settings.fleet_dir,
            vault=f"b{uuid.uuid4().hex[:8]}",
        )
        client = Client(
            settings, RedisCatalog.from_url(self.url), CeleryDispatcher.from_url(settings, self.url)
        )
        self.r.delete(FINISHED_KEY)
        handle = client.discover()
        _await_task(self.r, f"{handle.id}.1")
        if handle.wait(TIMEOUT_SECONDS).status != JobStatus.COMPLETED:
            raise BenchmarkFailed(f"discovery ended {handle.status().value}")
        return client


def _worker(
    app: str, queues: str, env: dict[str, str], concurrency: int, log: Path
) -> subprocess.Popen[bytes]:
    command = [
        *(sys.executable, "-m", "celery", "-A", app, "worker", "--queues", queues),
        *("--pool", "prefork", "--concurrency", str(concurrency)),
        *processes.QUIET_STARTUP,  # both sides start as `up` starts its worker
        *("--loglevel", "WARNING", "--hostname", f"{app}@%h"),
    ]
    with open(log, "ab") as out:
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=60)


def _await_task(r: redis.Redis, task_id: str) -> None:
    """Block until the task ``task_id`` has ended; any other task ending first is an error."""
    popped = r.blpop([FINISHED_KEY], timeout=TIMEOUT_SECONDS)
    if popped is None:
        raise BenchmarkFailed(f"task {task_id} did not end within {TIMEOUT_SECONDS:.0f}s")
    ended = popped[1].decode() if isinstance(popped[1], bytes) else str(popped[1])
    if ended != task_id:
        raise BenchmarkFailed(f"task {ended} ended while waiting for {task_id}")


def _await_count(r: redis.Redis, n: int) -> None:
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while r.llen(FINISHED_KEY) < n:
        if time.monotonic() > deadline:
            raise BenchmarkFailed(f"only {r.llen(FINISHED_KEY)} of {n} tasks ended in time")
        time.sleep(POLL_SECONDS)


def _counts(r: redis.Redis, worker: int) -> Counter[str]:
    """Calls per command so far, and the CPU time of the server, ``worker`` and this process."""
    stats = r.info("commandstats")
    cpu = r.info("cpu")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    used = (float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])) * 1e6
    return Counter(
        {
            **calls,
            _CPU: int(used),
            _WORKER_CPU: int(_cpu_seconds(worker) * 1e6),
            _CLIENT_CPU: int(time.process_time() * 1e6),
        }
    )


def _cpu_seconds(pid: int) -> float:
    """CPU time of a worker: its main process, its reaped children and its live children."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        if int(stat.parent.name) == pid:
            ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        elif int(fields[1]) == pid:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _send_noop(bench: Bench, task_id: str) -> None:
    bench.sender.send_task(
        "bench.noop", kwargs={"job_id": task_id}, queue=NOOP_QUEUE, task_id=task_id
    )


def _check_noop(r: redis.Redis, ids: list[str]) -> None:
    """Every no-op task stored a SUCCESS result."""
    bad: list[str] = []
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        raws = r.mget([f"celery-task-meta-{i}" for i in chunk])
        for task_id, raw in zip(chunk, raws, strict=True):
            status = json.loads(raw)["status"] if raw else "no result"
            if status != "SUCCESS":
                bad.append(f"{task_id}: {status}")
    if bad:
        raise BenchmarkFailed(f"{len(bad)} of {len(ids)} no-op tasks did not succeed: {bad[:3]}")


def _check_registered(client: Client, n: int) -> None:
    """The vault has ``n`` Register jobs and every one ended Completed."""
    count = client.catalog.count_jobs
    vault = client.vault.name
    done = count(vault, operation=Operation.REGISTER, status=JobStatus.COMPLETED)
    total = count(vault, operation=Operation.REGISTER)
    if done != n or total != n:
        others = [
            f"{job.item}: {job.status.value} {job.error or ''}"
            for job in client.jobs(operation=Operation.REGISTER, limit=None)
            if job.status != JobStatus.COMPLETED
        ]
        raise BenchmarkFailed(
            f"{done} of {n} Register jobs ({total} found) ended Completed: {others[:3]}"
        )


def noop_batch(bench: Bench, n: int, figures: Figures) -> float:
    """N no-op tasks sent at once: tasks/s until the last one ended."""
    ids = [str(uuid.uuid4()) for _ in range(n)]
    bench.r.delete(FINISHED_KEY)
    before = _counts(bench.r, bench.noop_pid)
    start = time.perf_counter()
    for task_id in ids:
        _send_noop(bench, task_id)
    _await_count(bench.r, n)
    elapsed = time.perf_counter() - start
    figures.noop_commands += _counts(bench.r, bench.noop_pid) - before
    figures.noop_tasks += n
    _check_noop(bench.r, ids)
    return n / elapsed


def register_batch(bench: Bench, n: int, figures: Figures) -> float:
    """One ``register`` of N VMs of a fresh vault: jobs/s until the last one ended."""
    client = bench.client()
    names = [vm.id for vm in client.vms()][:n]
    bench.r.delete(FINISHED_KEY)
    before = _counts(bench.r, bench.worker_pid)
    start = time.perf_counter()
    batch = client.register(names)
    _await_count(bench.r, len(batch))
    elapsed = time.perf_counter() - start
    figures.register_commands += _counts(bench.r, bench.worker_pid) - before
    figures.register_jobs += n
    batch.raise_refused()
    _check_registered(client, n)
    return n / elapsed


def noop_latency(bench: Bench, k: int) -> float:
    """The median of K no-op round trips, one after another (seconds)."""
    ids = [str(uuid.uuid4()) for _ in range(k)]
    bench.r.delete(FINISHED_KEY)  # every earlier task has ended
    times = []
    for task_id in ids:
        start = time.perf_counter()
        _send_noop(bench, task_id)
        _await_task(bench.r, task_id)
        times.append(time.perf_counter() - start)
    _check_noop(bench.r, ids)
    return statistics.median(times)


def register_latency(bench: Bench, client: Client, names: list[str]) -> float:
    """The median of Register jobs of ``names`` one after another, submit to end (seconds)."""
    bench.r.delete(FINISHED_KEY)  # every earlier task has ended
    times = []
    for name in names:
        start = time.perf_counter()
        (handle,) = client.register(name)
        _await_task(bench.r, f"{handle.id}.1")
        times.append(time.perf_counter() - start)
        if handle.status() != JobStatus.COMPLETED:
            raise BenchmarkFailed(f"Register of {name} ended {handle.status().value}")
    return statistics.median(times)


def _fleet(work: Path, n: int) -> LocalFleet:
    fleet = LocalFleet(work / "fleet")
    for i in range(n):
        # No disk image: a Register job never reads one, and the work directory stays small.
        fleet.create_vm(f"cs{i % 20:02d}", f"vm{i:05d}", "local-1", os_disk_bytes=0)
    return fleet


def _du(path: Path) -> int:
    return sum(
        (Path(d) / f).lstat().st_blocks * 512 for d, _, files in os.walk(path) for f in files
    )


def one_run(
    bench: Bench, figures: Figures, n: int, vms: int, client: Client, names: list[str]
) -> None:
    """Run ``n``: both sides' batches, then both sides one at a time, in alternating order."""
    sides = [
        lambda: figures.noop_rate.append(noop_batch(bench, vms, figures)),
        lambda: figures.register_rate.append(register_batch(bench, vms, figures)),
        lambda: figures.noop_latency.append(noop_latency(bench, len(names))),
        lambda: figures.register_latency.append(register_latency(bench, client, names)),
    ]
    for i in [0, 1, 2, 3] if n % 2 == 0 else [1, 0, 3, 2]:
        sides[i]()
    print(
        f"run {n + 1}: no-op {figures.noop_rate[-1]:.0f} tasks/s, Register"
        f" {figures.register_rate[-1]:.0f} jobs/s; one at a time: no-op"
        f" {figures.noop_latency[-1] * 1000:.1f} ms, Register"
        f" {figures.register_latency[-1] * 1000:.1f} ms",
        flush=True,
    )


def run(args: argparse.Namespace, work: Path, url: str) -> Figures:
    """Both sides, ``args.runs`` times each, in alternating order."""
    warm = args.concurrency
    k = min(args.latency_jobs, (args.vms - warm) // args.runs)
    if k < 1:
        raise SystemExit(f"--vms must be at least {warm + args.runs}")
    fleet = _fleet(work, args.vms)
    settings = Settings(redis_url=url, data_dir=work, fleet_dir=fleet.root)
    env = processes.child_environment(settings, url, {"BACKUP_JOBS_LOG_LEVEL": "WARNING"})
    conc = args.concurrency
    workers = [
        _worker("benchmarks.noop_app", NOOP_QUEUE, env, conc, work / "noop.log"),
        _worker("benchmarks.worker_app", "control,backup,maintenance", env, conc, work / "w.log"),
    ]
    # redis-py 8 gives every socket a 5 s read timeout by default: longer than any BLPOP wait
    # here, so a task that takes long is waited for (and named) instead of a TimeoutError.
    r = redis.Redis.from_url(url, socket_timeout=TIMEOUT_SECONDS + 30)
    figures = Figures()
    try:
        sender = Celery("bench-sender", set_as_current=False)
        sender.conf.update(client_config(settings, url))
        bench = Bench(r, url, sender, settings, workers[0].pid, workers[1].pid)
        # Warm-up: both workers are up and every child has run its kind of task once.
        latency_client = bench.client()
        names = [vm.id for vm in latency_client.vms()]
        _await_count(r, len(latency_client.register(names[-warm:])))
        noop_batch(bench, 2 * warm, Figures())
        for n in range(args.runs):
            one_run(bench, figures, n, args.vms, latency_client, names[n * k : (n + 1) * k])
    finally:
        for proc in workers:
            _stop(proc)
        figures.work_bytes = _du(work)
    return figures


def _per_task(calls: Counter[str], n: int) -> str:
    counted = {c: v for c, v in calls.items() if c not in (*_OWN_COMMANDS, *_PSEUDO) and v > 0}
    top = sorted(counted.items(), key=lambda kv: -kv[1])[:8]
    shown = ", ".join(f"{c} {v / n:.1f}" for c, v in top)
    return f"{sum(counted.values()) / n:5.1f}  ({shown})"


def _cpu_per_task(calls: Counter[str], n: int) -> tuple[str, float]:
    """CPU ms per task, by process, as a line; and the total."""
    client, worker, server = (calls[k] / n / 1000 for k in (_CLIENT_CPU, _WORKER_CPU, _CPU))
    total = client + worker + server
    line = f"client {client:.2f} + workers {worker:.2f} + Redis {server:.2f} = {total:.2f} ms"
    return line, total


def report(args: argparse.Namespace, figures: Figures) -> None:
    """The figures: medians (min-max) over the runs, and same-run ratios."""
    given = "given Redis" if os.environ.get("BACKUP_JOBS_REDIS_URL") else "embedded"
    print(
        f"\nmachine: {os.cpu_count()} cpus; broker {given}; worker concurrency"
        f" {args.concurrency}; {args.vms} VMs; {args.runs} runs interleaved; median (min-max)"
    )
    ratios = [o / b for o, b in zip(figures.register_rate, figures.noop_rate, strict=True)]
    slower = [
        (o - b) * 1000 for o, b in zip(figures.register_latency, figures.noop_latency, strict=True)
    ]
    lines = [
        ("bare Celery no-op", spread(figures.noop_rate, digits=0), "tasks/s"),
        ("Register jobs", spread(figures.register_rate, digits=0), "jobs/s"),
        ("ratio Register / no-op", spread(ratios), "(same-run ratios; goal >= 0.8)"),
        ("no-op round trip, one", spread(figures.noop_latency, 1000, 1), "ms submit -> ended"),
        ("Register job, one", spread(figures.register_latency, 1000, 1), "ms submit -> ended"),
        ("Register overhead, one", spread(slower, digits=1), "ms (same-run differences)"),
    ]
    for label, value, unit in lines:
        print(f"{label:<26}{value:<22}{unit}")
    noop, register = figures.noop_commands, figures.register_commands
    print(f"Redis commands per no-op  : {_per_task(noop, figures.noop_tasks)}")
    print(f"Redis commands per Register:{_per_task(register, figures.register_jobs)}")
    noop_cpu, noop_total = _cpu_per_task(noop, figures.noop_tasks)
    register_cpu, register_total = _cpu_per_task(register, figures.register_jobs)
    print(f"CPU per no-op task        : {noop_cpu}")
    print(f"CPU per Register job      : {register_cpu}")
    print(
        f"CPU ratio no-op / Register: {noop_total / register_total:.2f}"
        "   (the throughput ratio of a machine the batches saturate)"
    )
    print(f"work directory at the end : {figures.work_bytes / 1e6:.1f} MB (removed)")


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # the work directory and the workers are cleaned up


def main() -> None:
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    parser = arguments(__doc__)
    parser.add_argument("--vms", type=int, default=2000)
    parser.add_argument("--latency-jobs", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    with workspace(args.dir, "bj-bench-") as work, redis_database(work, CONTROL_PLANE_DB) as url:
        figures = run(args, work, url)
    report(args, figures)


if __name__ == "__main__":
    main()

"""Control-plane throughput: Register jobs/second vs bare Celery no-op tasks/second.

Same broker (a fresh database of the embedded server, or BACKUP_JOBS_REDIS_URL), same worker
command line and concurrency, measured in the same run; medians of several runs.

    python -m benchmarks.control_plane [--vms 2000] [--concurrency 2] [--runs 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

import redis
from celery import Celery

from backup_jobs.catalogs.redis import RedisCatalog
from backup_jobs.client import Client
from backup_jobs.dispatchers.celery import CeleryDispatcher, client_config
from backup_jobs.providers.local import LocalFleet
from backup_jobs.runtime import processes
from backup_jobs.settings import Settings
from benchmarks.common import CONTROL_PLANE_DB, arguments, redis_database, workspace


def _worker(app: str, env: dict[str, str], concurrency: int, log: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        "--queues",
        "control,backup,maintenance",
        "--pool",
        "prefork",
        "--concurrency",
        str(concurrency),
        *processes.QUIET_STARTUP,  # both sides start as `up` starts its worker
        "--loglevel",
        "WARNING",
    ]
    with open(log, "ab") as out:
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _results(r: redis.Redis) -> int:
    return sum(1 for _ in r.scan_iter("celery-task-meta-*", count=1000))


def _wait_results(r: redis.Redis, n: int) -> None:
    while _results(r) < n:
        time.sleep(0.05)


def _timed(r: redis.Redis, n: int, submit: Callable[[], object]) -> float:
    for key in r.scan_iter("celery-task-meta-*", count=1000):
        r.delete(key)
    start = time.perf_counter()
    submit()
    submitted = time.perf_counter() - start
    _wait_results(r, n)
    elapsed = time.perf_counter() - start
    if n > 1:
        print(f"  submitted {n} in {submitted:.2f}s, all done in {elapsed:.2f}s", flush=True)
    return n / elapsed


def _stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, 15)
    proc.wait(timeout=60)


def run(args: argparse.Namespace, work: Path, url: str) -> tuple[list[float], list[float]]:
    """No-op tasks/s and Register jobs/s, ``args.runs`` times each."""
    r = redis.Redis.from_url(url)
    fleet = LocalFleet(work / "fleet")
    for i in range(args.vms):
        fleet.create_vm(f"cs{i % 20:02d}", f"vm{i:05d}", "local-1", os_disk_bytes=1 << 20)
    settings = Settings(redis_url=url, data_dir=work, fleet_dir=fleet.root)
    env = processes.child_environment(settings, url, {"BACKUP_JOBS_LOG_LEVEL": "WARNING"})
    noop_worker = _worker("benchmarks.noop_app", env, args.concurrency, work / "noop.log")
    real_worker = None
    try:
        sender = Celery("bench-sender", set_as_current=False)
        sender.conf.update(client_config(settings, url))
        baseline, ours = [], []
        for n in range(args.runs):
            # Warm-up: the worker is up and its children have imported everything.
            _timed(
                r,
                1,
                lambda: sender.send_task("bench.noop", kwargs={"job_id": "w"}, queue="control"),
            )
            baseline.append(
                _timed(
                    r,
                    args.vms,
                    lambda: [
                        sender.send_task(
                            "bench.noop", kwargs={"job_id": str(i), "attempt": 1}, queue="control"
                        )
                        for i in range(args.vms)
                    ],
                )
            )
            if real_worker is None:
                _stop(noop_worker)
                real_worker = _worker("workers", env, args.concurrency, work / "worker.log")
            client = Client(
                Settings(
                    redis_url=url,
                    data_dir=work,
                    fleet_dir=fleet.root,
                    vault=f"b{uuid.uuid4().hex[:6]}",
                ),
                RedisCatalog.from_url(url),
                CeleryDispatcher.from_url(settings, url),
            )
            client.discover().wait(300)
            for key in r.scan_iter("celery-task-meta-*", count=1000):
                r.delete(key)
            names = [vm.id for vm in client.vms()]
            ours.append(_timed(r, args.vms, partial(client.register, names)))
            print(
                f"run {n + 1}: no-op {baseline[-1]:.0f} tasks/s, register {ours[-1]:.0f} jobs/s",
                flush=True,
            )
            if n + 1 < args.runs:
                _stop(real_worker)
                real_worker = None
                noop_worker = _worker(
                    "benchmarks.noop_app", env, args.concurrency, work / "noop.log"
                )
    finally:
        for proc in (noop_worker, real_worker):
            if proc is not None and proc.poll() is None:
                _stop(proc)
    return baseline, ours


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--vms", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    with workspace(args.dir, "bj-bench-") as work, redis_database(work, CONTROL_PLANE_DB) as url:
        baseline, ours = run(args, work, url)
    b, o = statistics.median(baseline), statistics.median(ours)
    given = "given Redis" if os.environ.get("BACKUP_JOBS_REDIS_URL") else "embedded"
    print(
        f"\nmachine: {os.cpu_count()} cpus; broker {given};"
        f" worker concurrency {args.concurrency}; {args.vms} VMs; {args.runs} runs (medians)"
    )
    print(f"bare Celery no-op : {b:8.0f} tasks/s")
    print(f"Register jobs     : {o:8.0f} jobs/s")
    print(f"ratio             : {o / b:8.2f}   (goal >= 0.5)")


if __name__ == "__main__":
    main()

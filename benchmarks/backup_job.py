"""A Backup job end to end on a real worker, beside the vault library alone on the same disk.

A local-fleet VM with one disk (default 2 GiB: half random data written by ``write_disks``,
half hole) is backed up full, into an emptied vault each time: by a Backup job
(``client.backup_now``) on a real worker, timed by its record from submission (queued) to its
end (snapshot, transfer through the snapshot's reader, recovery point, item); and by
``vault.backup`` of the disk image in this process (vault creation included, as the job's
first backup creates it). The page cache is warmed before each. Medians and ranges of several
runs; the ratio is what the job machinery costs (goal < 10 %).

    python -m benchmarks.backup_job [--size-gib 2] [--runs 3] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from backup_jobs.catalogs.redis import RedisCatalog
from backup_jobs.client import Client
from backup_jobs.dispatchers.celery import CeleryDispatcher
from backup_jobs.models import Job, JobStatus
from backup_jobs.policies import Retention, ScheduleKind, make_policy
from backup_jobs.providers.local import LocalFleet
from backup_jobs.runtime import processes
from backup_jobs.settings import Settings
from backup_jobs.vault import BackupRequest, DiskSource, Vault, backup
from benchmarks.common import BACKUP_JOB_DB, arguments, header, redis_database, row, workspace
from benchmarks.vault_throughput import GIB, warm

REGION = "local-1"
VM = "bench/vm01"
JOB_TIMEOUT_SECONDS = 3600
# Where a job's time goes: the queue, its two sub-tasks, and the rest.
PHASES = ("queued -> started", "Take Snapshot", "Transfer data to vault", "after the transfer")


def make_vm(fleet: LocalFleet, size: int) -> Path:
    """The VM, its disk half written with random data as a running VM writes; the image."""
    cloud_service, name = VM.split("/")
    fleet.create_vm(cloud_service, name, REGION, os_disk_bytes=size)
    fleet.write_disks(VM, percent=50, seed=1)
    return fleet.vm_dir(VM) / "os.img"


def start_worker(settings: Settings, url: str, log: Path) -> subprocess.Popen[bytes]:
    """The job worker, with the command and environment ``backup-jobs up`` gives it."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            processes.process_commands(settings)["worker"],
            env=processes.child_environment(settings, url),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=settings.data_dir,
        )


def protect(client: Client) -> None:
    """Discover (which waits for the worker to be up), register and protect the VM."""
    _check(client.discover().wait(300))
    policy = make_policy("nightly", ScheduleKind.DAILY, times=["03:00"], retention=Retention(7))
    client.create_policy(policy)
    for submit in (client.register, lambda vms: client.protect(vms, policy.name)):
        batch = submit([VM])
        batch.raise_refused()
        _check(batch[0].wait(300))


def job_backup(client: Client, vault_dir: Path) -> Job:
    """A Backup job into an empty vault, waited for; its record times it (queued to ended)."""
    shutil.rmtree(vault_dir, ignore_errors=True)
    return _check(client.backup_now(VM).wait(JOB_TIMEOUT_SECONDS))


def library_backup(vault_dir: Path, image: Path) -> float:
    """Seconds to create a vault and back the image up into it with the library alone."""
    shutil.rmtree(vault_dir, ignore_errors=True)
    start = time.perf_counter()
    vault = Vault.create(vault_dir)
    backup(vault, BackupRequest(VM, [DiskSource("os", image)]))
    return time.perf_counter() - start


def _check(job: Job) -> Job:
    if job.status != JobStatus.COMPLETED:
        raise SystemExit(
            f"{job.operation.value} job {job.id} ended {job.status.value}: {job.error}"
        )
    return job


def phases(job: Job) -> dict[str, float]:
    """Where a job's time went, from its record (``PHASES``)."""
    snapshot, transfer = job.subtasks
    assert job.started_at and job.ended_at and transfer.ended_at
    times = (
        (job.started_at - job.queued_at).total_seconds(),
        snapshot.duration_seconds or 0.0,
        transfer.duration_seconds or 0.0,
        (job.ended_at - transfer.ended_at).total_seconds(),
    )
    return dict(zip(PHASES, times, strict=True))


def run(args: argparse.Namespace, work: Path, url: str) -> dict[str, list[float]]:
    """The VM, a worker, then every measurement ``args.runs`` times, alternating the order."""
    size = int(args.size_gib * GIB) // (1 << 20) << 20
    fleet = LocalFleet(work / "fleet")
    image = make_vm(fleet, size)
    settings = Settings(
        redis_url=url,
        data_dir=work,
        fleet_dir=fleet.root,
        vault_dir=work / "vault-job",
        region=REGION,
        vault="bench",
    )
    worker = start_worker(settings, url, work / "worker.log")
    m: dict[str, list[float]] = {"library": [], "job": []}
    try:
        client = Client(
            settings, RedisCatalog.from_url(url), CeleryDispatcher.from_url(settings, url)
        )
        protect(client)
        for n in range(args.runs):
            for path in ("library", "job") if n % 2 == 0 else ("job", "library"):
                warm(image)
                if path == "library":
                    m[path].append(library_backup(work / "vault-lib", image))
                    continue
                job = job_backup(client, settings.vault_dir)
                assert job.ended_at is not None
                m[path].append((job.ended_at - job.queued_at).total_seconds())
                for phase, value in phases(job).items():
                    m.setdefault(phase, []).append(value)
            print(
                f"run {n + 1}/{args.runs}: library {m['library'][-1]:.2f}s, "
                f"job {m['job'][-1]:.2f}s",
                flush=True,
            )
    finally:
        processes.terminate([worker])
    return m


def report(args: argparse.Namespace, m: dict[str, list[float]]) -> None:
    """Medians, ranges, throughput and the job's overhead against the goal."""
    lib, job = statistics.median(m["library"]), statistics.median(m["job"])
    gb = args.size_gib * GIB / 1e9
    header(
        f"disk {args.size_gib:g} GiB (1/2 random data, 1/2 hole)",
        "full backups into an empty vault",
        f"{args.runs} runs",
    )
    row("vault library alone", m["library"], "s", f"{gb / lib:.2f} GB/s logical")
    pairs = statistics.median(j / b for j, b in zip(m["job"], m["library"], strict=True))
    overhead = f"ratio {job / lib:.3f} ({pairs:.3f} a run): {(job / lib - 1) * 100:+.1f} %"
    row("Backup job, submit -> final", m["job"], "s", f"{overhead} (goal < 10 %)")
    for phase in PHASES:
        row(f"  {phase}", m[phase])
    outside = [j - t for j, t in zip(m["job"], m["Transfer data to vault"], strict=True)]
    share = statistics.median(outside) / lib * 100
    row("  all but the transfer", outside, "s", f"{share:.1f} % of the library's time")


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--size-gib", type=float, default=2.0)
    args = parser.parse_args()
    with workspace(args.dir, "bj-job-bench-") as work, redis_database(work, BACKUP_JOB_DB) as url:
        m = run(args, work, url)
    report(args, m)


if __name__ == "__main__":
    main()

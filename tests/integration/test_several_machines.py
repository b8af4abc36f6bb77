"""Two machines against one Redis, one vault and one fleet: every backup runs once, on either.

Each "machine" is a worker of its own: its own Celery node name (``--hostname``) and data
dir, the same ``BACKUP_JOBS_REDIS_URL``, and the vault and fleet directories mounted at the
same path, as README's "Running on several machines" says.
"""

from __future__ import annotations

import signal
from pathlib import Path

from backup_jobs.models import JobStatus, Operation
from backup_jobs.policies import Retention, ScheduleKind, make_policy
from backup_jobs.providers.local import LocalFleet
from tests.harness import REGION, Cluster, own_cluster, with_db

VMS = [f"cs-multi/vm{i:02d}" for i in range(20)]
MACHINES = ("machine-a", "machine-b")


def _fleet(root: Path) -> LocalFleet:
    """Twenty small VMs (4 MiB disks) with a little data each."""
    fleet = LocalFleet(root)
    root.mkdir(parents=True)
    for i, vm in enumerate(VMS):
        fleet.create_vm(*vm.split("/"), REGION, os_disk_bytes=4 << 20)
        fleet.write_disks(vm, nbytes=64 << 10, seed=i)
    return fleet


def test_twenty_backups_on_two_machines_run_once_each_on_both_and_the_vault_verifies(
    redis_base_url: str, tmp_path: Path
) -> None:
    shared = {
        "BACKUP_JOBS_FLEET_DIR": str(tmp_path / "shared" / "fleet"),
        "BACKUP_JOBS_VAULT_DIR": str(tmp_path / "shared" / "vault"),
        "BACKUP_JOBS_WORKER_CONCURRENCY": "2",
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with own_cluster(with_db(redis_base_url, 6), tmp_path / "a", **shared) as a:
        b = Cluster(a.redis_url, tmp_path / "b", dict(a.env))
        try:
            for machine, cluster in zip(MACHINES, (a, b), strict=True):
                cluster.start("worker", node=f"backup-jobs@{machine}")
            fleet = _fleet(tmp_path / "shared" / "fleet")
            client = a.client(fleet.root, vault_dir=tmp_path / "shared" / "vault")
            assert client.discover().wait(30).status == JobStatus.COMPLETED
            a.wait_ready("worker")
            b.wait_ready("worker")
            for handle in client.register(VMS):
                assert handle.wait(30).status == JobStatus.COMPLETED
            client.create_policy(
                make_policy("nightly", ScheduleKind.DAILY, times=["22:00"], retention=Retention(7))
            )
            for handle in client.protect(VMS, "nightly"):
                assert handle.wait(30).status == JobStatus.COMPLETED

            backups = [client.backup_now(vm) for vm in VMS]
            jobs = [handle.wait(60) for handle in backups]
            verify = client.verify().wait(60)
            # A warm shutdown: each worker's log holds every line its jobs wrote.
            a.stop()
            b.stop()
            logs = {machine: c.log("worker") for machine, c in zip(MACHINES, (a, b), strict=True)}
        finally:
            for name in list(b.procs):
                b.kill(name, signal.SIGKILL)

    assert [job.status for job in jobs] == [JobStatus.COMPLETED] * 20, [j.error for j in jobs]
    assert [len(client.recovery_points(vm)) for vm in VMS] == [1] * 20
    listed = client.jobs(operation=Operation.BACKUP, limit=100)
    assert sorted(job.id for job in listed) == sorted(job.id for job in jobs)  # no duplicate
    assert all(job.attempt == 1 for job in jobs)
    ran = {
        machine: {job.id for job in jobs if f"job_completed job={job.id} " in log}
        for machine, log in logs.items()
    }
    assert ran[MACHINES[0]] and ran[MACHINES[1]], {m: len(r) for m, r in ran.items()}
    assert not ran[MACHINES[0]] & ran[MACHINES[1]]
    assert ran[MACHINES[0]] | ran[MACHINES[1]] == {job.id for job in jobs}
    assert verify.status == JobStatus.COMPLETED, verify.error

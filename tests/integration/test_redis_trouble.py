"""Redis trouble: refused writes, a full disk, a server killed and restarted mid-job.

Each test runs its own Valkey (so that it can be broken) with real worker, tick consumer and
beat processes. Workers must survive every Redis error and resume when Redis does; a running
attempt finishes across a short outage, and one whose lease expired meanwhile commits nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from backup_jobs.models import Job, JobStatus
from backup_jobs.policies import Retention, ScheduleKind, make_policy
from backup_jobs.providers.local import LocalFleet
from backup_jobs.providers.local_faults import Fault
from backup_jobs.runtime import embedded
from tests.harness import (
    FAST_ENV,
    Cluster,
    demo_fleet,
    eventually,
    mount_tmpfs,
    run_cli,
    wait_for_status,
)


@dataclass
class OwnServer:
    """A Valkey of a test's own, on a fixed port, persisting every write (AOF always)."""

    directory: Path
    port: int = field(default_factory=embedded.free_port)
    # "always" loses nothing across kill -9; a full disk makes such a server exit, though.
    fsync: str = "always"
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                str(embedded.server_binary()),
                *("--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)),
                *("--appendonly", "yes", "--appendfsync", self.fsync, "--save", ""),
                *("--maxmemory-policy", "noeviction"),
            ],
            stdout=subprocess.DEVNULL,
        )
        eventually(self._answers, 10, 0.05)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def _answers(self) -> bool:
        with contextlib.suppress(redis.ConnectionError):
            return bool(self.client().ping())
        return False


@pytest.fixture
def server(tmp_path: Path) -> Iterator[OwnServer]:
    directory = tmp_path / "valkey"
    directory.mkdir()
    own = OwnServer(directory)
    own.start()
    try:
        yield own
    finally:
        if own.process is not None and own.process.poll() is None:
            own.kill()


def _cluster(server: OwnServer, root: Path, **env: str) -> Cluster:
    cluster = Cluster(server.url, root, {**FAST_ENV, **env})
    cluster.start_all()
    cluster.wait_ready("worker")
    cluster.wait_ready("ticks")
    return cluster


def _alive(cluster: Cluster) -> dict[str, bool]:
    return {name: proc.poll() is None for name, proc in cluster.procs.items()}


def _cli_env(cluster: Cluster, root: Path, vault: str) -> dict[str, str]:
    return {
        **cluster.child_env(),
        "BACKUP_JOBS_VAULT": vault,
        "BACKUP_JOBS_FLEET_DIR": str(root / "fleet"),
        "BACKUP_JOBS_REGION": "local-1",
    }


@contextlib.contextmanager
def _refusing_writes(server: OwnServer) -> Iterator[None]:
    """The server refuses every write (NOREPLICAS), as it does with a full AOF disk."""
    server.client().config_set("min-replicas-to-write", 1)
    try:
        yield
    finally:
        server.client().config_set("min-replicas-to-write", 0)


def test_processes_survive_refused_writes_and_resume_and_the_cli_says_why(
    server: OwnServer, tmp_path: Path
) -> None:
    demo_fleet(tmp_path)
    cluster = _cluster(server, tmp_path)
    try:
        client = cluster.client(tmp_path / "fleet")
        assert client.discover().wait(30).status == JobStatus.COMPLETED
        env = _cli_env(cluster, tmp_path, client.vault.name)
        with _refusing_writes(server):
            refused = run_cli("vm", "register", "cs-app/app01", env=env)
            listed = run_cli("vm", "list", env=env)
            time.sleep(1.5)  # ticks (every 0.5 s), beat and the worker meet the refusal meanwhile
            during = _alive(cluster)
        job = client.register(["cs-app/app01"])[0].wait(60)
        after = _alive(cluster)
    finally:
        cluster.stop()

    assert refused.returncode == 7, refused.stderr
    assert "RedisUnavailable" in refused.stderr and "refused" in refused.stderr
    assert "NOREPLICAS" in refused.stderr and "Traceback" not in refused.stderr
    assert listed.returncode == 0 and "cs-app/app01" in listed.stdout
    assert during == after == {"worker": True, "ticks": True, "beat": True}
    assert job.status == JobStatus.COMPLETED


def test_a_full_aof_disk_does_not_stop_the_worker_and_work_resumes_when_space_is_freed(
    tmp_path: Path,
) -> None:
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, "4m"):
        pytest.skip("needs to mount a small tmpfs (root) to fill a disk for real")
    own = OwnServer(disk, fsync="everysec")
    cluster: Cluster | None = None
    try:
        own.start()
        demo_fleet(tmp_path)
        cluster = _cluster(own, tmp_path)
        client = cluster.client(tmp_path / "fleet")
        assert client.discover().wait(30).status == JobStatus.COMPLETED
        filler = disk / "filler"
        with open(filler, "wb") as out, contextlib.suppress(OSError):
            out.write(os.urandom(4 << 20))
        with contextlib.suppress(redis.ResponseError):
            for n in range(64):  # the AOF write that no longer fits
                own.client().set(f"fill{n}", "x" * 65536)
        with pytest.raises(redis.ResponseError, match="MISCONF"):
            own.client().set("probe", "1")
        env = _cli_env(cluster, tmp_path, client.vault.name)
        listed = run_cli("vm", "list", env=env)  # reads still work (PING is refused too)
        refused = run_cli("vm", "register", "cs-app/app01", env=env)
        time.sleep(1)
        during = _alive(cluster)
        filler.unlink()
        eventually(lambda: _accepts_writes(own), 30, 0.5)
        job = client.register(["cs-app/app01"])[0].wait(60)
        after = _alive(cluster)
    finally:
        if cluster is not None:
            cluster.stop()
        if own.process is not None:
            own.kill()
        subprocess.run(["umount", "-l", str(disk)], check=False)

    assert listed.returncode == 0 and "cs-app/app01" in listed.stdout, listed.stderr
    assert refused.returncode == 7 and "MISCONF" in refused.stderr, refused.stderr
    assert "what to do: Free space on the disk of the server's data dir" in refused.stderr
    assert during == after == {"worker": True, "ticks": True, "beat": True}
    assert job.status == JobStatus.COMPLETED


def _accepts_writes(server: OwnServer) -> bool:
    try:
        server.client().delete("fill0", "fill1", "fill2", "fill3")
    except redis.ResponseError:
        return False
    return True


def _register_through_an_outage(
    server: OwnServer, cluster: Cluster, root: Path, install_seconds: float, outage: float
) -> tuple[Job, Job]:
    """Register app01 with a slow install and kill Redis meanwhile; the job then and at its end."""
    fleet = LocalFleet(root / "fleet")
    client = cluster.client(root / "fleet")
    assert client.discover().wait(30).status == JobStatus.COMPLETED
    fleet.faults.add(Fault("install-slow", vm="cs-app/app01", seconds=install_seconds))
    handle = client.register(["cs-app/app01"])[0]
    running = wait_for_status(handle, JobStatus.IN_PROGRESS)
    server.kill()
    time.sleep(outage)
    server.start()
    return running, handle.wait(60)


def test_running_attempts_a_register_and_a_backup_s_transfer_finish_across_a_short_outage(
    server: OwnServer, tmp_path: Path
) -> None:
    fleet = demo_fleet(tmp_path)
    cluster = _cluster(server, tmp_path, BACKUP_JOBS_LEASE_TTL_SECONDS="20")
    try:
        _, job = _register_through_an_outage(server, cluster, tmp_path, 4, outage=2)
        client = cluster.client(tmp_path / "fleet", vault=job.vault, vault_dir=tmp_path / "vault")
        policy = make_policy("nightly", ScheduleKind.DAILY, times=["03:00"], retention=Retention(7))
        client.create_policy(policy)
        assert client.protect(["cs-app/app01"], "nightly")[0].wait(30).status == JobStatus.COMPLETED
        fleet.write_disks("cs-app/app01", percent=100, seed=1)
        # Each read takes 1.5 s: the transfer (two rounds of reads, 3 s or so) outlasts the
        # outage below. One that ended during it could not record its point (see the README).
        fleet.faults.add(Fault("transfer-timeout", "cs-app/app01", seconds=1.5))
        handle = client.backup_now("cs-app/app01")
        eventually(lambda: _transferring(handle.job()), 30, 0.05)
        server.kill()  # while the transfer publishes its progress
        time.sleep(1.5)
        server.start()
        backup = handle.wait(60)
        alive = _alive(cluster)
    finally:
        cluster.stop()

    assert job.status == JobStatus.COMPLETED
    assert [a.status for a in job.attempts] == [JobStatus.COMPLETED]  # not thrown away
    assert backup.status == JobStatus.COMPLETED, backup.to_dict()["attempts"]
    assert [a.status for a in backup.attempts] == [JobStatus.COMPLETED], [
        a.error for a in backup.attempts
    ]
    assert len(client.recovery_points("cs-app/app01")) == 1
    assert alive == {"worker": True, "ticks": True, "beat": True}


def _transferring(job: Job) -> bool:
    return len(job.subtasks) == 2 and job.subtasks[1].bytes_done > 0


def test_an_attempt_whose_lease_expired_during_an_outage_commits_nothing(
    server: OwnServer, tmp_path: Path
) -> None:
    fleet = demo_fleet(tmp_path)
    cluster = _cluster(server, tmp_path)
    try:
        # The outage is longer than the 3 s lease: it has expired when Redis is back.
        first, job = _register_through_an_outage(server, cluster, tmp_path, 6, outage=4)
    finally:
        cluster.stop()
    extension = json.loads((fleet.root / "cs-app" / "app01" / "vm.json").read_text())["extension"]

    assert job.status == JobStatus.COMPLETED, json.dumps(job.to_dict()["attempts"])
    assert [a.status for a in job.attempts] == [JobStatus.FAILED, JobStatus.COMPLETED]
    assert job.attempts[0].error is not None and job.attempts[0].error["code"] == "WorkerLost"
    # The install was committed once, by the attempt that held the lease, never by the first.
    assert extension["fencing_tokens"][job.vault] == job.fencing_token > first.fencing_token


def test_killing_beat_or_the_tick_consumer_mid_flight_leaves_nothing_stuck(
    server: OwnServer, tmp_path: Path
) -> None:
    fleet = demo_fleet(tmp_path)
    cluster = _cluster(server, tmp_path)
    try:
        client = cluster.client(tmp_path / "fleet")
        fleet.faults.add(Fault("discovery-internal-error", times=1))
        handle = client.discover()
        wait_for_status(handle, JobStatus.WAITING_TO_RETRY)
        cluster.kill("ticks", signal.SIGKILL)
        cluster.kill("beat", signal.SIGKILL)
        time.sleep(1.5)  # the retry falls due while nothing ticks
        cluster.start("ticks2", kind="ticks")
        cluster.start("beat2", kind="beat")
        job = handle.wait(60)
    finally:
        cluster.stop()

    assert job.status == JobStatus.COMPLETED
    assert [a.status for a in job.attempts] == [JobStatus.FAILED, JobStatus.COMPLETED]

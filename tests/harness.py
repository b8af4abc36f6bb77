"""Test harness: a real Redis-compatible server and real Celery processes, driven as a user would.

The server is the embedded Valkey, or the one ``BACKUP_JOBS_REDIS_URL`` names (the suite uses
databases 1-9 of it and flushes them). A ``Cluster`` is one database with its own worker (and
beat), so a test that kills a worker never disturbs the others.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis

from backup_jobs.catalogs.redis import RedisCatalog
from backup_jobs.client import Client, JobHandle
from backup_jobs.connection import ssl_options
from backup_jobs.dispatchers.celery import CeleryDispatcher
from backup_jobs.models import Job, JobStatus
from backup_jobs.policies import Policy
from backup_jobs.providers.local import LocalFleet
from backup_jobs.providers.local_demo import create_demo_fleet
from backup_jobs.runtime import processes
from backup_jobs.settings import Settings

REPO = Path(__file__).resolve().parents[1]
REGION = "local-1"
T = TypeVar("T")


def with_db(url: str, db: int) -> str:
    """``url`` pointing at database ``db``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


def eventually(check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; fail with its last value otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        time.sleep(interval)


@dataclass
class Cluster:
    """One Redis database with its own worker and, optionally, beat."""

    # It carries the server's password: kept out of repr, so no failure report shows it.
    redis_url: str = field(repr=False)
    data_dir: Path
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def settings(self, **changes: Any) -> Settings:
        """Settings for a client of this cluster."""
        # Every directory under the cluster's data dir, never the directory pytest runs in: a
        # worker that cannot find a vault's record falls back to its own vault dir.
        env = {"BACKUP_JOBS_DATA_DIR": str(self.data_dir), **self.env}
        base = Settings.from_env({"BACKUP_JOBS_REDIS_URL": self.redis_url, **env})
        return replace(base, **changes)

    def child_env(self) -> dict[str, str]:
        """The environment of this cluster's processes."""
        return processes.child_environment(self.settings(), self.redis_url, self.env)

    def start(
        self, name: str, *, kind: str = "worker", node: str | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a process named ``name`` of a kind of ``up``'s: worker, ticks or beat;
        a worker's Celery node name is ``node`` if given (``--hostname``)."""
        command = processes.process_commands(self.settings())[kind]
        if node is not None:
            command[command.index("--hostname") + 1] = node
        log = open(self.data_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            command,
            env=self.child_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.data_dir,
        )
        self.procs[name] = proc
        return proc

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal a process's whole group and wait for it."""
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop(self) -> None:
        """Stop every process (warm shutdown, then kill)."""
        for name in list(self.procs):
            self.kill(name, signal.SIGTERM)

    def log(self, name: str) -> str:
        """What a process has logged so far."""
        return (self.data_dir / f"{name}.log").read_text(errors="replace")

    def client(self, fleet_dir: Path, vault: str | None = None, **changes: Any) -> Client:
        """A client on a fresh vault (by default) whose fleet is ``fleet_dir``."""
        settings = self.settings(
            vault=vault or f"t-{uuid.uuid4().hex[:10]}",
            fleet_dir=fleet_dir,
            region=REGION,
            **changes,
        )
        return Client(
            settings,
            RedisCatalog.from_url(self.redis_url, ssl_options(settings, self.redis_url)),
            CeleryDispatcher.from_url(settings, self.redis_url),
        )

    def start_all(self, suffix: str = "") -> None:
        """A job worker, a tick consumer and beat, as ``backup-jobs up`` starts them."""
        for kind in ("worker", "ticks", "beat"):
            self.start(kind + suffix, kind=kind)

    def wait_ready(self, name: str, timeout: float = 60.0) -> None:
        """Wait until a worker logs that it is ready to take tasks."""
        eventually(lambda: "ready." in self.log(name), timeout)


# The session cluster runs with short delays so that retries, leases and ticks fit in a test.
SESSION_ENV = {
    "BACKUP_JOBS_RETRY_DELAY_SECONDS": "1",
    "BACKUP_JOBS_LEASE_TTL_SECONDS": "3",
    "BACKUP_JOBS_TICK_SECONDS": "0.5",
    "BACKUP_JOBS_INSTALL_AGENT_TIMEOUT_SECONDS": "3",
    "BACKUP_JOBS_SNAPSHOT_TIMEOUT_SECONDS": "2",
    "BACKUP_JOBS_TRANSFER_TIMEOUT_SECONDS": "3",
    "BACKUP_JOBS_WORKER_CONCURRENCY": "4",
    # GC frees in its second run what it condemned in the first, not 5 minutes later.
    "BACKUP_JOBS_GC_MARGIN_SECONDS": "0",
}


# Short leases, ticks and retry delays: a test's own cluster sees crashes handled in seconds.
FAST_ENV = {
    "BACKUP_JOBS_LEASE_TTL_SECONDS": "3",
    "BACKUP_JOBS_TICK_SECONDS": "0.5",
    "BACKUP_JOBS_RETRY_DELAY_SECONDS": "1",
    "BACKUP_JOBS_INSTALL_AGENT_TIMEOUT_SECONDS": "60",
}


@contextlib.contextmanager
def own_cluster(url: str, root: Path, **env: str) -> Iterator[Cluster]:
    """A cluster on an emptied database for a test that kills or starves its processes."""
    flush(url)
    cluster = Cluster(url, root, {**FAST_ENV, **env})
    try:
        yield cluster
    finally:
        for name in list(cluster.procs):
            cluster.kill(name, signal.SIGKILL)


def children(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (the prefork pool of a worker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def mount_tmpfs(where: Path, size: str) -> bool:
    """Mount a small tmpfs at ``where`` (to fill or freeze a disk for real); False if not root."""
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    return mounted.returncode == 0


def wait_for_status(handle: JobHandle, status: JobStatus, timeout: float = 30.0) -> Job:
    """Poll a job until it reaches ``status`` (not necessarily final) and return that record."""

    def check() -> Job | None:
        job = handle.job()
        return job if job.status == status else None

    return eventually(check, timeout, 0.02)


def demo_fleet(root: Path) -> LocalFleet:
    """A fresh demo fleet under ``root``."""
    return create_demo_fleet(root / "fleet", REGION)


def discovered(cluster: Cluster, root: Path) -> tuple[LocalFleet, Client]:
    """A fresh demo fleet under ``root``, a client on a fresh vault, and a finished discovery."""
    fleet = demo_fleet(root)
    client = cluster.client(root / "fleet")
    job = client.discover().wait(30)
    assert job.status == JobStatus.COMPLETED, job.error
    return fleet, client


def protected(
    cluster: Cluster,
    root: Path,
    vms: list[str],
    policy: Policy,
    data_bytes: int = 0,
    **settings: object,
) -> tuple[LocalFleet, Client]:
    """A demo fleet under ``root`` with ``data_bytes`` written to each VM's disks, discovered,
    these VMs registered and protected with ``policy`` (no backup yet), on a fresh vault."""
    fleet = demo_fleet(root)
    for vm in vms:
        if data_bytes:
            fleet.write_disks(vm, nbytes=data_bytes, seed=1)
    client = cluster.client(root / "fleet", vault_dir=root / "vault", **settings)
    assert client.discover().wait(30).status == JobStatus.COMPLETED
    for handle in client.register(vms):
        assert handle.wait(30).status == JobStatus.COMPLETED
    client.create_policy(policy)
    for handle in client.protect(vms, policy.name):
        assert handle.wait(30).status == JobStatus.COMPLETED
    return fleet, client


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``backup-jobs ARGS`` as a user would, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "backup_jobs", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        check=False,
    )


def flush(url: str) -> None:
    """Empty one test database."""
    redis.Redis.from_url(url).flushdb()

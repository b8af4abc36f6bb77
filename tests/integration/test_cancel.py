"""Cancelling jobs on real workers: queued, waiting to retry, mid-backup, mid-restore, ended.

Each phase is reached deterministically: a queued job is one whose message is sent only after
the cancel; a job waiting to retry gets a retry far enough away; a backup is slowed by the
fleet's transfer-timeout fault; a restore is held on one chunk of the vault made a FIFO, fed
by the test only once the cancel is saved.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from datetime import datetime, timedelta
from pathlib import Path

from backup_jobs import cancels, jobs
from backup_jobs.client import Client, JobHandle
from backup_jobs.dispatchers.celery import CeleryDispatcher
from backup_jobs.errors import WorkerLost
from backup_jobs.items import ProtectionState
from backup_jobs.models import Job, JobStatus, Operation, RegistrationState, utcnow
from backup_jobs.policies import Retention, ScheduleKind, make_policy
from backup_jobs.providers.local_faults import Fault
from backup_jobs.vault import Vault
from backup_jobs.vault.format import ZERO_DIGEST
from tests.harness import Cluster, discovered, eventually, protected, run_cli

VM = "cs-app/app01"
POLICY = make_policy("daily", ScheduleKind.DAILY, times=["03:00"], retention=Retention(7))


def _env(cluster: Cluster, client: Client, root: Path) -> dict[str, str]:
    return {
        **cluster.child_env(),
        "BACKUP_JOBS_VAULT": client.vault.name,
        "BACKUP_JOBS_FLEET_DIR": str(root / "fleet"),
        "BACKUP_JOBS_VAULT_DIR": str(root / "vault"),
        "BACKUP_JOBS_REGION": client.vault.region,
    }


def _unsent_register(client: Client) -> Job:
    """A Register job of app01, stored Queued, whose message has not been sent yet."""
    job = jobs.new_job(client.vault.name, Operation.REGISTER, VM, VM, 3, client._clock)
    assert jobs.create(client.catalog, job, client._clock)
    return job


def test_a_queued_job_is_cancelled_at_once_and_its_late_message_does_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    _, client = discovered(cluster, tmp_path)
    job = _unsent_register(client)

    shown = run_cli("job", "cancel", job.id, "--json", env=_env(cluster, client, tmp_path))
    task_id = CeleryDispatcher.from_url(client.settings, cluster.redis_url).send(job, 1)
    handled = eventually(lambda: _handled(cluster, task_id))

    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["status"] == "Cancelled"
    assert "raised expected: Cancelled(" in handled  # Flower shows it failed, as Cancelled
    stored = client.job(job.id)
    assert stored.status == JobStatus.CANCELLED and stored.attempts == ()
    assert stored.error is not None and stored.error["code"] == "Cancelled"
    [vm] = [vm for vm in client.vms() if vm.id == VM]
    assert vm.registration == RegistrationState.NOT_REGISTERED  # the message did nothing
    assert client.catalog.lock_holder(client.vault.name, VM) is None


def _handled(cluster: Cluster, task_id: str) -> str | None:
    """The worker's log line of how it ended the task ``task_id``, once there."""
    ended = ("] succeeded in", "] raised ")
    lines = cluster.log("worker").splitlines()
    return next((ln for ln in lines if task_id in ln and any(e in ln for e in ended)), None)


def test_cancelling_an_ended_job_fails_with_job_not_cancellable(
    cluster: Cluster, tmp_path: Path
) -> None:
    _, client = discovered(cluster, tmp_path)
    job = _unsent_register(client)
    client.cancel(job.id)

    again = run_cli("job", "cancel", job.id, env=_env(cluster, client, tmp_path))

    assert again.returncode == 4, again.stderr
    assert "JobNotCancellable" in again.stderr and "Cancelled" in again.stderr
    assert "Traceback" not in again.stderr


def _waiting_to_retry(client: Client, job: Job, seconds: float) -> Job:
    """The job after a failed first attempt, waiting ``seconds`` for its retry (as a worker
    records it; the session's workers retry after 1 s, too soon to cancel in between)."""
    catalog, clock = client.catalog, client._clock
    started = jobs.begin_attempt(catalog, job.id, 1, "task-1", 10, seconds, clock)
    assert started is not None
    return jobs.fail_attempt(catalog, started.job, WorkerLost(VM), seconds, clock, started.fence)


def _ticked_after(client: Client, name: str, when: datetime) -> bool:
    last = client.catalog.last_ticks().get(name)
    return last is not None and last > when


def test_a_job_waiting_to_retry_is_cancelled_at_once_and_never_retried(
    cluster: Cluster, tmp_path: Path
) -> None:
    _, client = discovered(cluster, tmp_path)
    waiting = _waiting_to_retry(client, _unsent_register(client), 1.0)
    assert waiting.status == JobStatus.WAITING_TO_RETRY and waiting.next_retry_at is not None

    cancelled = client.cancel(waiting.id).job()
    due_entries = client.catalog.due_retries(utcnow() + timedelta(days=1))
    # The retry tick runs every 0.5 s: a retry left behind would be sent by its next run.
    due = waiting.next_retry_at + timedelta(seconds=0.5)
    eventually(lambda: _ticked_after(client, "dispatch-due-retries", due), 10)

    assert cancelled.status == JobStatus.CANCELLED and waiting.id not in due_entries
    stored = client.job(waiting.id)
    assert stored.status == JobStatus.CANCELLED and stored.attempt == 1
    assert stored.attempts[0].error is not None
    assert stored.attempts[0].error["code"] == "WorkerLost"  # the failed attempt stays as it was


def _transferring(job: Job) -> bool:
    """In ``Transfer data to vault``: its step is published InProgress as it starts, its bytes
    only once a second, which on a slow machine left the cancel too little of the transfer."""
    return len(job.subtasks) == 2 and job.subtasks[1].status == JobStatus.IN_PROGRESS


def test_a_backup_cancelled_mid_transfer_stops_leaving_no_point_snapshot_or_lease(
    cluster: Cluster, tmp_path: Path
) -> None:
    fleet, client = protected(cluster, tmp_path, [VM], POLICY)
    fleet.write_disks(VM, percent=100, seed=1)
    fleet.faults.add(Fault("transfer-timeout", VM, seconds=0.25))  # each read takes 0.25 s
    handle = client.backup_now(VM)
    eventually(lambda: _transferring(handle.job()), 30, 0.05)

    waited = run_cli("job", "cancel", handle.id, "--wait", env=_env(cluster, client, tmp_path))
    job = handle.job()

    assert waited.returncode == 0, waited.stderr
    assert "Cancelled" in waited.stdout
    assert job.status == JobStatus.CANCELLED and job.attempt == 1
    assert job.error is not None and job.error["code"] == "Cancelled"
    assert "had ended with" not in job.error["message"]  # it stopped for the cancel
    assert job.attempts[0].status == JobStatus.CANCELLED
    assert job.subtasks[1].status == JobStatus.CANCELLED
    assert client.recovery_points(VM) == []
    assert Vault.open(tmp_path / "vault").manifests(VM) == []
    assert not any((fleet.vm_dir(VM) / "snapshots").iterdir())  # the snapshot was released
    assert client.catalog.lock_holder(client.vault.name, VM) is None
    [view] = client.protected_items()
    assert view.item.state == ProtectionState.PENDING  # not ProtectionError
    assert view.item.last_error is None
    assert client.backup_now(VM).wait(60).status == JobStatus.COMPLETED  # the next one works
    assert len(client.recovery_points(VM)) == 1


def _hold_on_a_chunk(vault_dir: Path, point: str) -> tuple[Path, bytes]:
    """Make one chunk of the point's first disk a FIFO: a restore blocks reading it."""
    vault = Vault.open(vault_dir)
    manifest = vault.manifest(point)
    index = vault.read_index(manifest, manifest.disks[0])
    digest = [d for d in index.digests if d != ZERO_DIGEST][-1].hex()
    path = vault.store.path(digest)  # type: ignore[attr-defined]
    blob = path.read_bytes()
    path.unlink()
    os.mkfifo(path)
    return path, blob


def _feed(fifo: Path, blob: bytes, handle: JobHandle) -> None:
    """Write the chunk into the FIFO each time the restore opens it, until the job has ended.

    A reader may open it more than once: the vault's blob reader first tries ``O_DIRECT``,
    which a FIFO refuses only once a writer has come, and then opens it again.
    """
    while not handle.job().status.is_final:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: nobody reads it yet
                raise
            time.sleep(0.05)
            continue
        os.set_blocking(fd, True)
        with contextlib.suppress(BrokenPipeError):
            os.write(fd, blob)
        os.close(fd)


def test_a_restore_cancelled_mid_transfer_leaves_no_image_and_no_partial_file(
    cluster: Cluster, tmp_path: Path
) -> None:
    fleet, client = protected(cluster, tmp_path, [VM], POLICY, data_bytes=8 << 20)
    backup = client.backup_now(VM).wait(60)
    assert backup.status == JobStatus.COMPLETED, backup.error
    fifo, blob = _hold_on_a_chunk(tmp_path / "vault", str(backup.properties["recovery_point_id"]))
    target = client.settings.restore_root / f"cancel-{tmp_path.name}"
    handle = client.restore(VM, "latest", target)
    eventually(lambda: any(target.glob("*.partial")), 30, 0.02)  # writing the first disk

    cancelling = client.cancel(handle.id).job()
    time.sleep(cancels.CANCEL_POLL_SECONDS)  # the attempt reads its status again when it resumes
    _feed(fifo, blob, handle)
    job = handle.wait(10)

    assert cancelling.status == JobStatus.CANCELLING
    assert job.status == JobStatus.CANCELLED, job.error
    assert job.error is not None and job.error["code"] == "Cancelled"
    assert list(target.iterdir()) == []  # no image, no partial file
    assert client.catalog.lock_holder(client.vault.name, VM) is None
    assert fleet.vm_dir(VM).exists()

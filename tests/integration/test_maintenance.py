"""Prune, Verify, GarbageCollect, stop and resume protection on real workers and beat.

Each test protects a demo-fleet VM with small written disks and drives the jobs as a user
would, through the client or the CLI. The session's worker runs GC with a 0 s margin
(``tests/harness.py``), so a second GC frees what the first condemned.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

from backup_jobs import maintenance_ticks
from backup_jobs.client import Client
from backup_jobs.errors import NotProtected
from backup_jobs.items import ProtectionState, VerifyState
from backup_jobs.models import JobStatus, Operation, utcnow
from backup_jobs.policies import Retention, ScheduleKind, make_policy
from backup_jobs.providers.local import LocalFleet
from backup_jobs.vault import RestoreRequest, Vault, restore
from tests.harness import Cluster, demo_fleet, eventually, protected, run_cli, wait_for_status

VM = "cs-app/app01"
# Keep the newest point of one day: every point but today's newest is the retention's to drop.
POLICY = make_policy("daily1", ScheduleKind.DAILY, times=["03:00"], retention=Retention(1))


def _protected(cluster: Cluster, root: Path) -> tuple[LocalFleet, Client]:
    """A demo fleet, discovered, app01 registered and protected, 8 MiB of data on its disk."""
    return protected(cluster, root, [VM], POLICY, data_bytes=8 << 20)


def _backup(client: Client) -> str:
    job = client.backup_now(VM).wait(60)
    assert job.status == JobStatus.COMPLETED, job.error
    return str(job.properties["recovery_point_id"])


def _chunks(root: Path) -> tuple[int, int]:
    """Blob files and their bytes, in the store and in GC's garbage."""
    files = [p for sub in ("chunks", "garbage") for p in (root / sub).rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def test_prune_keeps_what_retention_says_and_the_newest_good_point_and_beat_starts_it_hourly(
    cluster: Cluster, tmp_path: Path
) -> None:
    _, client = _protected(cluster, tmp_path)
    oldest, middle, newest = (_backup(client) for _ in range(3))
    [mirror] = [p for p in client.recovery_points(VM) if p.id == newest]
    client.catalog.update_recovery_point(
        client.vault.name, mirror.evolve(verify_state=VerifyState.BROKEN, broken_reason="test")
    )

    dry = client.prune(dry_run=True).wait(30)
    pruned = client.prune(VM).wait(30)

    assert dry.status == JobStatus.COMPLETED and dry.properties["dry_run"] is True
    assert [p["id"] for p in dry.properties["per_vm"][VM]["remove"]] == [oldest]
    assert pruned.status == JobStatus.COMPLETED and pruned.properties["removed"] == 1
    assert pruned.properties["kept"] == 2
    # The newest point is broken: the newest good one is kept as well.
    assert [p.id for p in client.recovery_points(VM)] == [newest, middle]
    assert {m.id for m in Vault.open(tmp_path / "vault").manifests(VM)} == {middle, newest}
    [view] = client.protected_items()
    assert view.item.recovery_points == 2
    assert [s.status for s in pruned.subtasks] == [JobStatus.COMPLETED] * 2

    # Beat's maintenance tick: an hour after the last start, it starts the vault's prune.
    key = maintenance_ticks.last_start_key(Operation.PRUNE, client.vault.name)
    eventually(lambda: key in client.catalog.last_ticks(), 30)  # the tick saw the vault
    client.catalog.record_tick(key, utcnow() - timedelta(hours=1, seconds=1))
    [scheduled] = eventually(lambda: client.jobs(operation="Prune", since="1h")[:-2], 30)
    done = client.handle(scheduled.id).wait(30)
    assert done.properties["trigger"] == "schedule" and done.status == JobStatus.COMPLETED
    assert client.jobs(operation="Verify") == []  # its cadence is a day


def test_stop_keeping_data_keeps_the_points_stops_the_schedule_and_resume_goes_on_incrementally(
    cluster: Cluster, tmp_path: Path
) -> None:
    fleet, client = _protected(cluster, tmp_path)
    first = _backup(client)

    stop = client.stop_protection(VM, keep_data=True).wait(30)

    [view] = client.protected_items()
    assert stop.status == JobStatus.COMPLETED and view.item.state == ProtectionState.STOPPED
    assert view.next_run_at is None and [p.id for p in client.recovery_points(VM)] == [first]
    try:
        client.backup_now(VM)
        raise AssertionError("a backup of a stopped item was accepted")
    except NotProtected as exc:
        assert "ProtectionStopped" in exc.message
    client.catalog.schedule(client.vault.name, VM, utcnow())  # a run due anyway: dropped
    eventually(lambda: client.catalog.next_run(client.vault.name, VM) is None, 30)
    assert client.jobs(operation="Backup", since="1h")[0].properties["recovery_point_id"] == first

    resumed = client.resume_protection(VM, POLICY.name).wait(30)
    fleet.write_disks(VM, nbytes=4 << 20, seed=2)
    incremental = client.backup_now(VM).wait(60)

    [view] = client.protected_items()
    assert resumed.status == JobStatus.COMPLETED and view.item.state == ProtectionState.PROTECTED
    assert view.next_run_at is not None and view.item.recovery_points == 2
    assert incremental.status == JobStatus.COMPLETED
    # Only the changed extents were read (a full backup would read the first 8 MiB too).
    assert incremental.properties["chunks_read"] <= 2
    assert 0 < incremental.properties["bytes_new"] <= 2 * (4 << 20) + 4096


def test_deleting_the_data_removes_every_point_and_the_item_and_two_gc_runs_free_the_space(
    cluster: Cluster, tmp_path: Path
) -> None:
    fleet, client = _protected(cluster, tmp_path)
    _backup(client)
    fleet.write_disks(VM, nbytes=4 << 20, seed=2)
    _backup(client)
    before = _chunks(tmp_path / "vault")

    deleted = client.stop_protection(VM, keep_data=False).wait(30)
    after_delete = _chunks(tmp_path / "vault")
    first = client.collect_garbage().wait(30)
    after_one = _chunks(tmp_path / "vault")
    second = client.collect_garbage().wait(30)

    assert deleted.status == JobStatus.COMPLETED, deleted.error
    assert deleted.properties["recovery_points_deleted"] == 2
    assert client.protected_items() == [] and list(client.recovery_points(VM)) == []
    assert Vault.open(tmp_path / "vault").manifests(VM) == []
    assert before[0] >= 2 and after_delete == before  # prune and delete free nothing themselves
    assert first.properties["condemned"] == before[0] and first.properties["purged"] == 0
    assert after_one == before  # condemned, not yet deleted
    assert second.status == JobStatus.COMPLETED and second.properties["purged"] == before[0]
    assert second.properties["bytes_freed"] == before[1]
    assert _chunks(tmp_path / "vault") == (0, 0)


def test_verify_finds_a_flipped_byte_and_the_next_backup_of_the_vm_heals_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    fleet, client = _protected(cluster, tmp_path)
    damaged = _backup(client)
    chunk = next(p for p in (tmp_path / "vault" / "chunks").rglob("*") if p.is_file())
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))

    found = client.verify(VM).wait(60)
    marks = {p.id: p for p in client.recovery_points(VM)}
    healed = _backup(client)
    again = client.verify().wait(60)

    assert found.status == JobStatus.FAILED and found.error is not None
    assert found.error["code"] == "VaultIntegrityError"
    assert damaged in found.error["message"] and chunk.name in found.error["message"]
    assert found.properties["points_broken"] == 1 and found.properties["chunks_quarantined"] == 1
    assert marks[damaged].verify_state == VerifyState.BROKEN
    assert (tmp_path / "vault" / "quarantine" / chunk.name).exists()
    assert again.status == JobStatus.COMPLETED and again.properties["points_broken"] == 0
    states = {p.id: p.verify_state for p in client.recovery_points(VM)}
    assert states == {damaged: VerifyState.VERIFIED, healed: VerifyState.VERIFIED}
    [image] = restore(
        Vault.open(tmp_path / "vault"), RestoreRequest(healed, tmp_path / "out", tmp_path)
    )
    assert image.read_bytes() == (fleet.vm_dir(VM) / "os.img").read_bytes()


def test_a_second_gc_while_one_runs_fails_with_operation_in_progress_naming_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    demo_fleet(tmp_path)
    client = cluster.client(tmp_path / "fleet", vault_dir=tmp_path / "vault")
    vault = Vault.create(tmp_path / "vault")
    blocker = vault.root / "manifests" / "20260101T000000Z-000000.json"
    os.mkfifo(blocker)  # the first GC's mark blocks reading it until it is written
    first = client.collect_garbage()
    wait_for_status(first, JobStatus.IN_PROGRESS)
    env = {
        **cluster.child_env(),
        "BACKUP_JOBS_VAULT": client.vault.name,
        "BACKUP_JOBS_VAULT_DIR": str(tmp_path / "vault"),
        "BACKUP_JOBS_FLEET_DIR": str(tmp_path / "fleet"),
        "BACKUP_JOBS_REGION": "local-1",
    }

    second = run_cli("vault", "gc", "--wait", "--json", env=env)
    with open(blocker, "w") as pipe:  # a FIFO: the blocked GC reads this
        pipe.write("not a manifest")
    done = first.wait(30)

    [job] = json.loads(second.stdout)
    assert second.returncode == 4, second.stderr
    assert job["error"]["code"] == "OperationInProgress" and first.id in job["error"]["message"]
    assert done.status == JobStatus.COMPLETED_WITH_WARNINGS and done.attempt == 1
    assert "nothing was condemned or deleted" in done.warnings[0]


def test_the_stop_resume_and_vault_commands_refuse_garbage_input_without_a_traceback(
    cluster: Cluster, tmp_path: Path
) -> None:
    env = {
        **cluster.child_env(),
        "BACKUP_JOBS_VAULT": f"garbage-{os.getpid()}",
        "BACKUP_JOBS_FLEET_DIR": str(tmp_path / "fleet"),
        "BACKUP_JOBS_VAULT_DIR": str(tmp_path / "vault"),
    }
    cases = [
        (("protection", "stop", VM), 2, "exactly one of --keep-data or --delete-data"),
        (("protection", "stop", VM, "--keep-data", "--delete-data"), 2, "exactly one"),
        (("protection", "stop", "nosuch01", "--keep-data"), 3, "nosuch01: No VM"),
        (("protection", "resume", VM, "--policy", "nosuch"), 3, "nosuch: No policy"),
        (("vault", "prune", "--vm", ""), 3, "'': No VM"),
        (("vault", "verify", "--vm", "nosuch01", "--wait"), 3, "nosuch01: No VM"),
    ]
    for args, code, message in cases:
        result = run_cli(*args, env=env)

        assert (result.returncode, message in result.stderr) == (code, True), (args, result)
        assert "Traceback" not in result.stderr + result.stdout
        if code != 2:
            assert "what to do:" in result.stderr

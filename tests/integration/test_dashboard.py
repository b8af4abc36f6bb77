"""The dashboard on real workers: every figure equals the listing it drills into."""

from __future__ import annotations

from pathlib import Path

from backup_jobs.attention import Attention
from backup_jobs.client import Client
from backup_jobs.dashboard import Figure
from backup_jobs.items import ProtectionState
from backup_jobs.models import JobStatus
from backup_jobs.policies import Retention, ScheduleKind, make_policy
from tests.harness import Cluster, demo_fleet, run_cli

POLICY = make_policy("nightly", ScheduleKind.DAILY, times=["03:00"], retention=Retention(7))


def _listed(client: Client, figure: Figure) -> int:
    """How many entries the figure's own listing shows (the drill-down)."""
    if figure.listing == "job":
        return len(client.jobs(**figure.filter, limit=None))
    return len(client.protected_items(**figure.filter))


def test_the_dashboard_s_figures_equal_the_listings_they_drill_into(
    cluster: Cluster, tmp_path: Path
) -> None:
    fleet = demo_fleet(tmp_path)
    client = cluster.client(tmp_path / "fleet", vault_dir=tmp_path / "vault")
    assert client.discover().wait(30).status == JobStatus.COMPLETED
    vms = ["cs-app/app01", "cs-web/web01", "cs-web/shared01", "cs-app/stopped01"]
    registered = [handle.wait(30) for handle in client.register(vms)]
    client.create_policy(POLICY)
    for handle in client.protect(vms[:2], POLICY.name, backup_now=True):
        initial = client.handle(handle.wait(30).properties["initial_backup_job"]).wait(60)
        assert initial.status == JobStatus.COMPLETED, (initial.error, initial.subtasks)
    assert client.protect(vms[2:3], POLICY.name)[0].wait(30).status == JobStatus.COMPLETED
    fleet.delete_vm("cs-web/web01")
    failed = client.backup_now("cs-web/web01").wait(60)

    board = client.dashboard()

    assert [job.status for job in registered].count(JobStatus.FAILED) == 1  # stopped01
    assert failed.error is not None and failed.error["code"] == "VMNotFound"
    figures = {f.label: f for f in (*board.protection, *board.jobs, *board.attention)}
    assert figures["Protected items"].value == 3
    assert figures[ProtectionState.PROTECTED.shown].value == 1
    assert figures[ProtectionState.PENDING.shown].value == 1
    assert figures[ProtectionState.ERROR.shown].value == 1
    assert figures["Failed"].value == 2 and figures["Completed"].value >= 6
    assert figures[Attention.FAILED_BACKUP.shown].value == 1
    assert figures["Items needing action"].value == 1
    for figure in (*board.protection, *board.jobs, *board.attention):
        assert _listed(client, figure) == figure.value, figure
    assert board.storage.points == 2 and board.storage.stored_bytes
    assert board.storage.ratio is not None and board.storage.ratio > 10  # sparse, deduplicated

    env = {**cluster.child_env(), "BACKUP_JOBS_VAULT": client.vault.name}
    env.update(
        BACKUP_JOBS_FLEET_DIR=str(tmp_path / "fleet"), BACKUP_JOBS_VAULT_DIR=str(tmp_path / "vault")
    )
    shown = run_cli("dashboard", env=env)
    drilled = run_cli("protection", "list", "--needs-action", "failedbackup", env=env)
    garbage = run_cli("protection", "list", "--needs-action", "nope", env=env)
    assert shown.returncode == 0 and "backup-jobs job list --status Failed" in shown.stdout
    assert "cs-web/web01" in drilled.stdout and "cs-app/app01" not in drilled.stdout
    assert garbage.returncode == 2 and "accepted: any, FailedBackup" in garbage.stderr

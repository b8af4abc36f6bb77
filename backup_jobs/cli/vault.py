"""``backup-jobs vault prune|verify|gc``: the vault's maintenance, as jobs."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from backup_jobs.cli import render
from backup_jobs.cli.common import client, json_option, wait_option
from backup_jobs.cli.inventory import started
from backup_jobs.cli.waiting import wait_for
from backup_jobs.client import Batch, JobHandle
from backup_jobs.models import Job

vm_option = click.option("--vm", help="Only this VM's recovery points (cloud_service/name).")


@click.group("vault")
def vault_group() -> None:
    """Maintain the vault: prune by the policies' retention, verify, collect garbage."""


@vault_group.command("prune")
@vm_option
@click.option(
    "--dry-run", is_flag=True, help="Change nothing; show what would be kept and removed (waits)."
)
@wait_option
@json_option
def vault_prune(vm: str | None, dry_run: bool, wait: bool, as_json: bool) -> None:
    """Start a Prune job: apply each protected VM's policy retention to its points."""
    handle = client().prune(vm, dry_run=dry_run)
    _follow(handle, wait or dry_run, as_json, _show_prune)


@vault_group.command("verify")
@vm_option
@wait_option
@json_option
def vault_verify(vm: str | None, wait: bool, as_json: bool) -> None:
    """Start a Verify job: re-read and re-hash the chunks, mark each point Verified or Broken."""
    _follow(client().verify(vm), wait, as_json, _show_counts)


@vault_group.command("gc")
@wait_option
@json_option
def vault_gc(wait: bool, as_json: bool) -> None:
    """Start a GarbageCollect job (space is freed by the second run that finds it unused)."""
    _follow(client().collect_garbage(), wait, as_json, _show_counts)


def _follow(handle: JobHandle, wait: bool, as_json: bool, show: Callable[[Job], None]) -> None:
    """Report the started job, or wait for it and show what it found."""
    if not wait:
        started(Batch([handle]), False, as_json)
    code = wait_for([handle], as_json)
    if not as_json:
        show(handle.job())
    sys.exit(code)


def _show_prune(job: Job) -> None:
    per_vm: dict[str, Any] = job.properties.get("per_vm", {})
    dry_run = bool(job.properties.get("dry_run"))
    rows = [(vm, v["kept"], v["removed"]) for vm, v in per_vm.items()]
    verb = "would remove" if dry_run else "removed"
    click.echo(render.table(("vm", "kept", verb), rows))
    if dry_run:
        for vm, v in per_vm.items():
            for what, points in (("keep", v["keep"]), ("remove", v["remove"])):
                for point in points:
                    click.echo(f"{vm}  {what:<6}  {point['id']}  {point['created_at']}")


def _show_counts(job: Job) -> None:
    shown = {k: v for k, v in job.properties.items() if isinstance(v, int | str) and v != ""}
    for name, value in shown.items():
        if name != "trigger":
            click.echo(f"{name}: {value}")
    for rp_id, why in dict(job.properties.get("broken") or {}).items():
        click.echo(f"broken: {rp_id}: {why}")

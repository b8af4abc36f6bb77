"""``backup-jobs vm ...``, and how every command that starts jobs reports them."""

from __future__ import annotations

import sys

import click

from backup_jobs.cli import render
from backup_jobs.cli.common import (
    client,
    echo_refusals,
    json_option,
    outcome,
    wait_option,
)
from backup_jobs.cli.problems import warn_problems
from backup_jobs.cli.waiting import wait_for
from backup_jobs.client import Batch


@click.group("vm")
def vm_group() -> None:
    """Discover, list and register the fleet's VMs."""


@vm_group.command("discover")
@wait_option
@json_option
def vm_discover(wait: bool, as_json: bool) -> None:
    """Start a Discovery job: list the fleet's VMs into the vault."""
    started(Batch([client().discover()]), wait, as_json)


@vm_group.command("list")
@click.option("--registrable", is_flag=True, help="Only VMs that can be registered now.")
@click.option("--deleted", "include_deleted", is_flag=True, help="Include VMs gone from the fleet.")
@json_option
def vm_list(registrable: bool, include_deleted: bool, as_json: bool) -> None:
    """List the vault's VMs with their registration state."""
    c = client()
    vms = c.vms(registrable=registrable, include_deleted=include_deleted)
    if as_json:
        render.emit_json([vm.to_dict() for vm in vms])
    else:
        click.echo(render.vm_table(vms, c.vault.region))
    warn_problems(vms.problems)


@vm_group.command("register")
@click.argument("vms", nargs=-1, required=True)
@wait_option
@json_option
def vm_register(vms: tuple[str, ...], wait: bool, as_json: bool) -> None:
    """Start one Register job per VM (cloud_service/name, or a unique name).

    VMs that cannot be registered are reported (name, error, what to do) and the others go on;
    the exit code is then the most severe refusal's.
    """
    started(client().register(vms), wait, as_json)


def started(batch: Batch, wait: bool, as_json: bool) -> None:
    """Report the started jobs and refused VMs, or follow the jobs; exit with the outcome."""
    echo_refusals(batch.refused)
    refused = [refusal.error for refusal in batch.refused]
    if wait:
        sys.exit(wait_for(batch, as_json, refused))
    if as_json:
        render.emit_json(
            {
                "job_ids": [handle.id for handle in batch],
                "refused": [{"name": r.name, "error": r.error.to_dict()} for r in batch.refused],
            }
        )
    else:
        for handle in batch:
            click.echo(
                f"Started job {handle.id}; follow it with `backup-jobs job show {handle.id}`."
            )
    sys.exit(outcome([], refused))

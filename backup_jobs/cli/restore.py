"""``backup-jobs restore ...`` and ``backup-jobs recovery-point list|show``."""

from __future__ import annotations

import click

from backup_jobs.cli import render
from backup_jobs.cli.common import client, json_option, wait_option
from backup_jobs.cli.inventory import started
from backup_jobs.cli.problems import warn_problems
from backup_jobs.client import Batch
from backup_jobs.client_restore import LATEST_POINT


@click.command("restore")
@click.argument("vm")
@click.option(
    "--point", required=True, help=f"The recovery point's id, or {LATEST_POINT} for the newest."
)
@click.option(
    "--target",
    help="Write the disks as DIR/<disk>.img, DIR inside BACKUP_JOBS_RESTORE_ROOT "
    "(a relative DIR is taken under it).",
)
@click.option("--as-new-vm", help="Create a new VM of the fleet (NAME or CLOUD_SERVICE/NAME).")
@click.option("--overwrite", is_flag=True, help="Replace disk images the target has already.")
@wait_option
@json_option
def restore(
    vm: str,
    point: str,
    target: str | None,
    as_new_vm: str | None,
    overwrite: bool,
    wait: bool,
    as_json: bool,
) -> None:
    """Start a Restore job of a VM's recovery point: into a directory, or as a new VM."""
    if (target is None) == (as_new_vm is None):
        raise click.UsageError("Give exactly one of --target DIR or --as-new-vm NAME.")
    if as_new_vm is not None and overwrite:
        raise click.UsageError("--overwrite goes with --target, not --as-new-vm.")
    handle = client().restore(vm, point, target, as_new_vm=as_new_vm, overwrite=overwrite)
    started(Batch([handle]), wait, as_json)


@click.group("recovery-point")
def recovery_point_group() -> None:
    """A VM's recovery points."""


@recovery_point_group.command("list")
@click.argument("vm")
@json_option
def recovery_point_list(vm: str, as_json: bool) -> None:
    """List a VM's recovery points, newest first."""
    points = client().recovery_points(vm)
    if as_json:
        render.emit_json([p.to_dict() for p in points])
    else:
        click.echo(render.recovery_point_table(points))
    warn_problems(points.problems)


@recovery_point_group.command("show")
@click.argument("vm")
@click.argument("point")
@json_option
def recovery_point_show(vm: str, point: str, as_json: bool) -> None:
    """Show one recovery point of a VM (``latest``: its newest) and how to restore it."""
    found = client().recovery_point(vm, point)
    if as_json:
        render.emit_json(found.to_dict())
        return
    click.echo(render.recovery_point_detail(found))

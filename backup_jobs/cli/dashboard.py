"""``backup-jobs dashboard``: the seed's Dashboard page, each figure with its drill-down."""

from __future__ import annotations

import click

from backup_jobs.cli import render
from backup_jobs.cli.common import client, json_option
from backup_jobs.cli.problems import warn_problems


@click.command("dashboard")
@json_option
def dashboard(as_json: bool) -> None:
    """Protected VMs, jobs of the last 24 hours, items needing action, vault storage."""
    board = client().dashboard()
    if as_json:
        render.emit_json(board.to_dict())
    else:
        click.echo(render.dashboard_text(board))
    warn_problems(board.problems)

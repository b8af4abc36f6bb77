"""``backup-jobs problem ...``: records that could not be read, and how listings mention them."""

from __future__ import annotations

from collections.abc import Sequence

import click

from backup_jobs.cli import render
from backup_jobs.cli.common import client, json_option
from backup_jobs.errors import CorruptRecord
from backup_jobs.models import Problem


def warn_problems(problems: Sequence[Problem]) -> None:
    """After a listing, name on stderr each record it had to leave out, and what to do."""
    if not problems:
        return
    click.echo(f"warning: {len(problems)} record(s) could not be read and were left out:", err=True)
    for problem in problems:
        click.echo(f"  {problem.key}: {problem.reason}", err=True)
    click.echo(f"  what to do: {CorruptRecord.action}", err=True)


@click.group("problem")
def problem_group() -> None:
    """Records the ticks found unreadable and skipped."""


@problem_group.command("list")
@json_option
def problem_list(as_json: bool) -> None:
    """List the unreadable records the ticks skipped (one per key, latest sighting)."""
    problems = client().problems()
    if as_json:
        render.emit_json([p.to_dict() for p in problems])
        return
    rows = [(p.key, p.seen_by, render.short_time(p.seen_at), p.reason) for p in problems]
    click.echo(render.table(("key", "seen by", "seen at (utc)", "reason"), rows))


@problem_group.command("clear")
def problem_clear() -> None:
    """Forget the recorded problems (after repairing or deleting the records)."""
    click.echo(f"Cleared {client().catalog.clear_problems()} problem(s).")

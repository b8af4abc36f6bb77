"""``backup-jobs job ...``: the jobs page (filtered, paged, watched) and one job in full."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import datetime

import click

from backup_jobs import joblist, timeparse
from backup_jobs.cli import render
from backup_jobs.cli.common import client, echo_error, json_option, parsed_by, wait_option
from backup_jobs.cli.problems import warn_problems
from backup_jobs.cli.waiting import wait_for
from backup_jobs.errors import EXIT_INTERRUPTED, ConfigurationError, JobNotCancellable
from backup_jobs.models import JobPage, JobStatus, Operation, ParsedEnum, utcnow

# How often --watch redraws the page when given no interval.
DEFAULT_WATCH_SECONDS = 2.0
WATCH_RANGE_SECONDS = (0.5, 3600.0)


def _choices(enum: type[ParsedEnum]) -> str:
    """``[A|B|C]``: the values an option accepts, for its help."""
    return "[" + "|".join(member.value for member in enum) + "]"


def _time(name: str) -> Callable[[str], datetime]:
    """The parser of a time option: ``24h`` ago or ISO, an error naming the option."""

    def parse(text: str) -> datetime:
        return timeparse.parse_since(text, utcnow(), name)

    return parse


def _watch_seconds(text: str) -> float:
    low, high = WATCH_RANGE_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not low <= seconds <= high:  # nan fails too
        raise ConfigurationError(
            detail=f"watch={text!r} is not valid; accepted: seconds from {low:g} to {high:g}"
        )
    return seconds


@click.group("job")
def job_group() -> None:
    """The jobs page: list and show jobs; cancel one."""


@job_group.command("list")
@click.option(
    "--operation",
    callback=parsed_by(Operation.parse),
    metavar=_choices(Operation),
    help="Only this operation (any case).",
)
@click.option(
    "--status",
    callback=parsed_by(JobStatus.parse),
    metavar=_choices(JobStatus),
    help="Only this status (any case, e.g. failed, in-progress).",
)
@click.option("--item", metavar="VM", help="Only the jobs of this VM, or 'vault' (Discovery).")
@click.option("--since", callback=parsed_by(_time("since")), help="Queued since: 24h or ISO.")
@click.option("--until", callback=parsed_by(_time("until")), help="Queued up to: 24h or ISO.")
@click.option(
    "--before", callback=parsed_by(_time("before")), help="Queued strictly before: 24h or ISO."
)
@click.option(
    "--limit",
    default=str(joblist.DEFAULT_PAGE_SIZE),
    callback=parsed_by(joblist.parse_limit),
    help=f"Jobs per page: 1 to {joblist.MAX_PAGE_SIZE} (default {joblist.DEFAULT_PAGE_SIZE}).",
)
@click.option("--cursor", help="The next page: the cursor the previous page printed.")
@click.option(
    "--watch",
    is_flag=False,
    flag_value=str(DEFAULT_WATCH_SECONDS),
    default=None,
    metavar="[SECONDS]",
    callback=parsed_by(_watch_seconds),
    help=f"Redraw the page every SECONDS ({DEFAULT_WATCH_SECONDS:g}) until Ctrl-C.",
)
@click.option(
    "-q", "--quiet", is_flag=True, help="Print only the job ids, newest first, one per line."
)
@json_option
def job_list(
    operation: Operation | None,
    status: JobStatus | None,
    item: str | None,
    since: datetime | None,
    until: datetime | None,
    before: datetime | None,
    limit: int,
    cursor: str | None,
    watch: float | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """List the vault's jobs, newest first, a page at a time."""
    if quiet and as_json:
        raise click.UsageError("--quiet and --json cannot be used together.")
    if watch is not None and (quiet or as_json):
        raise click.UsageError("--watch redraws a table: leave out --quiet and --json.")
    c = client()

    def page() -> JobPage:
        try:
            return c.jobs(
                operation=operation,
                status=status,
                item=item,
                since=since,
                until=until,
                before=before,
                limit=limit,
                cursor=cursor,
            )
        except ConfigurationError as exc:
            raise _bad_option(exc) from None

    if watch is not None:
        sys.exit(_watch(page, watch))
    jobs = page()
    if as_json:
        render.emit_json({"jobs": [job.to_dict() for job in jobs], "next_cursor": jobs.next_cursor})
    elif quiet:
        for job in jobs:
            click.echo(job.id)
        _echo_next(jobs, err=True)
    else:
        click.echo(render.job_table(jobs))
        _echo_next(jobs)
    warn_problems(jobs.problems)


def _bad_option(error: ConfigurationError) -> click.BadParameter:
    """A refused value as click's usage error (exit 2), naming the option as typed."""
    detail = error.detail or error.message
    name = detail.split("=", 1)[0] if "=" in detail.split(" ", 1)[0] else ""
    hint = f"--{name.replace('_', '-')}" if name else None
    return click.BadParameter(detail, param_hint=hint)


def _echo_next(jobs: JobPage, err: bool = False) -> None:
    if jobs.next_cursor:
        click.echo(f"next page: --cursor {jobs.next_cursor}", err=err)


def _watch(page: Callable[[], JobPage], seconds: float) -> int:
    """Redraw the page every ``seconds`` until Ctrl-C; the interrupted exit code then."""
    try:
        while True:
            jobs = page()
            click.clear()
            stamp = utcnow().strftime("%H:%M:%S UTC")
            click.echo(f"{stamp}  every {seconds:g}s, Ctrl-C to stop\n")
            click.echo(render.job_table(jobs))
            _echo_next(jobs)
            warn_problems(jobs.problems)
            time.sleep(seconds)
    except KeyboardInterrupt:
        click.echo("\nStopped watching.", err=True)
        return EXIT_INTERRUPTED


@job_group.command("show")
@click.argument("job_id")
@json_option
def job_show(job_id: str, as_json: bool) -> None:
    """Show one job: status, error with its recommended action, every attempt."""
    job = client().job(job_id)
    if as_json:
        render.emit_json(job.to_dict())
    else:
        click.echo(render.job_detail(job))


@job_group.command("cancel")
@click.argument("job_id")
@wait_option
@json_option
def job_cancel(job_id: str, wait: bool, as_json: bool) -> None:
    """Cancel a job that is queued, waiting to retry or running.

    A job nothing runs is Cancelled at once; a running one is Cancelling until it stops
    between chunks or steps, then Cancelled. With --wait, exits 0 once it is Cancelled, or
    with JobNotCancellable's code (4) if it completed first (the cancel came too late).
    """
    handle = client().cancel(job_id)
    if not wait:
        job = handle.job()
        if as_json:
            render.emit_json(job.to_dict())
        else:
            follow = "" if job.status.is_final else f"; follow it: backup-jobs job show {job.id}"
            click.echo(f"{job.id}: {job.status.value}{follow}")
        return
    code = wait_for([handle], as_json)
    job = handle.job()
    if job.status == JobStatus.CANCELLED:
        sys.exit(0)
    if job.status.is_final:  # it ended otherwise before it saw the cancel
        late = JobNotCancellable(job.item_name, f"job {job.id} ended {job.status.value} first")
        echo_error(late.to_dict())
        sys.exit(late.exit_code)
    sys.exit(code)

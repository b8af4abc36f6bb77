"""What the CLI's commands share: the client, option parsing, errors and exit codes."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import click

from backup_jobs.client import Client, Refusal
from backup_jobs.errors import (
    BackupJobsError,
    ConfigurationError,
    error_from_dict,
    most_severe,
)
from backup_jobs.models import Job, JobStatus

T = TypeVar("T")

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
wait_option = click.option("--wait", is_flag=True, help="Wait for the jobs, showing progress.")


def parsed_by(
    parse: Callable[[str], T],
) -> Callable[[click.Context, click.Parameter, str | None], T | None]:
    """An option callback reading the value with a domain parser; a bad value is a usage error."""

    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> T | None:
        if value is None:
            return None
        try:
            return parse(value)
        except ConfigurationError as exc:
            raise click.BadParameter(exc.detail, ctx, param) from None

    return convert


def client() -> Client:
    """The client for this invocation, from the environment."""
    return Client.from_env()


def echo_error(error: Mapping[str, Any], prefix: str = "error") -> None:
    """Print an error (its ``to_dict`` form) on stderr: code, message, and what to do."""
    click.echo(f"{prefix}: {error['code']}: {error['message']}", err=True)
    click.echo(f"  what to do: {error_from_dict(dict(error)).recommended_action}", err=True)


def echo_refusals(refused: Iterable[Refusal]) -> None:
    """Print each VM a batch refused on stderr: the name it was given by, why, and what to do."""
    for refusal in refused:
        name = refusal.name or repr(refusal.name)  # an empty name still reads as one
        echo_error(refusal.error.to_dict(), prefix=f"refused {name}")


def outcome(jobs: Sequence[Job], refused: Sequence[BackupJobsError] = ()) -> int:
    """0 if every job succeeded and nothing was refused, else the most severe one's exit code."""
    failures = [
        error_from_dict(job.error)
        for job in jobs
        if job.status in (JobStatus.FAILED, JobStatus.CANCELLED) and job.error
    ]
    worst = most_severe([*failures, *refused])
    return worst.exit_code if worst else 0


class FiniteRange(click.FloatRange):
    """A ``FloatRange`` that also refuses ``nan`` (which passes every range check) and ``inf``."""

    name = "finite float range"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)

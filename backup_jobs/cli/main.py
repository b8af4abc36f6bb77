"""The ``backup-jobs`` entry point; maps errors to exit codes in one place."""

from __future__ import annotations

import os
import sys
import tempfile
import traceback

import click

from backup_jobs import wire
from backup_jobs.cli.common import echo_error
from backup_jobs.cli.dashboard import dashboard
from backup_jobs.cli.fleet import fleet_group
from backup_jobs.cli.inventory import vm_group
from backup_jobs.cli.jobs import job_group
from backup_jobs.cli.observe import exporter, health
from backup_jobs.cli.problems import problem_group
from backup_jobs.cli.protection import backup_group, policy_group, protection_group
from backup_jobs.cli.restore import recovery_point_group, restore
from backup_jobs.cli.stack import demo, flower, server, up
from backup_jobs.cli.vault import vault_group
from backup_jobs.errors import (
    EXIT_INTERRUPTED,
    BackupJobsError,
    FleetStorageError,
    InternalError,
)
from backup_jobs.provider import ProviderStorageError

# A fleet verb (no job, nothing retried) that the fleet's storage refused.
ADMIN_STORAGE_ACTION = (
    "Free space on (or fix the permissions of) the named path, then run the command again."
)


@click.group()
@click.version_option(package_name="backup-jobs")
def cli() -> None:
    """backup-jobs: policy-driven VM backup on Celery workers (backup-jobs NOUN VERB)."""


for command in (
    up,
    demo,
    server,
    flower,
    exporter,
    health,
    fleet_group,
    vm_group,
    job_group,
    policy_group,
    protection_group,
    backup_group,
    recovery_point_group,
    restore,
    dashboard,
    problem_group,
    vault_group,
):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; errors print their message and recommended action, not a traceback."""
    try:
        _refuse_undecodable(sys.argv[1:] if argv is None else argv)
        cli.main(args=argv, standalone_mode=False)
    except BackupJobsError as exc:
        _fail(exc)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)
    except ProviderStorageError as exc:
        _fail(FleetStorageError(detail=str(exc), action=ADMIN_STORAGE_ACTION))
    except Exception as exc:  # a bug: one line for the user, the traceback kept in a file
        _fail(InternalError(detail=f"{type(exc).__name__}: {exc}", action=_report(exc)))


def _refuse_undecodable(args: list[str]) -> None:
    """A usage error for an argument that is not UTF-8 (Python keeps its bad bytes as lone
    surrogates): every name, id and path goes to Redis or into JSON, which would refuse it
    deep inside a command, as an internal error."""
    for arg in args:
        if not wire.encodable(arg):
            shown = arg.encode(errors="surrogateescape").decode(errors="backslashreplace")
            raise click.UsageError(f"argument '{shown}' is not valid UTF-8")


def _fail(error: BackupJobsError) -> None:
    echo_error(error.to_dict())
    sys.exit(error.exit_code)


def _report(exc: Exception) -> str:
    """Save the traceback of an unexpected error; what to do, naming the file."""
    handle, path = tempfile.mkstemp(prefix="backup-jobs-traceback-", suffix=".txt")
    with os.fdopen(handle, "w") as out:
        traceback.print_exception(exc, file=out)
    return f"This is a bug. Please report it with the traceback saved in {path}."


if __name__ == "__main__":
    main()

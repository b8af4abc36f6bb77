"""The ``backup-jobs`` entry point; maps errors to exit codes in one place."""

from __future__ import annotations

import sys

import click

from backup_jobs.cli.common import echo_error
from backup_jobs.cli.fleet import fleet_group
from backup_jobs.cli.inventory import job_group, vm_group
from backup_jobs.cli.problems import problem_group
from backup_jobs.cli.stack import demo, flower, server, up
from backup_jobs.errors import EXIT_INTERRUPTED, BackupJobsError


@click.group()
@click.version_option(package_name="backup-jobs")
def cli() -> None:
    """backup-jobs: policy-driven VM backup on Celery workers (backup-jobs NOUN VERB)."""


for command in (up, demo, server, flower, fleet_group, vm_group, job_group, problem_group):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; errors print their message and recommended action, not a traceback."""
    try:
        cli.main(args=argv, standalone_mode=False)
    except BackupJobsError as exc:
        echo_error(exc.to_dict())
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPTED)


if __name__ == "__main__":
    main()

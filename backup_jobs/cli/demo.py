"""The steps of ``backup-jobs demo``: the seed's whole workflow on the demo fleet.

Discover, register every VM (the seed's Register rows fail on purpose), create a policy,
protect the registered VMs with an initial backup, write to one VM and back it up again (a
small incremental), restore it and compare its disks byte for byte, then print the
dashboard, the VMs and the jobs. Each step waits for its jobs, showing their progress.
"""

from __future__ import annotations

import filecmp
from collections.abc import Sequence
from pathlib import Path

import click

from backup_jobs.cli import render
from backup_jobs.cli.common import echo_refusals
from backup_jobs.cli.waiting import Waiter
from backup_jobs.client import Client, JobHandle
from backup_jobs.errors import DemoFailed, error_from_dict
from backup_jobs.models import Job, JobStatus, RegistrationState
from backup_jobs.policies import Retention, ScheduleKind, make_policy
from backup_jobs.providers.local import LocalFleet

POLICY = make_policy(
    "demo-nightly", ScheduleKind.DAILY, times=["22:00"], retention=Retention(7, weekly=4)
)
# What each VM holds before its first backup, and how much of one VM changes before the next.
FILL_PERCENT = 10.0
CHANGE_PERCENT = 1.0
CHANGED_VM = "cs-app/app01"


def run_workflow(client: Client, fleet: LocalFleet, timeout: float) -> None:
    """Every step of the seed's workflow, printed as it goes."""
    click.echo("\n== Discovery")
    _follow([client.discover()], timeout)
    click.echo("\n== Register every VM (the seed's Register rows fail on purpose)")
    batch = client.register([vm.id for vm in client.vms()])
    echo_refusals(batch.refused)
    _follow(batch, timeout, quiet=True)
    click.echo(render.vm_table(client.vms(), client.vault.region))
    registered = [vm.id for vm in client.vms() if vm.registration == RegistrationState.REGISTERED]
    for vm_id in registered:
        fleet.write_disks(vm_id, percent=FILL_PERCENT, seed=1)

    click.echo(f"\n== Policy {POLICY.name}: {POLICY.describe()}")
    client.create_policy(POLICY)
    click.echo(f"\n== Protect {len(registered)} VMs, with an initial backup each")
    configured = _follow(client.protect(registered, POLICY.name, backup_now=True), timeout)
    initial = [client.handle(str(job.properties["initial_backup_job"])) for job in configured]
    _follow(initial, timeout, need=(JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_WARNINGS))

    written = sum(fleet.write_disks(CHANGED_VM, percent=CHANGE_PERCENT, seed=2).values())
    click.echo(f"\n== {CHANGED_VM} wrote {render.size(written)}; back it up again")
    [again] = _follow([client.backup_now(CHANGED_VM)], timeout)
    click.echo(
        f"Incremental: {render.size(int(again.properties['bytes_new']))} new in the vault of "
        f"{render.size(int(again.properties['backup_size_bytes']))} backed up "
        f"({again.properties['chunks_read']} of {again.properties['chunks']} chunks read)."
    )

    _restore_and_compare(client, fleet, timeout)
    click.echo("\n== Dashboard")
    click.echo(render.dashboard_text(client.dashboard()))
    click.echo("\n== VMs")
    click.echo(render.vm_table(client.vms(), client.vault.region))
    click.echo("\n== Jobs")
    click.echo(render.job_table(client.jobs()))


def _restore_and_compare(client: Client, fleet: LocalFleet, timeout: float) -> None:
    """Restore the changed VM's newest point and compare every disk with the VM's."""
    target = client.settings.restore_root / client.vault.name / "app01"
    click.echo(f"\n== Restore {CHANGED_VM}'s newest recovery point into {target}")
    [job] = _follow([client.restore(CHANGED_VM, "latest", target)], timeout)
    for path in (Path(name) for name in job.properties["files"]):
        original = fleet.vm_dir(CHANGED_VM) / path.name
        if not filecmp.cmp(path, original, shallow=False):
            raise DemoFailed(CHANGED_VM, f"restored {path} differs from {original}")
        shown = render.size(path.stat().st_size)
        click.echo(f"{path.name}: identical to the VM's disk, byte for byte ({shown})")


def _follow(
    handles: Sequence[JobHandle],
    timeout: float,
    need: tuple[JobStatus, ...] = (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_WARNINGS),
    quiet: bool = False,
) -> list[Job]:
    """Wait for jobs showing their progress; ``DemoFailed`` if one ends outside ``need``.

    ``quiet``: jobs expected to fail (the seed's rows) are only tabled, not checked.
    """
    finished = Waiter(handles, show=not quiet, timeout=timeout).run()
    click.echo(render.job_table(finished))
    if quiet:
        return finished
    for job in finished:
        if job.status not in need:
            why = error_from_dict(job.error).message if job.error else job.status.value
            raise DemoFailed(job.item_name, f"{job.operation.value} job {job.id}: {why}")
    return finished

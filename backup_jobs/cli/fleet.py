"""``backup-jobs fleet ...``: administer the local fleet and inject faults (no Redis needed)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click

from backup_jobs.cli import render
from backup_jobs.cli.common import FiniteRange, json_option, parsed_by
from backup_jobs.providers.local import MAX_DISK_BYTES, LocalFleet, agent_version
from backup_jobs.providers.local_demo import create_demo_fleet
from backup_jobs.providers.local_faults import (
    FAULT_KINDS,
    MAX_FAULT_SECONDS,
    MAX_FAULT_TIMES,
    Fault,
)
from backup_jobs.settings import Settings


def _fleet() -> LocalFleet:
    """The configured fleet; it must exist (``fleet create-demo`` makes one)."""
    fleet = LocalFleet(Settings.from_env().fleet_dir)
    fleet.require()
    return fleet


def _id(data: dict[str, Any]) -> str:
    return f"{data['cloud_service']}/{data['name']}"


@click.group("fleet")
def fleet_group() -> None:
    """Administer the local fleet: VMs, agents, disks and injected faults."""


@fleet_group.command("create-demo")
def fleet_create_demo() -> None:
    """Create the demo fleet: healthy VMs plus one per seed error row."""
    settings = Settings.from_env()
    fleet = create_demo_fleet(settings.fleet_dir, settings.region)
    click.echo(f"Created the demo fleet in {fleet.root} ({len(fleet.vm_files())} VMs).")


@fleet_group.command("list")
@json_option
def fleet_list(as_json: bool) -> None:
    """List the fleet's VMs as the provider sees them."""
    fleet = _fleet()
    vms = [fleet.load(path) for path in fleet.vm_files()]
    if as_json:
        render.emit_json(vms)
        return
    rows = [
        (
            _id(vm),
            vm["region"],
            vm["power_state"],
            vm["os_type"],
            vm["agent_version"] or "-",
            sum(d["kind"] == "data" for d in vm["disks"]),
            "yes" if vm.get("extension", {}).get("installed") else "no",
        )
        for vm in vms
    ]
    click.echo(
        render.table(("vm", "region", "power", "os", "agent", "data disks", "extension"), rows)
    )


def _set(vm: str, message: str, **changes: object) -> None:
    data = _fleet().update(vm, **changes)
    click.echo(f"{_id(data)}: {message}.")


@fleet_group.command("start")
@click.argument("vm")
def fleet_start(vm: str) -> None:
    """Start a VM (power state Running)."""
    _set(vm, "started", power_state="Running")


@fleet_group.command("stop")
@click.argument("vm")
def fleet_stop(vm: str) -> None:
    """Stop a VM (power state Stopped)."""
    _set(vm, "stopped", power_state="Stopped")


@fleet_group.command("delete")
@click.argument("vm")
def fleet_delete(vm: str) -> None:
    """Delete a VM and its disks from the fleet."""
    click.echo(f"{_fleet().delete_vm(vm)}: deleted from the fleet.")


@fleet_group.command("install-agent")
@click.argument("vm")
@click.option(
    "--version",
    "version",
    default="2.7.1198.800",
    show_default=True,
    callback=parsed_by(agent_version),
    help="2 to 4 dot-separated integers of up to 9 digits.",
)
def fleet_install_agent(vm: str, version: str) -> None:
    """Install (or upgrade) the VM agent."""
    _set(vm, f"VM agent {version} installed", agent_version=version)


@fleet_group.command("remove-agent")
@click.argument("vm")
def fleet_remove_agent(vm: str) -> None:
    """Remove the VM agent."""
    _set(vm, "VM agent removed", agent_version=None)


@fleet_group.command("add-disks")
@click.argument("vm")
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option(
    "--size-mib", default=16, show_default=True, type=click.IntRange(1, MAX_DISK_BYTES >> 20)
)
def fleet_add_disks(vm: str, count: int, size_mib: int) -> None:
    """Attach new sparse data disks."""
    data = _fleet().add_data_disks(vm, count, size_mib << 20)
    disks = sum(d["kind"] == "data" for d in data["disks"])
    click.echo(f"{_id(data)}: now has {disks} data disks.")


@fleet_group.command("write")
@click.argument("vm")
@click.option("--disk", help="Only this disk (e.g. os, data1); default: every disk.")
@click.option(
    "--mib",
    type=FiniteRange(0, MAX_DISK_BYTES >> 20, min_open=True),
    help="MiB to write per disk (at most its size; rounded up to whole 4 MiB runs).",
)
@click.option("--percent", type=FiniteRange(0, 100, min_open=True), help="Percent of each disk.")
def fleet_write(vm: str, disk: str | None, mib: float | None, percent: float | None) -> None:
    """Write random data at random places, as a running VM would (even during a backup)."""
    if (mib is None) == (percent is None):
        raise click.UsageError("Give exactly one of --mib or --percent.")
    nbytes = int(mib * (1 << 20)) if mib is not None else None
    written = _fleet().write_disks(vm, disk, nbytes=nbytes, percent=percent)
    for name, count in written.items():
        click.echo(f"{vm}: wrote {render.size(count)} to disk {name}.")


@fleet_group.group("fault")
def fault_group() -> None:
    """Inject faults: persistent in the fleet, consumed as they fire."""


@fault_group.command("set")
@click.argument("kind", type=click.Choice(FAULT_KINDS))
@click.option("--vm", help="Only for this VM (cloud_service/name or name); default: any.")
@click.option(
    "--times",
    type=click.IntRange(1, MAX_FAULT_TIMES),
    default=1,
    show_default=True,
    help="How often it fires.",
)
@click.option("--forever", is_flag=True, help="Fire every time until cleared.")
@click.option(
    "--seconds",
    type=FiniteRange(0, MAX_FAULT_SECONDS),
    default=0.0,
    help="Delay: of the -slow kinds, of each read for transfer-timeout.",
)
def fault_set(kind: str, vm: str | None, times: int, forever: bool, seconds: float) -> None:
    """Arm a fault."""
    fault = _fleet().arm(Fault(kind, vm, None if forever else times, seconds))
    click.echo(
        f"Armed {kind} for {fault.vm or 'any VM'} ({'forever' if forever else f'{times}x'})."
    )


@fault_group.command("list")
@json_option
def fault_list(as_json: bool) -> None:
    """List armed faults."""
    faults = _fleet().faults.armed()
    if as_json:
        render.emit_json([asdict(f) for f in faults])
        return
    rows = [
        (f.kind, f.vm or "any", "forever" if f.times is None else f.times, f.seconds)
        for f in faults
    ]
    click.echo(render.table(("kind", "vm", "times left", "seconds"), rows))


@fault_group.command("clear")
def fault_clear() -> None:
    """Disarm every fault."""
    click.echo(f"Cleared {_fleet().faults.clear()} faults.")

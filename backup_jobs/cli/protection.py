"""``backup-jobs policy ...``, ``protection ...`` and ``backup now``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import click

from backup_jobs.attention import Attention
from backup_jobs.cli import render
from backup_jobs.cli.common import client, json_option, parsed_by, wait_option
from backup_jobs.cli.inventory import started
from backup_jobs.cli.problems import warn_problems
from backup_jobs.client import Batch
from backup_jobs.dashboard import reason_filter
from backup_jobs.items import ProtectionState
from backup_jobs.policies import Policy, Retention, ScheduleKind, make_policy


def _policy_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that describe a policy (shared by create and update)."""
    options = [
        click.option("--daily", help="Daily at these times, e.g. 22:00 or 06:00,22:00."),
        click.option("--weekly", help="Weekly on these days (with --at), e.g. sun,wed."),
        click.option("--at", help="The time of a weekly schedule, e.g. 06:00."),
        click.option("--every", type=int, help="Every N hours (4, 6, 8 or 12), with --from/--for."),
        click.option("--from", "start", help="Start of the daily window of --every, e.g. 08:00."),
        click.option("--for", "window", type=int, help="Length of that window in hours (1-24)."),
        click.option("--timezone", default="UTC", show_default=True, help="IANA time zone."),
        click.option("--keep-days", type=int, required=True, help="Keep daily points N days."),
        click.option("--keep-weeks", type=int, default=0, help="Also keep N weekly points."),
        click.option("--keep-months", type=int, default=0, help="Also keep N monthly points."),
        click.option("--keep-years", type=int, default=0, help="Also keep N yearly points."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _build(name: str, options: dict[str, Any]) -> Policy:
    """A policy from the command's options; exactly one of --daily, --weekly, --every."""
    chosen = [flag for flag in ("daily", "weekly", "every") if options[flag] is not None]
    if len(chosen) != 1:
        raise click.UsageError("Give exactly one of --daily, --weekly or --every.")
    retention = Retention(
        options["keep_days"], options["keep_weeks"], options["keep_months"], options["keep_years"]
    )
    common: dict[str, Any] = {"retention": retention, "timezone": options["timezone"]}
    if options["daily"] is not None:
        return make_policy(name, ScheduleKind.DAILY, times=_split(options["daily"]), **common)
    if options["weekly"] is not None:
        if options["at"] is None:
            raise click.UsageError("--weekly needs --at HH:MM.")
        days = _split(options["weekly"])
        return make_policy(name, ScheduleKind.WEEKLY, times=[options["at"]], days=days, **common)
    if options["start"] is None or options["window"] is None:
        raise click.UsageError("--every needs --from HH:MM and --for HOURS.")
    return make_policy(
        name,
        ScheduleKind.HOURLY,
        times=[options["start"]],
        interval_hours=options["every"],
        window_hours=options["window"],
        **common,
    )


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@click.group("policy")
def policy_group() -> None:
    """Backup policies: when to back up (in a time zone) and how long to keep."""


@policy_group.command("create")
@click.argument("name")
@_policy_options
@json_option
def policy_create(name: str, as_json: bool, **options: Any) -> None:
    """Create a policy (daily at times, weekly on days, or every N hours in a window)."""
    policy = client().create_policy(_build(name, options))
    _show(policy, as_json, "Created")


@policy_group.command("update")
@click.argument("name")
@_policy_options
@json_option
def policy_update(name: str, as_json: bool, **options: Any) -> None:
    """Replace a policy's schedule and retention; its VMs follow from the next tick."""
    policy = client().update_policy(_build(name, options))
    _show(policy, as_json, "Updated")


def _show(policy: Policy, as_json: bool, verb: str) -> None:
    if as_json:
        render.emit_json(policy.to_dict())
    else:
        click.echo(f"{verb} policy {policy.name}: {policy.describe()}.")


@policy_group.command("list")
@json_option
def policy_list(as_json: bool) -> None:
    """List the vault's policies and how many VMs each protects."""
    c = client()
    policies = c.policies()
    used = Counter(view.item.policy for view in c.protected_items() if view.item.state.scheduled)
    if as_json:
        render.emit_json([{**p.to_dict(), "vms": used.get(p.name, 0)} for p in policies])
    else:
        click.echo(render.policy_table(policies, dict(used)))
    warn_problems(policies.problems)


@policy_group.command("show")
@click.argument("name")
@json_option
def policy_show(name: str, as_json: bool) -> None:
    """Show one policy and the VMs it protects."""
    c = client()
    policy = c.policy(name)
    vms = c.catalog.policy_items(c.vault.name, name)
    if as_json:
        render.emit_json({**policy.to_dict(), "vm_ids": vms})
        return
    click.echo(render.policy_table([policy], {name: len(vms)}))
    for vm_id in vms:
        click.echo(f"  {vm_id}")


@policy_group.command("delete")
@click.argument("name")
def policy_delete(name: str) -> None:
    """Delete a policy no VM uses."""
    client().delete_policy(name)
    click.echo(f"Deleted policy {name}.")


@click.group("protection")
def protection_group() -> None:
    """Protect VMs with a policy and see what is protected."""


@protection_group.command("set")
@click.argument("vms", nargs=-1, required=True)
@click.option("--policy", required=True, help="The policy to protect the VMs with.")
@click.option("--backup-now", is_flag=True, help="Start each VM's initial backup at once.")
@wait_option
@json_option
def protection_set(
    vms: tuple[str, ...], policy: str, backup_now: bool, wait: bool, as_json: bool
) -> None:
    """Start one ConfigureProtection job per VM (registered, in the vault's region)."""
    started(client().protect(vms, policy, backup_now=backup_now), wait, as_json)


@protection_group.command("stop")
@click.argument("vm")
@click.option("--keep-data", is_flag=True, help="Keep every recovery point (resumable).")
@click.option("--delete-data", is_flag=True, help="Delete every recovery point and the item.")
@wait_option
@json_option
def protection_stop(vm: str, keep_data: bool, delete_data: bool, wait: bool, as_json: bool) -> None:
    """Stop protecting a VM: no more backups; keep its recovery points, or delete them."""
    if keep_data == delete_data:
        raise click.UsageError("Give exactly one of --keep-data or --delete-data.")
    started(Batch([client().stop_protection(vm, keep_data=keep_data)]), wait, as_json)


@protection_group.command("resume")
@click.argument("vm")
@click.option("--policy", required=True, help="The policy to protect the VM with again.")
@wait_option
@json_option
def protection_resume(vm: str, policy: str, wait: bool, as_json: bool) -> None:
    """Resume a stopped protection under a policy; the next backup continues incrementally."""
    started(Batch([client().resume_protection(vm, policy)]), wait, as_json)


@protection_group.command("list")
@click.option(
    "--state",
    callback=parsed_by(ProtectionState.parse),
    help="Only items in this protection state (any case), e.g. ProtectionError.",
)
@click.option(
    "--needs-action",
    callback=parsed_by(reason_filter),
    help="Only items needing action for this reason (any case), or for any: "
    + ", ".join(["any", *(reason.value for reason in Attention)]),
)
@json_option
def protection_list(
    state: ProtectionState | None, needs_action: Attention | str | None, as_json: bool
) -> None:
    """Each protected VM: policy, protection, last backup, next run, points, health."""
    views = client().protected_items(state, needs_action)
    if as_json:
        render.emit_json([view.to_dict() for view in views])
    else:
        click.echo(render.item_table(views))
    warn_problems(views.problems)


@click.group("backup")
def backup_group() -> None:
    """On-demand backups."""


@backup_group.command("now")
@click.argument("vm")
@wait_option
@json_option
def backup_now(vm: str, wait: bool, as_json: bool) -> None:
    """Start a Backup job of a protected VM now."""
    started(Batch([client().backup_now(vm)]), wait, as_json)

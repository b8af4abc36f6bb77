"""Output for people (aligned tables) and for scripts (``--json``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import click

from backup_jobs.dashboard import Dashboard, Figure
from backup_jobs.errors import error_from_dict
from backup_jobs.items import ItemView, RecoveryPointRecord
from backup_jobs.models import VM, Job, SubTask
from backup_jobs.policies import Policy, Retention


def emit_json(value: Any) -> None:
    """Print ``value`` as indented JSON."""
    click.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain aligned text table; the last column may be long and is not padded."""
    cells = [[str(h).upper() for h in headers]] + [
        ["" if c is None else str(c) for c in r] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    return "\n".join(lines)


def short_time(value: datetime | None) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in UTC, or empty."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def clock_time(value: datetime, now: datetime) -> str:
    """``12:34:56 UTC``, with the date in front when it is not ``now``'s day."""
    if value.date() == now.date():
        return value.strftime("%H:%M:%S UTC")
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(span: timedelta) -> str:
    """A span the way people read it: ``45s``, ``1m20s``, ``14m``, ``2h05m`` (never negative)."""
    seconds = max(0, round(span.total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        minutes, rest = divmod(seconds, 60)
        return f"{minutes}m{rest:02d}s" if rest else f"{minutes}m"
    hours, rest = divmod(seconds // 60, 60)
    return f"{hours}h{rest:02d}m"


def vm_table(vms: Sequence[VM], region: str | None = None) -> str:
    """VMs with their registration and, when it failed, the error and what to do."""
    rows = []
    for vm in vms:
        state = "Deleted" if vm.deleted else vm.registration.value
        error = vm.last_error or {}
        note = ""
        if region and vm.region != region:
            note = f"not in the vault's region ({region}): not registrable here"
        elif error and not vm.deleted:
            note = f"{error['code']}: {error_from_dict(error).recommended_action}"
        rows.append(
            (
                vm.id,
                vm.region,
                vm.power_state.value,
                vm.os_type,
                vm.agent_version or "-",
                state,
                note,
            )
        )
    return table(("vm", "region", "power", "os", "agent", "registration", "error / action"), rows)


def job_table(jobs: Sequence[Job]) -> str:
    """Jobs, newest first, with their attempt and error code."""
    rows = [
        (
            job.id,
            job.operation.value,
            job.item_name,
            job.status.value,
            f"{job.attempt}/{job.max_attempts}",
            short_time(job.queued_at),
            "" if job.duration_seconds is None else f"{job.duration_seconds:.1f}s",
            (job.error or {}).get("code", ""),
        )
        for job in jobs
    ]
    return table(
        ("job", "operation", "item", "status", "attempt", "queued (utc)", "duration", "error"), rows
    )


def job_detail(job: Job) -> str:
    """One job in full: fields, error with its action, and every attempt."""
    lines = [
        f"Job {job.id}",
        f"  operation   {job.operation.value}",
        f"  item        {job.item_name}",
        f"  status      {job.status.value}",
        f"  attempt     {job.attempt} of {job.max_attempts}",
        f"  queued      {short_time(job.queued_at)}",
        f"  started     {short_time(job.started_at)}",
        f"  ended       {short_time(job.ended_at)}",
    ]
    if job.next_retry_at:
        lines.append(f"  next retry  {short_time(job.next_retry_at)}")
    if job.error:
        lines += [
            f"  error       {job.error['code']}",
            f"  message     {job.error['message']}",
            f"  action      {error_from_dict(job.error).recommended_action}",
        ]
    for warning in job.warnings:
        lines.append(f"  warning     {warning}")
    for key, value in sorted(job.properties.items()):
        lines.append(f"  {key:<11} {value}")
    if job.subtasks:
        lines.append("  sub-tasks:")
        lines += [f"    {subtask_line(st)}" for st in job.subtasks]
    lines.append("  attempts:")
    for a in job.attempts:
        code = (a.error or {}).get("code", "")
        lines.append(
            f"    #{a.number}  {a.status.value:<12} {short_time(a.started_at)} -> "
            f"{short_time(a.ended_at)}  {code}  task {a.celery_task_id}"
        )
    return "\n".join(lines)


def size(nbytes: int | float) -> str:
    """Bytes the way people read them: ``512 B``, ``1.5 MiB``, ``2.0 GiB``."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def subtask_line(step: SubTask) -> str:
    """``Transfer data to vault  InProgress  42.0%  1.2 GiB of 2.0 GiB  180.0 MiB/s  12s``."""
    parts = [f"{step.name:<24}", f"{step.status.value:<12}"]
    if step.progress_percent is not None:
        parts.append(f"{step.progress_percent:5.1f}%")
    if step.bytes_total:
        parts.append(f"{size(step.bytes_done)} of {size(step.bytes_total)}")
    if step.throughput_bytes_per_second:
        parts.append(f"{size(step.throughput_bytes_per_second)}/s")
    if step.duration_seconds is not None:
        parts.append(duration(timedelta(seconds=step.duration_seconds)))
    return "  ".join(parts).rstrip()


def progress_bar(step: SubTask, width: int = 30) -> str:
    """``[#########.....................]  30.0% Transfer data to vault (600 MiB of 2.0 GiB)``."""
    percent = step.progress_percent or 0.0
    filled = int(width * percent / 100)
    bar = "#" * filled + "." * (width - filled)
    tail = f" ({size(step.bytes_done)} of {size(step.bytes_total)})" if step.bytes_total else ""
    return f"[{bar}] {percent:5.1f}% {step.name}{tail}"


def policy_table(policies: Sequence[Policy], used: dict[str, int]) -> str:
    """Policies: schedule, zone, retention, how many VMs each protects."""
    rows = [(p.name, p.describe(), _retention(p.retention), used.get(p.name, 0)) for p in policies]
    return table(("policy", "schedule", "retention", "vms"), rows)


def _retention(r: Retention) -> str:
    parts = [f"{r.daily_days} days"]
    for count, unit in ((r.weekly, "weeks"), (r.monthly, "months"), (r.yearly, "years")):
        if count:
            parts.append(f"{count} {unit}")
    return ", ".join(parts)


def item_table(views: Sequence[ItemView]) -> str:
    """Protected items: policy, state, last backup, next run, health, recovery points."""
    rows = []
    for view in views:
        item, last = view.item, view.item.last_backup
        backup = (
            f"{short_time(last.at)} {last.status.value}"
            + (f" {last.consistency}" if last.consistency else "")
            + (f" {last.error_code}" if last.error_code else "")
            if last
            else "-"
        )
        rows.append(
            (
                item.vm_id,
                item.policy,
                item.state.shown,
                backup,
                short_time(view.next_run_at) or "-",
                item.recovery_points,
                _health(view),
            )
        )
    return table(
        ("vm", "policy", "protection", "last backup (utc)", "next run (utc)", "points", "health"),
        rows,
    )


def _health(view: ItemView) -> str:
    """The item's health, ActionNeeded with the reasons when something needs action."""
    if not view.needs_action:
        return view.item.health
    reasons = ", ".join(reason.value for reason in view.needs_action)
    health = view.item.health if view.item.health.startswith("ActionNeeded") else "ActionNeeded"
    return f"{health} [{reasons}]"


def recovery_point_table(points: Sequence[RecoveryPointRecord]) -> str:
    """A VM's recovery points, newest first."""
    rows = [
        (
            p.id,
            short_time(p.created_at),
            p.consistency,
            size(p.size_bytes),
            size(p.new_bytes),
            p.verify_state + (f" {short_time(p.verified_at)}" if p.verified_at else ""),
        )
        for p in points
    ]
    headers = ("recovery point", "created (utc)", "consistency", "size", "new in vault", "verified")
    return table(headers, rows)


def recovery_point_detail(point: RecoveryPointRecord) -> str:
    """One recovery point, field by field, and the command that restores it."""
    rows = [
        ("recovery point", point.id),
        ("vm", point.vm_id),
        ("created (utc)", short_time(point.created_at)),
        ("consistency", point.consistency),
        ("size", size(point.size_bytes)),
        ("new in vault", size(point.new_bytes)),
        ("policy", point.policy or "-"),
        ("backup job", point.job_id or "-"),
        (
            "verified",
            point.verify_state + (f" {short_time(point.verified_at)}" if point.verified_at else ""),
        ),
        *([("broken", point.broken_reason)] if point.broken_reason else []),
    ]
    width = max(len(name) for name, _ in rows)
    lines = [f"{name.ljust(width)}  {value}" for name, value in rows]
    lines.append(f"restore with: backup-jobs restore {point.vm_id} --point {point.id} --target DIR")
    return "\n".join(lines)


def dashboard_text(board: Dashboard) -> str:
    """The dashboard as sections of figures, each with the command that lists what it counts."""
    storage = board.storage
    if storage.stored_bytes is None:
        stored = f"unknown ({storage.unavailable})"
    else:
        stored = f"{size(storage.stored_bytes)} in {storage.chunks} chunks"
        stored += f" (logical/stored {storage.ratio}x)" if storage.ratio else ""
    [headline, *by_state] = board.protection
    [needing, *reasons] = board.attention
    sections = [
        (f"Vault {board.vault} at {short_time(board.at)} UTC", [headline, *by_state]),
        ("Jobs of the last 24 hours", list(board.jobs)),
        ("Items needing action", [needing, *reasons]),
    ]
    lines: list[str] = []
    for title, figures in sections:
        lines += [title, _figure_table(figures), ""]
    lines[lines.index("Jobs of the last 24 hours")] += f" ({board.in_progress} in progress)"
    lines += [
        "Vault storage",
        f"  recovery points  {storage.points}",
        f"  logical size     {size(storage.logical_bytes)}",
        f"  stored           {stored}",
    ]
    return "\n".join(lines)


def _figure_table(figures: Sequence[Figure]) -> str:
    rows = [(f"  {f.label}", f.value, f.command) for f in figures]
    return table(("", "count", "drill down"), rows)

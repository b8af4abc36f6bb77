"""The dashboard (the seed's Dashboard page) and the protected-item listing it drills into.

Every figure carries the filter of the listing it counts (``job list`` or ``protection list``,
and the same keywords for ``Client.jobs`` / ``Client.protected_items``), and is computed with
that same filter, so a figure always equals its listing. Pure over the catalog port; vault
storage figures read the vault directory when this process can reach it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from backup_jobs.attention import Attention, needs_action
from backup_jobs.catalog import Catalog
from backup_jobs.errors import BackupJobsError, ConfigurationError, CorruptRecord
from backup_jobs.items import ItemView, ProtectionState, RecoveryPointRecord
from backup_jobs.models import JobStatus, Listing, Problem, to_iso
from backup_jobs.vault import Vault

# ``needs_action`` of every reason at once.
ANY = "any"
# The window of the dashboard's job figures (the seed's "last 24 hours").
JOBS_WINDOW = timedelta(hours=24)
FINISHED = (
    JobStatus.COMPLETED,
    JobStatus.COMPLETED_WITH_WARNINGS,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
)
# Every status that is not final: the dashboard's "in progress" (DESIGN §3).
UNFINISHED = (
    JobStatus.QUEUED,
    JobStatus.IN_PROGRESS,
    JobStatus.WAITING_TO_RETRY,
    JobStatus.CANCELLING,
)


def reason_filter(text: str | Attention | None) -> Attention | str | None:
    """``needs_action`` as given: a reason in any spelling, ``any``, or None (no filter)."""
    if text is None or isinstance(text, Attention):
        return text
    if text.strip().lower() == ANY:
        return ANY
    try:
        return Attention(text)
    except ValueError:
        accepted = ", ".join([ANY, *(reason.value for reason in Attention)])
        raise ConfigurationError(
            detail=f"needs-action {text!r} is not valid; accepted: {accepted} (any case)"
        ) from None


def item_views(
    catalog: Catalog,
    vault: str,
    now: datetime,
    state: ProtectionState | None = None,
    reason: Attention | str | None = None,
) -> Listing[ItemView]:
    """The vault's protected items with their schedule and what needs action, filtered."""
    return _read_items(catalog, vault, now, state, reason)[0]


def _read_items(
    catalog: Catalog,
    vault: str,
    now: datetime,
    state: ProtectionState | None = None,
    reason: Attention | str | None = None,
) -> tuple[Listing[ItemView], list[RecoveryPointRecord]]:
    """``item_views``, and the recovery points of the items listed (read once for both)."""
    items = catalog.list_items(vault)
    problems: list[Problem] = list(items.problems)
    views = []
    listed_points: list[RecoveryPointRecord] = []
    for item in items:
        if state is not None and item.state != state:
            continue
        try:
            events = catalog.events(vault, item.vm_id)
            points = catalog.recovery_points(vault, item.vm_id)
        except CorruptRecord as exc:  # shown without them, and named, never blocking the rest
            problems.append(Problem(exc.item, exc.detail, "list protected items", now))
            events, points = [], Listing()
        problems.extend(points.problems)
        reasons = needs_action(item, events, points, now)
        if reason is not None and not (reasons if reason == ANY else reason in reasons):
            continue
        views.append(ItemView(item, catalog.next_run(vault, item.vm_id), events, reasons))
        listed_points.extend(points)
    return Listing(views, problems), listed_points


@dataclass(frozen=True)
class Figure:
    """One number of the dashboard and the listing that shows what it counts."""

    label: str
    value: int
    listing: str  # "job" or "protection": the noun of the CLI command
    filter: dict[str, str] = field(default_factory=dict)
    command: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "label": self.label,
            "value": self.value,
            "listing": self.listing,
            "filter": self.filter,
            "command": self.command,
        }


@dataclass(frozen=True)
class Storage:
    """The vault's storage: what the points describe against what the vault holds."""

    points: int
    logical_bytes: int
    stored_bytes: int | None
    chunks: int | None
    unavailable: str | None = None

    @property
    def ratio(self) -> float | None:
        """Logical bytes per stored byte (deduplication and compression together)."""
        if not self.stored_bytes:
            return None
        return round(self.logical_bytes / self.stored_bytes, 2)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "points": self.points,
            "logical_bytes": self.logical_bytes,
            "stored_bytes": self.stored_bytes,
            "chunks": self.chunks,
            "ratio": self.ratio,
            "unavailable": self.unavailable,
        }


@dataclass(frozen=True)
class Dashboard:
    """The seed's Dashboard page for one vault at one time."""

    vault: str
    at: datetime
    protection: tuple[Figure, ...]
    jobs: tuple[Figure, ...]
    attention: tuple[Figure, ...]
    storage: Storage
    problems: list[Problem] = field(default_factory=list)

    @property
    def in_progress(self) -> int:
        """Jobs of the window in any non-final status."""
        unfinished = {status.value for status in UNFINISHED}
        return sum(f.value for f in self.jobs if f.filter.get("status") in unfinished)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``dashboard --json``)."""
        return {
            "vault": self.vault,
            "at": to_iso(self.at),
            "protection": [f.to_dict() for f in self.protection],
            "jobs_last_24h": [f.to_dict() for f in self.jobs],
            "jobs_in_progress": self.in_progress,
            "needs_action": [f.to_dict() for f in self.attention],
            "storage": self.storage.to_dict(),
            "problems": [p.to_dict() for p in self.problems],
        }


def build_dashboard(
    catalog: Catalog, vault: str, vault_dir: Path | None, now: datetime
) -> Dashboard:
    """Every figure of the dashboard, each with the filter that drills into it."""
    views, points = _read_items(catalog, vault, now)
    since = now - JOBS_WINDOW
    protection = [
        _items_figure("Protected items", len(views)),
        *(
            _items_figure(state.shown, sum(1 for v in views if v.item.state == state), state=state)
            for state in ProtectionState
        ),
    ]
    job_figures = [
        _jobs_figure(status, catalog.count_jobs(vault, status=status, since=since), since)
        for status in (*FINISHED, *UNFINISHED)
    ]
    attention = [
        _items_figure("Items needing action", sum(1 for v in views if v.needs_action), reason=ANY),
        *(
            _items_figure(
                reason.shown, sum(1 for v in views if reason in v.needs_action), reason=reason
            )
            for reason in Attention
        ),
    ]
    return Dashboard(
        vault,
        now,
        tuple(protection),
        tuple(job_figures),
        tuple(attention),
        _storage(points, vault_dir),
        views.problems,
    )


def _items_figure(
    label: str,
    value: int,
    state: ProtectionState | None = None,
    reason: Attention | str | None = None,
) -> Figure:
    shown: dict[str, str] = {}
    if state is not None:
        shown["state"] = state.value
    if reason is not None:
        shown["needs_action"] = str(reason)
    options = " ".join(f"--{name.replace('_', '-')} {value}" for name, value in shown.items())
    command = f"backup-jobs protection list {options}".rstrip()
    return Figure(label, value, "protection", shown, command)


def _jobs_figure(status: JobStatus, value: int, since: datetime) -> Figure:
    chosen = {"status": status.value, "since": since.isoformat()}
    hours = f"{JOBS_WINDOW.total_seconds() / 3600:.0f}h"
    command = f"backup-jobs job list --status {status.value} --since {shlex.quote(hours)}"
    return Figure(status.value, value, "job", chosen, command)


def _storage(points: list[RecoveryPointRecord], vault_dir: Path | None) -> Storage:
    """Logical bytes from the catalog's points; stored bytes from the vault, if reachable."""
    logical = sum(p.size_bytes for p in points)
    if vault_dir is None or not (vault_dir / "config.json").exists():
        where = vault_dir or "(unknown)"
        return Storage(len(points), logical, None, None, f"no vault at {where} from here")
    try:
        chunks, stored = Vault.open(vault_dir).store.usage()
    except (BackupJobsError, OSError) as exc:
        return Storage(len(points), logical, None, None, f"{vault_dir}: {exc}")
    return Storage(len(points), logical, stored, chunks)

"""Which protected items need action, and why: the dashboard's "items needing action".

A pure judgement over an item, its skipped or missed runs and its recovery points, at a time.
Each reason is a filter of ``protection list --needs-action REASON`` too, so the dashboard's
count and the listing it drills into are the same rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from backup_jobs.items import (
    ProtectedItem,
    ProtectionState,
    RecoveryPointRecord,
    RunOutcome,
    ScheduleEvent,
)
from backup_jobs.models import JobStatus, ParsedEnum

# A point still unverified this long after it was made: verify is not running (it is daily).
UNVERIFIED_AFTER = timedelta(days=2)
# Protected this long without a first recovery point: the initial backup is not happening.
PENDING_AFTER = timedelta(hours=24)
BROKEN = "Broken"
UNVERIFIED = "Unverified"


class Attention(ParsedEnum):
    """Why a protected item needs action."""

    FAILED_BACKUP = "FailedBackup"
    MISSED_RUNS = "MissedRuns"
    BROKEN_POINTS = "BrokenPoints"
    UNVERIFIED_POINTS = "UnverifiedPoints"
    STUCK_PENDING = "StuckPending"

    @property
    def shown(self) -> str:
        """How the dashboard labels it."""
        return _SHOWN[self]


_SHOWN = {
    Attention.FAILED_BACKUP: "Last backup failed",
    Attention.MISSED_RUNS: "Missed scheduled runs",
    Attention.BROKEN_POINTS: "Broken recovery points",
    Attention.UNVERIFIED_POINTS: f"Points unverified after {UNVERIFIED_AFTER.days} days",
    Attention.STUCK_PENDING: (
        f"Pending initial backup over {PENDING_AFTER.total_seconds() / 3600:.0f} h"
    ),
}


def needs_action(
    item: ProtectedItem,
    events: Sequence[ScheduleEvent],
    points: Sequence[RecoveryPointRecord],
    now: datetime,
) -> tuple[Attention, ...]:
    """Every reason ``item`` needs action at ``now`` (none: it is fine)."""
    found = []
    if item.state == ProtectionState.ERROR:
        found.append(Attention.FAILED_BACKUP)
    last = item.last_backup
    last_good = (
        last.at
        if last and last.status in (JobStatus.COMPLETED, JobStatus.COMPLETED_WITH_WARNINGS)
        else None
    )
    if item.state.scheduled and any(
        e.outcome == RunOutcome.MISSED and (last_good is None or e.scheduled_at > last_good)
        for e in events
    ):
        found.append(Attention.MISSED_RUNS)
    if any(p.verify_state == BROKEN for p in points):
        found.append(Attention.BROKEN_POINTS)
    if any(p.verify_state == UNVERIFIED and now - p.created_at > UNVERIFIED_AFTER for p in points):
        found.append(Attention.UNVERIFIED_POINTS)
    if (
        item.state == ProtectionState.PENDING
        and item.protected_at is not None
        and now - item.protected_at > PENDING_AFTER
    ):
        found.append(Attention.STUCK_PENDING)
    return tuple(found)

"""Retention as a pure function, with Proxmox Backup Server's prune semantics.

Points are considered newest first. ``keep_last`` keeps the newest N; then ``keep_hourly``,
``keep_daily``, ``keep_weekly`` (ISO weeks), ``keep_monthly`` and ``keep_yearly``, in that
order, each keep the newest point of each of the newest N periods that no earlier rule already
covers. Periods are computed in the policy's time zone. With no rule at all, everything is
kept. Invariant: the newest good point is never selected for removal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class PointInfo:
    """What retention needs of a recovery point."""

    id: str
    created_at: datetime
    good: bool = True


@dataclass(frozen=True)
class RetentionPolicy:
    """How many points, or periods, to keep; 0 means the rule is off."""

    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    timezone: str = "UTC"

    @property
    def keeps_everything(self) -> bool:
        """True when no rule is set."""
        return not any(
            (
                self.keep_last,
                self.keep_hourly,
                self.keep_daily,
                self.keep_weekly,
                self.keep_monthly,
                self.keep_yearly,
            )
        )


@dataclass(frozen=True)
class Selection:
    """The outcome: ids to keep and ids to remove (both newest first)."""

    keep: tuple[str, ...]
    remove: tuple[str, ...]


def _periods(tz: ZoneInfo) -> list[tuple[str, Callable[[datetime], str]]]:
    def local(fmt: str) -> Callable[[datetime], str]:
        return lambda t: t.astimezone(tz).strftime(fmt)

    def iso_week(t: datetime) -> str:
        year, week, _ = t.astimezone(tz).isocalendar()
        return f"{year}/{week:02d}"

    return [
        ("keep_hourly", local("%Y/%m/%d/%H")),
        ("keep_daily", local("%Y/%m/%d")),
        ("keep_weekly", iso_week),
        ("keep_monthly", local("%Y/%m")),
        ("keep_yearly", local("%Y")),
    ]


def select(points: Sequence[PointInfo], policy: RetentionPolicy) -> Selection:
    """Which points the policy keeps and which it removes."""
    ordered = sorted(points, key=lambda p: p.created_at, reverse=True)
    if policy.keeps_everything:
        return Selection(tuple(p.id for p in ordered), ())
    keep: set[str] = {p.id for p in ordered[: policy.keep_last]}
    marked: set[str] = set(keep)
    for name, period_of in _periods(ZoneInfo(policy.timezone)):
        limit = getattr(policy, name)
        if limit <= 0:
            continue
        covered = {period_of(p.created_at) for p in ordered if p.id in keep}
        chosen: set[str] = set()
        for point in ordered:
            if point.id in marked:
                continue
            period = period_of(point.created_at)
            if period in covered:
                continue
            if period not in chosen:
                if len(chosen) >= limit:
                    break
                chosen.add(period)
                keep.add(point.id)
            marked.add(point.id)
    newest_good = next((p for p in ordered if p.good), None)
    if newest_good is not None:
        keep.add(newest_good.id)
    return Selection(
        tuple(p.id for p in ordered if p.id in keep),
        tuple(p.id for p in ordered if p.id not in keep),
    )

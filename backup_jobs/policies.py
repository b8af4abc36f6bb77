"""Backup policies: when to back up (a schedule in an IANA time zone) and how long to keep.

Pure: validation and next-run arithmetic, no Redis, no Celery. A policy's times are wall-clock
times in its own zone, and the arithmetic follows the zone's daylight-saving rules:

- a time that does not exist on a spring-forward day (02:30 in Europe/Berlin on the last
  Sunday of March) runs shifted by the gap, at 03:30 local, once;
- a time that exists twice on a fall-back day (02:30 on the last Sunday of October) runs once,
  at its first occurrence (summer time);
- "every N hours" is N hours of wall-clock time from the window's start (00:00, 04:00, ...),
  so on a transition day two runs are N ± 1 real hours apart, as a user reading a clock
  expects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import IntEnum, StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from backup_jobs.errors import InvalidPolicy

# The intervals "every N hours" allows: they divide a day, as Azure's hourly policies do.
HOURLY_INTERVALS = (4, 6, 8, 12)
# Azure keeps daily points up to 9999 days; more is a typo.
MAX_RETENTION_DAYS = 9999
MAX_RETENTION_COUNT = 9999
# Daily policies run at most this many times a day (use "every N hours" for more).
MAX_DAILY_TIMES = 6
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
# How many days ahead next_run looks: a weekly schedule always has a run within 8.
_HORIZON_DAYS = 8


class ScheduleKind(StrEnum):
    """How often a policy runs."""

    DAILY = "Daily"
    WEEKLY = "Weekly"
    HOURLY = "Hourly"


class Weekday(IntEnum):
    """Days of the week, Monday = 0 as ``date.weekday()`` counts them."""

    MON = 0
    TUE = 1
    WED = 2
    THU = 3
    FRI = 4
    SAT = 5
    SUN = 6


@dataclass(frozen=True)
class Schedule:
    """When a policy runs, in wall-clock times of its zone.

    Daily: at each of ``times``. Weekly: at ``times[0]`` on each of ``days``. Hourly: every
    ``interval_hours`` from ``times[0]`` (the window's start) for ``window_hours``, window end
    excluded.
    """

    kind: ScheduleKind
    times: tuple[time, ...]
    days: tuple[Weekday, ...] = ()
    interval_hours: int = 0
    window_hours: int = 0

    def local_times(self, day: date) -> list[time]:
        """The wall-clock times this schedule runs at on ``day``.

        An hourly window repeats every day, so a window that runs past midnight gives the same
        times every day (20:00, 00:00, 04:00 for 20:00 + 12 h every 4 h).
        """
        if self.kind == ScheduleKind.WEEKLY:
            return list(self.times) if Weekday(day.weekday()) in self.days else []
        if self.kind == ScheduleKind.DAILY:
            return sorted(self.times)
        start = self.times[0]
        return sorted(
            time((start.hour + offset) % 24, start.minute)
            for offset in range(0, self.window_hours, self.interval_hours)
        )


@dataclass(frozen=True)
class Retention:
    """How long recovery points are kept: daily points N days, plus long-term counts."""

    daily_days: int
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0


@dataclass(frozen=True)
class Policy:
    """A named schedule plus retention, in an IANA time zone."""

    name: str
    schedule: Schedule
    retention: Retention
    timezone: str = "UTC"
    created_at: datetime | None = field(default=None, compare=False)

    @property
    def zone(self) -> ZoneInfo:
        """The policy's time zone."""
        return ZoneInfo(self.timezone)

    def describe(self) -> str:
        """The schedule in a few words, for tables."""
        s = self.schedule
        hhmm = ", ".join(t.strftime("%H:%M") for t in s.times)
        if s.kind == ScheduleKind.DAILY:
            return f"daily at {hhmm} {self.timezone}"
        if s.kind == ScheduleKind.WEEKLY:
            days = ",".join(d.name.capitalize() for d in s.days)
            return f"weekly {days} at {hhmm} {self.timezone}"
        return f"every {s.interval_hours} h for {s.window_hours} h from {hhmm} {self.timezone}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON record."""
        s, r = self.schedule, self.retention
        return {
            "version": 1,
            "name": self.name,
            "timezone": self.timezone,
            "schedule": {
                "kind": s.kind.value,
                "times": [t.strftime("%H:%M") for t in s.times],
                "days": [d.name for d in s.days],
                "interval_hours": s.interval_hours,
                "window_hours": s.window_hours,
            },
            "retention": {
                "daily_days": r.daily_days,
                "weekly": r.weekly,
                "monthly": r.monthly,
                "yearly": r.yearly,
            },
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        """Rebuild (and validate) from ``to_dict``."""
        s, r = data["schedule"], data["retention"]
        created = data.get("created_at")
        return make_policy(
            data["name"],
            ScheduleKind(s["kind"]),
            times=s["times"],
            days=s["days"],
            interval_hours=s["interval_hours"],
            window_hours=s["window_hours"],
            timezone=data["timezone"],
            retention=Retention(r["daily_days"], r["weekly"], r["monthly"], r["yearly"]),
            created_at=datetime.fromisoformat(created) if created else None,
        )


def make_policy(
    name: str,
    kind: ScheduleKind,
    *,
    times: list[str] | tuple[str, ...],
    retention: Retention,
    timezone: str = "UTC",
    days: list[str] | tuple[str, ...] = (),
    interval_hours: int = 0,
    window_hours: int = 0,
    created_at: datetime | None = None,
) -> Policy:
    """A validated policy; ``InvalidPolicy`` naming the field that is wrong and why."""
    _check_types(name, kind, times, retention, timezone, days)
    kind = ScheduleKind(kind)
    _check_name(name)
    _check_zone(name, timezone)
    parsed = tuple(_parse_time(name, text) for text in times)
    schedule = Schedule(kind, parsed, _parse_days(name, kind, days), interval_hours, window_hours)
    _check_schedule(name, schedule)
    _check_retention(name, retention)
    return Policy(name, schedule, retention, timezone, created_at)


def checked_policy(policy: object) -> Policy:
    """``policy`` as ``make_policy`` would build it: a ``Policy`` built by hand is checked too.

    ``TypeError`` if it is not a ``Policy``; ``InvalidPolicy`` naming the field otherwise.
    """
    if not isinstance(policy, Policy):
        raise TypeError(f"a Policy (from policies.make_policy) is needed, not {policy!r}")
    name = policy.name if isinstance(policy.name, str) else repr(policy.name)
    try:
        return Policy.from_dict(policy.to_dict())
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise InvalidPolicy(name, f"a field has a wrong type or value ({exc})") from exc


def next_run(policy: Policy, after: datetime) -> datetime:
    """The first scheduled run strictly after ``after`` (UTC, timezone-aware)."""
    zone = policy.zone
    start = after.astimezone(zone).date() - timedelta(days=1)
    for offset in range(_HORIZON_DAYS + 2):
        day = start + timedelta(days=offset)
        for at in _runs_on(policy.schedule, day, zone):
            if at > after:
                return at
    raise AssertionError(f"policy {policy.name} has no run within {_HORIZON_DAYS} days")


def runs_between(policy: Policy, start: datetime, end: datetime) -> list[datetime]:
    """Every scheduled run in ``(start, end]``, in order (for tests and missed-run reports)."""
    runs = []
    at = next_run(policy, start)
    while at <= end:
        runs.append(at)
        at = next_run(policy, at)
    return runs


def _runs_on(schedule: Schedule, day: date, zone: ZoneInfo) -> list[datetime]:
    """The UTC instants of the runs scheduled on local ``day`` (one per wall-clock time)."""
    return sorted({_instant(day, t, zone) for t in schedule.local_times(day)})


def _instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The UTC instant of a wall-clock time: fold=0 picks the first of two, shifts a gap."""
    local = datetime.combine(day, at, tzinfo=zone)
    return local.astimezone(UTC)


def _check_types(
    name: object, kind: object, times: object, retention: object, timezone: object, days: object
) -> None:
    """``InvalidPolicy`` (or ``TypeError`` for a name that is not text) for a field of the
    wrong type, before any other check meets it."""
    if not isinstance(name, str):
        raise TypeError(f"a policy's name is text, not {name!r}")
    if kind not in {k.value for k in ScheduleKind}:
        accepted = ", ".join(k.value for k in ScheduleKind)
        raise InvalidPolicy(name, f"kind: {kind!r} is not one of {accepted}")
    for field_name, values in (("times", times), ("days", days)):
        if isinstance(values, str) or not isinstance(values, list | tuple):
            raise InvalidPolicy(name, f"{field_name}: a list of text values, not {values!r}")
        if not all(isinstance(value, str) for value in values):
            raise InvalidPolicy(name, f"{field_name}: every value is text, e.g. '22:00', 'sun'")
    if not isinstance(timezone, str):
        raise InvalidPolicy(name, f"timezone: {timezone!r} is not an IANA time zone name")
    if not isinstance(retention, Retention):
        raise InvalidPolicy(name, f"retention: a Retention, not {retention!r}")
    for field_name in ("daily_days", "weekly", "monthly", "yearly"):
        value = getattr(retention, field_name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidPolicy(name, f"retention.{field_name}: {value!r} is not a whole number")


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise InvalidPolicy(
            name,
            "name: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )


def _check_zone(name: str, timezone: str) -> None:
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidPolicy(
            name, f"timezone: {timezone!r} is not an IANA time zone (e.g. Europe/Berlin, UTC)"
        ) from exc


def _parse_time(name: str, text: str) -> time:
    match = _TIME.match(text.strip())
    if not match:
        raise InvalidPolicy(name, f"time: {text!r} is not a time of day HH:MM (00:00 to 23:59)")
    return time(int(match.group(1)), int(match.group(2)))


def _parse_days(
    name: str, kind: ScheduleKind, days: list[str] | tuple[str, ...]
) -> tuple[Weekday, ...]:
    parsed = []
    for text in days:
        key = text.strip().upper()[:3]
        if key not in Weekday.__members__:
            raise InvalidPolicy(name, f"days: {text!r} is not a day of the week (mon ... sun)")
        if Weekday[key] in parsed:
            raise InvalidPolicy(name, f"days: {text!r} is given twice")
        parsed.append(Weekday[key])
    if kind == ScheduleKind.WEEKLY and not parsed:
        raise InvalidPolicy(name, "days: a weekly schedule needs at least one day")
    if kind != ScheduleKind.WEEKLY and parsed:
        raise InvalidPolicy(
            name, f"days: only a weekly schedule has days, not a {kind.value.lower()} one"
        )
    return tuple(sorted(set(parsed)))


def _check_schedule(name: str, s: Schedule) -> None:
    if not s.times:
        raise InvalidPolicy(name, "times: give at least one time of day")
    if len(set(s.times)) != len(s.times):
        raise InvalidPolicy(name, "times: a time is given twice")
    if s.kind == ScheduleKind.DAILY and len(s.times) > MAX_DAILY_TIMES:
        raise InvalidPolicy(
            name, f"times: at most {MAX_DAILY_TIMES} a day; use an hourly schedule for more"
        )
    if s.kind in (ScheduleKind.WEEKLY, ScheduleKind.HOURLY) and len(s.times) != 1:
        raise InvalidPolicy(name, f"times: a {s.kind.value.lower()} schedule has one time")
    if s.kind == ScheduleKind.HOURLY:
        _check_window(name, s)
    elif s.interval_hours or s.window_hours:
        raise InvalidPolicy(name, "interval: only an hourly schedule has an interval and a window")


def _check_window(name: str, s: Schedule) -> None:
    if s.interval_hours not in HOURLY_INTERVALS:
        accepted = ", ".join(str(h) for h in HOURLY_INTERVALS)
        raise InvalidPolicy(name, f"interval: every {s.interval_hours} h is not one of {accepted}")
    if not 1 <= s.window_hours <= 24:
        raise InvalidPolicy(name, f"window: {s.window_hours} h is not 1 to 24 hours")
    if s.window_hours % s.interval_hours:
        raise InvalidPolicy(
            name,
            f"window: the interval ({s.interval_hours} h) does not divide the window "
            f"({s.window_hours} h)",
        )


def _check_retention(name: str, r: Retention) -> None:
    if not 1 <= r.daily_days <= MAX_RETENTION_DAYS:
        raise InvalidPolicy(
            name, f"retention.daily_days: {r.daily_days} is not 1 to {MAX_RETENTION_DAYS} days"
        )
    for label, count in (("weekly", r.weekly), ("monthly", r.monthly), ("yearly", r.yearly)):
        if not 0 <= count <= MAX_RETENTION_COUNT:
            raise InvalidPolicy(
                name, f"retention.{label}: {count} is not 0 to {MAX_RETENTION_COUNT}"
            )

"""Policies: validation naming the field, and next runs across DST in the policy's zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backup_jobs.errors import InvalidPolicy
from backup_jobs.policies import (
    Policy,
    Retention,
    ScheduleKind,
    make_policy,
    next_run,
    runs_between,
)

KEEP = Retention(daily_days=30)


def _daily(times: list[str], zone: str) -> Policy:
    return make_policy("p", ScheduleKind.DAILY, times=times, retention=KEEP, timezone=zone)


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "times", "after", "expected"),
    [
        # An ordinary day: 22:00 in Berlin (CET, +01:00) is 21:00 UTC.
        ("Europe/Berlin", ["22:00"], "2026-01-10 12:00", "2026-01-10 21:00"),
        ("Europe/Berlin", ["22:00"], "2026-01-10 21:00", "2026-01-11 21:00"),  # strictly after
        # Summer time: 22:00 CEST (+02:00) is 20:00 UTC.
        ("Europe/Berlin", ["22:00"], "2026-07-01 00:00", "2026-07-01 20:00"),
        # Spring forward (2026-03-29, 02:00 -> 03:00): 02:30 does not exist; runs at 03:30 CEST.
        ("Europe/Berlin", ["02:30"], "2026-03-28 12:00", "2026-03-29 01:30"),
        ("Europe/Berlin", ["02:30"], "2026-03-29 01:30", "2026-03-30 00:30"),
        # Fall back (2026-10-25, 03:00 -> 02:00): 02:30 exists twice; runs once, the first time.
        ("Europe/Berlin", ["02:30"], "2026-10-24 12:00", "2026-10-25 00:30"),
        ("Europe/Berlin", ["02:30"], "2026-10-25 00:30", "2026-10-26 01:30"),
        # New York: spring forward 2026-03-08 02:00 -> 03:00; fall back 2026-11-01 02:00 -> 01:00.
        ("America/New_York", ["02:30"], "2026-03-07 12:00", "2026-03-08 07:30"),
        ("America/New_York", ["02:30"], "2026-03-08 07:30", "2026-03-09 06:30"),
        ("America/New_York", ["01:30"], "2026-10-31 12:00", "2026-11-01 05:30"),
        ("America/New_York", ["01:30"], "2026-11-01 05:30", "2026-11-02 06:30"),
        # Several times a day, in order, across midnight UTC.
        ("America/New_York", ["06:00", "22:00"], "2026-01-10 12:00", "2026-01-11 03:00"),
    ],
)
def test_next_daily_run_follows_the_zone_across_daylight_saving(
    zone: str, times: list[str], after: str, expected: str
) -> None:
    assert next_run(_daily(times, zone), _utc(after)) == _utc(expected)


@pytest.mark.parametrize(
    ("zone", "day", "runs"),
    [
        ("Europe/Berlin", "2026-03-29", 1),  # a time that does not exist runs once
        ("Europe/Berlin", "2026-10-25", 1),  # a time that exists twice runs once
        ("America/New_York", "2026-03-08", 1),
        ("America/New_York", "2026-11-01", 1),
    ],
)
def test_a_transition_day_has_exactly_one_run_of_a_daily_time_in_its_odd_hour(
    zone: str, day: str, runs: int
) -> None:
    policy = _daily(["02:30" if zone == "Europe/Berlin" else "01:30"], zone)
    start = datetime.fromisoformat(day).replace(tzinfo=policy.zone)

    found = runs_between(policy, start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC))

    assert len(found) == runs


def test_weekly_runs_on_its_days_at_its_time() -> None:
    policy = make_policy(
        "w",
        ScheduleKind.WEEKLY,
        times=["06:00"],
        days=["sun", "Wed"],
        retention=KEEP,
        timezone="Europe/Berlin",
    )

    runs = runs_between(policy, _utc("2026-01-05 00:00"), _utc("2026-01-19 00:00"))

    assert [r.astimezone(policy.zone).strftime("%a %H:%M") for r in runs] == [
        "Wed 06:00",
        "Sun 06:00",
        "Wed 06:00",
        "Sun 06:00",
    ]


def test_every_n_hours_counts_wall_clock_hours_and_wraps_a_window_past_midnight() -> None:
    policy = make_policy(
        "h",
        ScheduleKind.HOURLY,
        times=["20:00"],
        interval_hours=4,
        window_hours=12,
        retention=KEEP,
        timezone="Europe/Berlin",
    )
    day = datetime(2026, 3, 29, tzinfo=policy.zone)  # spring forward at 02:00
    second = timedelta(seconds=1)

    runs = runs_between(
        policy, (day - second).astimezone(UTC), (day + timedelta(days=1) - second).astimezone(UTC)
    )

    assert [r.astimezone(policy.zone).strftime("%H:%M") for r in runs] == [
        "00:00",
        "04:00",
        "20:00",
    ]
    assert runs[1] - runs[0] == timedelta(hours=3)  # four hours on the clock, three real


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"times": ["25:00"]}, "time:"),
        ({"times": ["7pm"]}, "time:"),
        ({"times": []}, "times:"),
        ({"times": ["06:00", "06:00"]}, "times:"),
        ({"timezone": "Mars/Olympus"}, "timezone:"),
        ({"retention": Retention(daily_days=0)}, "retention.daily_days:"),
        ({"retention": Retention(daily_days=7, weekly=-1)}, "retention.weekly:"),
        ({"kind": ScheduleKind.HOURLY, "interval_hours": 5, "window_hours": 10}, "interval:"),
        ({"kind": ScheduleKind.HOURLY, "interval_hours": 4, "window_hours": 10}, "window:"),
        ({"kind": ScheduleKind.WEEKLY}, "days:"),
        ({"kind": ScheduleKind.WEEKLY, "days": ["funday"]}, "days:"),
        ({"days": ["mon"]}, "days:"),
        ({"name": "no spaces please"}, "name:"),
        ({"kind": "Sometimes"}, "kind:"),
        ({"times": "22:00"}, "times:"),
        ({"times": [100]}, "times:"),
        ({"timezone": None}, "timezone:"),
        ({"retention": 7}, "retention:"),
        ({"retention": Retention("5")}, "retention.daily_days:"),  # type: ignore[arg-type]
        ({"kind": ScheduleKind.WEEKLY, "days": "sun"}, "days:"),
        ({"kind": ScheduleKind.WEEKLY, "days": ["sun", "Sunday"]}, "days:"),
    ],
)
def test_an_invalid_policy_is_refused_naming_the_field(
    changes: dict[str, object], field: str
) -> None:
    args: dict[str, object] = {
        "name": "p",
        "kind": ScheduleKind.DAILY,
        "times": ["22:00"],
        "retention": KEEP,
        "timezone": "UTC",
        **changes,
    }
    name, kind = args.pop("name"), args.pop("kind")

    with pytest.raises(InvalidPolicy) as raised:
        make_policy(name, kind, **args)  # type: ignore[arg-type]

    assert field in raised.value.message


def test_a_policy_survives_its_json_record() -> None:
    policy = make_policy(
        "h",
        ScheduleKind.HOURLY,
        times=["08:00"],
        interval_hours=6,
        window_hours=12,
        retention=Retention(7, 4, 12, 2),
        timezone="America/New_York",
    )

    assert Policy.from_dict(policy.to_dict()) == policy
    assert policy.describe() == "every 6 h for 12 h from 08:00 America/New_York"

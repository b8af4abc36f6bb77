"""Retention: Proxmox semantics, table-driven, with a fixed set of points."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backup_jobs.vault.retention import PointInfo, RetentionPolicy, select

START = datetime(2026, 1, 1, 22, 0, tzinfo=UTC)  # a Thursday
# Two points a day (22:00 and 23:30 UTC) for 60 days, newest last.
POINTS = [
    PointInfo(f"p{day:02d}{half}", START + timedelta(days=day, minutes=90 * half))
    for day in range(60)
    for half in (0, 1)
]


def _kept(policy: RetentionPolicy) -> list[str]:
    return list(select(POINTS, policy).keep)


def test_no_rule_keeps_everything() -> None:
    assert len(_kept(RetentionPolicy())) == len(POINTS)


def test_keep_last_keeps_the_newest_n() -> None:
    assert _kept(RetentionPolicy(keep_last=3)) == ["p591", "p590", "p581"]


def test_keep_daily_keeps_the_newest_point_of_each_of_the_newest_days() -> None:
    assert _kept(RetentionPolicy(keep_daily=3)) == ["p591", "p581", "p571"]


def test_rules_apply_in_order_and_skip_periods_already_covered() -> None:
    kept = _kept(RetentionPolicy(keep_last=2, keep_daily=2))

    # keep_last covers day 59 (both points); keep_daily then takes days 58 and 57.
    assert kept == ["p591", "p590", "p581", "p571"]


def test_weekly_uses_iso_weeks_and_monthly_calendar_months() -> None:
    weekly = select(POINTS, RetentionPolicy(keep_weekly=2)).keep
    monthly = select(POINTS, RetentionPolicy(keep_monthly=5)).keep

    assert [p.created_at.isocalendar()[1] for p in POINTS if p.id in weekly] == [8, 9]
    assert [p.created_at.month for p in POINTS if p.id in monthly] == [1, 2, 3]


def test_periods_are_computed_in_the_policys_time_zone() -> None:
    # In Tokyo (UTC+9) 22:00 and 23:30 UTC fall on the next local day, both on the same one.
    utc = _kept(RetentionPolicy(keep_daily=2))
    tokyo = _kept(RetentionPolicy(keep_daily=2, timezone="Asia/Tokyo"))

    assert utc == tokyo == ["p591", "p581"]
    berlin_split = [
        PointInfo("late", datetime(2026, 3, 1, 22, 30, tzinfo=UTC)),  # 23:30 local, Mar 1
        PointInfo("later", datetime(2026, 3, 1, 23, 30, tzinfo=UTC)),  # 00:30 local, Mar 2
    ]
    assert select(berlin_split, RetentionPolicy(keep_daily=2, timezone="Europe/Berlin")).keep == (
        "later",
        "late",
    )
    assert select(berlin_split, RetentionPolicy(keep_daily=2)).keep == ("later",)


def test_the_newest_good_point_is_never_removed() -> None:
    points = [
        PointInfo("good", START, good=True),
        PointInfo("bad", START + timedelta(hours=1), good=False),
    ]

    selection = select(points, RetentionPolicy(keep_last=1))

    assert selection.keep == ("bad", "good")
    assert selection.remove == ()


@pytest.mark.parametrize("keep_last", [1, 5, 200])
def test_keep_and_remove_partition_the_points(keep_last: int) -> None:
    selection = select(POINTS, RetentionPolicy(keep_last=keep_last, keep_monthly=1))

    assert sorted(selection.keep + selection.remove) == sorted(p.id for p in POINTS)
    assert not set(selection.keep) & set(selection.remove)

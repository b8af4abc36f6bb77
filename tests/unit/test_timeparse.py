"""``since`` as people write it: durations, ISO times and datetimes, with one-line refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from backup_jobs.errors import ConfigurationError
from backup_jobs.timeparse import parse_since, since

NOW = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW - timedelta(minutes=30)),
        ("24h", NOW - timedelta(hours=24)),
        (" 7d ", NOW - timedelta(days=7)),
        ("90s", NOW - timedelta(seconds=90)),
        ("2026-01-01T00:00:00", datetime(2026, 1, 1, tzinfo=UTC)),
        ("2026-01-01T02:00:00+02:00", datetime(2026, 1, 1, tzinfo=UTC)),
    ],
)
def test_durations_count_back_from_now_and_iso_times_are_utc_unless_zoned(
    text: str, expected: datetime
) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("yesterday", "not valid"),
        ("24 hours", "not valid"),
        ("-5m", "not valid"),
        ("999999d", "too far back"),
        ("99999999999999999999d", "too far back"),
    ],
)
def test_garbage_and_overflowing_durations_are_refused_with_the_accepted_forms(
    text: str, why: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        parse_since(text, NOW)

    assert f"since={text!r} is {why}; accepted: 30m, 24h, 7d" in raised.value.message


def test_since_takes_text_datetimes_and_nothing() -> None:
    tz = timezone(timedelta(hours=2))

    assert since("24h", NOW) == NOW - timedelta(hours=24)
    assert since(datetime(2026, 1, 1), NOW) == datetime(2026, 1, 1, tzinfo=UTC)
    assert since(datetime(2026, 1, 1, tzinfo=tz), NOW) == datetime(2026, 1, 1, tzinfo=tz)
    assert since(None, NOW) is None

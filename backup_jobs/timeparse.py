"""Points in time as people write them: ``30m``, ``24h``, ``7d`` ago, or an ISO 8601 time.

The CLI's ``--since``, ``--until`` and ``--before`` and ``Client.jobs(since=..., until=...,
before=...)`` read the same spellings through here.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from backup_jobs.errors import ConfigurationError

ACCEPTED = "30m, 24h, 7d (s, m, h or d ago) or an ISO 8601 time"
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def since(value: str | datetime | None, now: datetime, name: str = "since") -> datetime | None:
    """``value`` as an aware time: a duration before ``now``, an ISO time, or a datetime.

    A time without a zone is UTC. ``name`` is the parameter an error names.
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return _aware(value)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a datetime or a str such as '24h', not {value!r}")
    return parse_since(value, now, name)


def parse_since(text: str, now: datetime, name: str = "since") -> datetime:
    """``24h``, ``30m``, ``7d`` before ``now``, or an ISO 8601 time (UTC if no zone)."""
    value = text.strip()
    match = _DURATION.match(value)
    try:
        if match:
            amount, unit = match.groups()
            return now - timedelta(**{_UNITS[unit]: int(amount)})
        return _aware(datetime.fromisoformat(value))
    except OverflowError:
        raise _refused(name, text, "too far back") from None
    except ValueError:
        raise _refused(name, text, "not valid") from None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _refused(name: str, text: str, why: str) -> ConfigurationError:
    return ConfigurationError(detail=f"{name}={text!r} is {why}; accepted: {ACCEPTED}")

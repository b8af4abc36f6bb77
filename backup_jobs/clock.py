"""The clock port: time comes in as an argument so that tests can freeze it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol

from backup_jobs.models import utcnow


class Clock(Protocol):
    """Tells the time (UTC)."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        return utcnow()


class FrozenClock:
    """A clock that moves only when told; for tests."""

    def __init__(self, start: datetime) -> None:
        self._now = start

    def now(self) -> datetime:
        """The frozen time."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self._now += timedelta(seconds=seconds)

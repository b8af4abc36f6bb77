"""``--wait``: what it prints while jobs run, wait to retry, are queued again and fail."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from backup_jobs.cli import render
from backup_jobs.cli.waiting import Waiter
from backup_jobs.clock import FrozenClock
from backup_jobs.errors import DiscoveryInternalError, VMNotRunning
from backup_jobs.models import Attempt, Job, JobStatus, Operation

T0 = datetime(2026, 4, 1, 9, 0, tzinfo=UTC)


def _job(status: JobStatus, **changes: object) -> Job:
    base = Job("j1", "v", Operation.REGISTER, "cs-app/app01", "cs-app/app01", T0, 3)
    return base.evolve(status=status, **changes)


@dataclass
class ScriptedHandle:
    """A job handle whose record follows a script: (status until this many seconds, record)."""

    clock: FrozenClock
    script: list[tuple[float, Job]]
    id: str = "j1"

    def job(self) -> Job:
        elapsed = (self.clock.now() - T0).total_seconds()
        return next(job for until, job in self.script if elapsed < until)


def _follow(script: list[tuple[float, Job]], capsys: pytest.CaptureFixture[str]) -> list[str]:
    clock = FrozenClock(T0)
    handle = ScriptedHandle(clock, script)
    Waiter([handle], show=True, now=clock.now, sleep=clock.advance).run()  # type: ignore[list-item]
    return capsys.readouterr().err.splitlines()


def test_a_long_step_gets_its_line_again_every_ten_seconds_with_the_time_spent(
    capsys: pytest.CaptureFixture[str],
) -> None:
    running = _job(JobStatus.IN_PROGRESS, attempt=1, attempts=(Attempt(1, T0),))

    lines = _follow([(25, running), (float("inf"), _job(JobStatus.COMPLETED))], capsys)

    assert [line.split(maxsplit=3)[3] for line in lines] == [
        "InProgress",
        "InProgress (10s)",
        "InProgress (20s)",
        "Completed",
    ]
    assert lines[0].startswith("2026-04-01 09:00:00  cs-app/app01")


def test_the_time_spent_counts_from_the_attempt_start_in_the_record(
    capsys: pytest.CaptureFixture[str],
) -> None:
    started = T0 - timedelta(minutes=1, seconds=10)
    running = _job(JobStatus.IN_PROGRESS, attempt=1, attempts=(Attempt(1, started),))

    lines = _follow([(10.1, running), (float("inf"), _job(JobStatus.COMPLETED))], capsys)

    assert lines[0].endswith("InProgress (1m10s)")
    assert lines[1].endswith("InProgress (1m20s)")


def test_a_job_waiting_to_retry_says_why_and_when_the_next_attempt_is_due(
    capsys: pytest.CaptureFixture[str],
) -> None:
    error = DiscoveryInternalError("v", "injected").to_dict()
    waiting = _job(
        JobStatus.WAITING_TO_RETRY, error=error, next_retry_at=T0 + timedelta(minutes=14)
    )

    lines = _follow([(12, waiting), (float("inf"), _job(JobStatus.COMPLETED))], capsys)

    assert lines[0].endswith("WaitingToRetry, next attempt at 09:14:00 UTC (in 14m)")
    assert lines[1] == f"  error: DiscoveryInternalError: {error['message']}"
    assert lines[2] == "  what to do: Retry the discovery process after 15 minutes."
    assert lines[3].endswith("WaitingToRetry, next attempt at 09:14:00 UTC (in 13m50s)")


def test_a_status_held_over_five_minutes_gets_its_line_every_minute(
    capsys: pytest.CaptureFixture[str],
) -> None:
    running = _job(JobStatus.IN_PROGRESS, attempt=1, attempts=(Attempt(1, T0),))

    lines = _follow([(430, running), (float("inf"), _job(JobStatus.COMPLETED))], capsys)

    shown = [line.split(maxsplit=3)[3] for line in lines]
    assert shown[29:] == [
        "InProgress (4m50s)",
        "InProgress (5m50s)",
        "InProgress (6m50s)",
        "Completed",
    ]


def test_a_job_queued_again_between_attempts_is_followed_like_any_other_status(
    capsys: pytest.CaptureFixture[str],
) -> None:
    requeued = _job(JobStatus.QUEUED, attempt=1, attempts=(Attempt(1, T0, ended_at=T0),))

    lines = _follow([(11, requeued), (float("inf"), _job(JobStatus.COMPLETED))], capsys)

    assert [line.split(maxsplit=3)[3] for line in lines] == [
        "Queued",
        "Queued (10s)",
        "Completed",
    ]


def test_a_failed_job_prints_its_message_and_what_to_do_not_just_the_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    error = VMNotRunning("cs-app/app01", "power state: Stopped").to_dict()

    lines = _follow([(float("inf"), _job(JobStatus.FAILED, error=error))], capsys)

    assert lines[1] == f"  error: VMNotRunning: {error['message']}"
    assert lines[2].startswith("  what to do: Start the virtual machine")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45, "45s"), (80, "1m20s"), (840, "14m"), (7500, "2h05m"), (-3, "0s")],
)
def test_durations_read_the_way_people_say_them(seconds: float, text: str) -> None:
    assert render.duration(timedelta(seconds=seconds)) == text


def test_a_next_attempt_on_another_day_shows_the_date() -> None:
    assert render.clock_time(T0 + timedelta(days=1), T0) == "2026-04-02 09:00:00 UTC"
    assert render.clock_time(T0, T0) == "09:00:00 UTC"


def test_a_job_that_completed_with_warnings_prints_each_warning(
    capsys: pytest.CaptureFixture[str],
) -> None:
    warned = _job(
        JobStatus.COMPLETED_WITH_WARNINGS,
        warnings=("cs-app/bad01: vm.json is not valid JSON", "cs-app/bad02: no disks"),
    )

    lines = _follow([(float("inf"), warned)], capsys)

    assert lines[1:] == [
        "  warning: cs-app/bad01: vm.json is not valid JSON",
        "  warning: cs-app/bad02: no disks",
    ]

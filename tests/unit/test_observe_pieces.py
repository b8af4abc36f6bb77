"""The exporter's duration histogram, health's report lines and the heartbeat's life."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from backup_jobs import wire
from backup_jobs.models import Job, JobStatus, Operation
from backup_jobs.runtime.exporter import DURATION_BUCKETS, duration_histogram
from backup_jobs.runtime.health import Check, render

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _job(
    seconds: float | None,
    operation: Operation = Operation.BACKUP,
    status: JobStatus = JobStatus.COMPLETED,
) -> Job:
    ended = None if seconds is None else T0 + timedelta(seconds=seconds)
    return Job(
        "j",
        "v",
        operation,
        "cs/vm",
        "cs/vm",
        T0,
        3,
        status=status,
        started_at=T0,
        ended_at=ended,
    )


def test_the_duration_histogram_is_cumulative_per_operation_and_status_with_count_and_sum() -> None:
    recent = [
        _job(0.5),
        _job(10),
        _job(4000),
        _job(2, Operation.REGISTER, status=JobStatus.FAILED),
        _job(None),  # never started: no duration, not counted
    ]
    family = duration_histogram(recent)

    assert family.type == "gaugehistogram"
    backup = {
        s.labels.get("le", s.name.rsplit("_", 1)[-1]): s.value
        for s in family.samples
        if s.labels["operation"] == "Backup"
    }
    assert backup["1.0"] == 1 and backup["15.0"] == 2 and backup["3600.0"] == 2
    assert backup["7200.0"] == 3 and backup["+Inf"] == 3
    assert backup["gcount"] == 3 and backup["gsum"] == 4010.5
    assert len(backup) == len(DURATION_BUCKETS) + 3
    failed = [s for s in family.samples if s.labels.get("status") == "Failed"]
    assert {s.labels["operation"] for s in failed} == {"Register"}


def test_health_lines_say_ok_or_fail_and_the_action_only_when_failing() -> None:
    text = render(
        [
            Check("redis", True, "answered in 0.3 ms", "start Redis"),
            Check("beat", False, "no heartbeat within 30 s", "beat is not running"),
        ]
    )

    assert text.splitlines() == [
        "ok    redis          answered in 0.3 ms",
        "FAIL  beat           no heartbeat within 30 s -- beat is not running",
    ]


def test_a_heartbeat_outlives_three_ticks_and_at_least_thirty_seconds() -> None:
    assert wire.heartbeat_ttl_seconds(0.5) == 30
    assert wire.heartbeat_ttl_seconds(10) == 31
    assert wire.heartbeat_ttl_seconds(3600) == 10801

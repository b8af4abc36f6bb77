"""Domain values: names read in any spelling and printed one way; old records still load."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from backup_jobs.errors import ConfigurationError
from backup_jobs.models import Job, JobStatus, Operation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Register", Operation.REGISTER),
        ("register", Operation.REGISTER),
        ("REGISTER", Operation.REGISTER),
        ("discovery", Operation.DISCOVERY),
        ("Failed", JobStatus.FAILED),
        ("failed", JobStatus.FAILED),
        ("InProgress", JobStatus.IN_PROGRESS),
        ("in-progress", JobStatus.IN_PROGRESS),
        ("in_progress", JobStatus.IN_PROGRESS),
        ("inprogress", JobStatus.IN_PROGRESS),
        ("completed-with-warnings", JobStatus.COMPLETED_WITH_WARNINGS),
        ("waiting_to_retry", JobStatus.WAITING_TO_RETRY),
    ],
)
def test_names_are_read_in_any_case_and_with_or_without_separators(
    text: str, expected: Operation | JobStatus
) -> None:
    assert type(expected).parse(text) is expected


def test_operations_print_in_the_seeds_spelling() -> None:
    assert [op.value for op in Operation] == [
        "Discovery",
        "Register",
        "ConfigureProtection",
        "Backup",
        "Restore",
        "StopProtection",
        "DeleteBackupData",
        "Prune",
        "Verify",
        "GarbageCollect",
    ]
    assert Operation.parse("garbage-collect") == Operation.GARBAGE_COLLECT
    assert Operation.parse("configure-protection") == Operation.CONFIGURE_PROTECTION
    assert str(Operation.parse("register")) == "Register"


@pytest.mark.parametrize(
    ("enum", "text", "accepted"),
    [
        (Operation, "restores", "Discovery, Register, ConfigureProtection, Backup, Restore"),
        (JobStatus, "done", "Queued, InProgress, WaitingToRetry"),
        (JobStatus, "", "Failed, Cancelled"),
    ],
)
def test_an_unknown_name_is_refused_with_the_accepted_values(
    enum: type[Operation] | type[JobStatus], text: str, accepted: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        enum.parse(text)

    assert repr(text) in raised.value.message and accepted in raised.value.message


def test_a_job_record_written_with_the_old_lower_case_operation_still_loads() -> None:
    job = Job("j1", "v", Operation.REGISTER, "cs/a", "cs/a", datetime(2026, 1, 1, tzinfo=UTC), 3)
    old = {**job.to_dict(), "operation": "register"}

    loaded = Job.from_dict(old)

    assert loaded.operation is Operation.REGISTER
    assert loaded.to_dict()["operation"] == "Register"

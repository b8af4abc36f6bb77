"""CLI pieces: tables, time filters, exit codes of waited jobs; the embedded server's state file."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backup_jobs import connection
from backup_jobs.cli import render
from backup_jobs.cli.common import _outcome, parse_since
from backup_jobs.errors import ConfigurationError, OperationInProgress
from backup_jobs.models import VM, Job, JobStatus, Operation, utcnow
from backup_jobs.runtime import embedded
from backup_jobs.settings import Settings


def _job(status: JobStatus, error: dict[str, object] | None = None) -> Job:
    return Job(
        "j1",
        "v",
        Operation.REGISTER,
        "cs/a",
        "cs/a",
        datetime(2026, 1, 1, tzinfo=UTC),
        3,
        status=status,
        error=error,
    )


def test_table_aligns_columns_and_upper_cases_headers() -> None:
    text = render.table(("vm", "state"), [("cs/a", "Registered"), ("cs/longer-name", None)])

    lines = text.splitlines()
    assert lines[0].split() == ["VM", "STATE"]
    assert lines[1].index("Registered") == lines[0].index("STATE")
    assert lines[2].rstrip() == "cs/longer-name"


def test_vm_table_shows_the_error_action_and_other_regions() -> None:
    failed = VM(
        "a", "cs", "r1", last_error=OperationInProgress("cs/a", "Running job: x.").to_dict()
    )
    elsewhere = VM("b", "cs", "r2")

    text = render.vm_table([failed, elsewhere], region="r1")

    assert "OperationInProgress: Wait for the running job or cancel it." in text
    assert "not in the vault's region (r1)" in text


def test_job_detail_lists_every_attempt() -> None:
    text = render.job_detail(
        _job(JobStatus.FAILED, {"code": "X", "message": "m", "recommended_action": "a"})
    )

    assert "error       X" in text and "action      a" in text and "attempts:" in text


def test_since_accepts_durations_and_iso_times() -> None:
    assert abs((utcnow() - timedelta(hours=24)) - parse_since("24h")).total_seconds() < 5  # type: ignore[operator]
    assert parse_since("2026-01-01T00:00:00") == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_since(None) is None
    with pytest.raises(ConfigurationError, match="--since 'yesterday'"):
        parse_since("yesterday")


def test_waited_jobs_exit_with_the_code_of_their_error() -> None:
    assert _outcome([_job(JobStatus.COMPLETED)]) == 0
    assert _outcome([_job(JobStatus.FAILED, {"code": "VMNotRunning"})]) == 2
    assert _outcome([_job(JobStatus.FAILED, {"code": "OperationInProgress"})]) == 4


def test_a_state_file_of_a_dead_server_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "server.json").write_text(
        json.dumps({"version": 1, "pid": 2**22 + 12345, "port": 1})
    )

    assert embedded.find(tmp_path) is None
    with pytest.raises(ConfigurationError, match="no embedded server runs"):
        connection.resolve_redis_url(Settings(data_dir=tmp_path))


def test_the_redis_url_setting_wins_over_the_state_file(tmp_path: Path) -> None:
    settings = Settings(redis_url="redis://127.0.0.1:6399/3", data_dir=tmp_path)

    assert connection.resolve_redis_url(settings) == "redis://127.0.0.1:6399/3"


def test_redacted_urls_keep_everything_but_the_password() -> None:
    from backup_jobs.catalogs.redis import redact

    assert redact("redis://:s3cret@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact("redis://user:s3cret@127.0.0.1:6379/0") == "redis://user:***@127.0.0.1:6379/0"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"

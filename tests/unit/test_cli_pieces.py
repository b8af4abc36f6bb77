"""CLI pieces: tables, option values, refusals, exit codes of waited jobs; the server state file."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from backup_jobs import connection
from backup_jobs.cli import render
from backup_jobs.cli.common import echo_refusals, outcome
from backup_jobs.cli.main import cli
from backup_jobs.client import Refusal
from backup_jobs.errors import (
    ConfigurationError,
    OperationInProgress,
    RegionMismatch,
    VMNotFoundInInventory,
)
from backup_jobs.models import VM, Job, JobStatus, Operation
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

    assert "OperationInProgress: Wait for the running job to end" in text
    assert "not in the vault's region (r1)" in text


def test_job_detail_lists_every_attempt() -> None:
    text = render.job_detail(
        _job(JobStatus.FAILED, {"code": "X", "message": "m", "recommended_action": "a"})
    )

    assert "error       X" in text and "action      a" in text and "attempts:" in text


def test_waited_jobs_exit_with_the_code_of_their_error() -> None:
    assert outcome([_job(JobStatus.COMPLETED)]) == 0
    assert outcome([_job(JobStatus.FAILED, {"code": "VMNotRunning"})]) == 8
    assert outcome([_job(JobStatus.FAILED, {"code": "OperationInProgress"})]) == 4


def test_waited_batch_exits_with_its_most_severe_failure_whatever_the_order() -> None:
    batch = [
        _job(JobStatus.FAILED, {"code": "VMNotRunning"}),
        _job(JobStatus.COMPLETED),
        _job(JobStatus.FAILED, {"code": "DiscoveryInternalError"}),
        _job(JobStatus.FAILED, {"code": "OperationInProgress"}),
    ]

    assert outcome(batch) == 6
    assert outcome(batch[::-1]) == 6


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


@pytest.mark.parametrize(
    ("option", "value", "accepted"),
    [
        ("--operation", "restores", "accepted: Discovery, Register, ConfigureProtection, Backup"),
        ("--status", "broken", "accepted: Queued, InProgress, WaitingToRetry"),
        ("--since", "yesterday", "accepted: 30m, 24h, 7d"),
        ("--since", "999999d", "too far back"),
    ],
)
def test_a_bad_operation_status_or_since_is_a_usage_error_naming_the_accepted_values(
    option: str, value: str, accepted: str
) -> None:
    result = CliRunner().invoke(cli, ["job", "list", option, value])

    assert result.exit_code == 2
    assert accepted in result.output and "Traceback" not in result.output


def test_quiet_and_json_together_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["job", "list", "-q", "--json"])

    assert result.exit_code == 2
    assert "--quiet and --json cannot be used together" in result.output


def test_each_refusal_prints_the_name_it_was_given_the_error_and_what_to_do(
    capsys: pytest.CaptureFixture[str],
) -> None:
    echo_refusals(
        [
            Refusal("far01", RegionMismatch("cs3/far01", "VM in r2")),
            Refusal("", VMNotFoundInInventory("")),
        ]
    )

    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("refused far01: RegionMismatch: cs3/far01: The VM is not")
    assert lines[1] == "  what to do: Register it with a vault in the VM's region."
    assert lines[2].startswith("refused '': VMNotFoundInInventory: No VM with this name")
    assert lines[3].startswith("  what to do: Run `backup-jobs vm discover`")


def test_an_unexpected_error_is_one_line_with_its_traceback_kept_in_a_file(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from backup_jobs.cli import main as cli_main

    def broken() -> None:
        raise RuntimeError("a bug in a command")

    monkeypatch.setattr(cli_main.cli, "main", lambda **_: broken())

    with pytest.raises(SystemExit) as exited:
        cli_main.main(["vm", "list"])
    err = capsys.readouterr().err

    assert exited.value.code == 1
    assert err.startswith("error: InternalError: ") and "RuntimeError: a bug in a command" in err
    assert "Traceback" not in err
    saved = Path(err.split("traceback saved in ")[1].split(".txt")[0] + ".txt")
    assert "RuntimeError: a bug in a command" in saved.read_text()
    saved.unlink()


def test_an_argument_that_is_not_utf8_is_a_usage_error_not_an_internal_one(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A name with a byte that is not UTF-8 (argv keeps it as a lone surrogate) reached Redis's
    # command packer: UnicodeEncodeError, "This is a bug", exit 1, from vm register, job show,
    # backup now, restore and every other command that looks a name or an id up.
    from backup_jobs.cli import main as cli_main

    with pytest.raises(SystemExit) as exited:
        cli_main.main(["vm", "register", "cs/app\udcff"])
    err = capsys.readouterr().err

    assert exited.value.code == 2
    assert "argument 'cs/app\\xff' is not valid UTF-8" in err
    assert "InternalError" not in err

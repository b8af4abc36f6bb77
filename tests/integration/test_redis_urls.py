"""Every kind of bad Redis URL or Redis error is one line naming the variable, never a traceback."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from backup_jobs import errors
from tests.harness import run_cli


def _port(url: str) -> int:
    return urlsplit(url).port or 6379


@pytest.mark.parametrize(
    ("make_url", "error", "says"),
    [
        (lambda url: "garbage", errors.ConfigurationError, "the scheme must be one of"),
        (lambda url: f"http://127.0.0.1:{_port(url)}/0", errors.ConfigurationError, "not 'http'"),
        (lambda url: "redis://127.0.0.1:99999/0", errors.ConfigurationError, "Port out of range"),
        (lambda url: "redis://127.0.0.1:0/0", errors.ConfigurationError, "port 0"),
        (
            lambda url: f"redis://127.0.0.1:{_port(url)}/x",
            errors.ConfigurationError,
            "not a number",
        ),
        (lambda url: f"{url.rsplit('/', 1)[0]}/9999", errors.ConfigurationError, "database"),
        (lambda url: "redis://127.0.0.1:1/0", errors.RedisUnavailable, "Connection refused"),
        (lambda url: "unix:///nowhere.sock", errors.RedisUnavailable, "No such file"),
    ],
    ids=["garbage", "http", "port-range", "port-0", "db-name", "db-range", "refused", "socket"],
)
def test_a_bad_redis_url_is_one_line_naming_the_variable(
    scratch_url: str,
    tmp_path: Path,
    make_url: Callable[[str], str],
    error: type[errors.BackupJobsError],
    says: str,
) -> None:
    url = make_url(scratch_url)
    env = {**os.environ, "BACKUP_JOBS_REDIS_URL": url, "BACKUP_JOBS_DATA_DIR": str(tmp_path)}

    result = run_cli("vm", "list", env=env)

    assert result.returncode == error().exit_code, result.stderr
    assert result.stderr.startswith(f"error: {error.__name__}: ")
    assert "BACKUP_JOBS_REDIS_URL" in result.stderr and says in result.stderr
    assert "Traceback" not in result.stderr and ".." not in result.stderr

"""Settings from the environment: defaults, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from backup_jobs.errors import ConfigurationError
from backup_jobs.settings import Settings


def test_defaults_follow_the_seed() -> None:
    settings = Settings.from_env({})

    assert settings.retry_delay_seconds == 900
    assert settings.max_data_disks == 5
    assert settings.redis_url is None
    assert settings.data_dir == Path(".backup-jobs")
    assert settings.fleet_dir == Path(".backup-jobs/fleet")


def test_fleet_and_vault_dirs_follow_the_data_dir() -> None:
    settings = Settings.from_env({"BACKUP_JOBS_DATA_DIR": "/srv/bj"})

    assert settings.fleet_dir == Path("/srv/bj/fleet")
    assert settings.vault_dir == Path("/srv/bj/vault")


@pytest.mark.parametrize(
    ("variable", "value", "accepted"),
    [
        ("BACKUP_JOBS_RETRY_DELAY_SECONDS", "soon", "a number >= 0"),
        ("BACKUP_JOBS_MAX_ATTEMPTS", "0", "a number >= 1"),
        ("BACKUP_JOBS_PROVIDER", "vmware", "local"),
        ("BACKUP_JOBS_VAULT", "my vault", "letters, digits"),
        ("BACKUP_JOBS_SNAPSHOT_TIMEOUT_SECONDS", "-1", "a number >= 1"),
    ],
)
def test_bad_value_names_the_variable_and_the_accepted_values(
    variable: str, value: str, accepted: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env({variable: value})

    assert f"{variable}={value!r}" in raised.value.message
    assert accepted in raised.value.message


def test_flower_user_without_password_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="FLOWER_PASSWORD"):
        Settings.from_env({"BACKUP_JOBS_FLOWER_USER": "admin"})

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
        ("BACKUP_JOBS_RETRY_DELAY_SECONDS", "soon", "a whole number from 0 to 604800"),
        ("BACKUP_JOBS_MAX_ATTEMPTS", "0", "a whole number from 1 to 100"),
        ("BACKUP_JOBS_PROVIDER", "vmware", "local, libvirt"),
        ("BACKUP_JOBS_VAULT", "my vault", "letters, digits"),
        ("BACKUP_JOBS_SNAPSHOT_TIMEOUT_SECONDS", "-1", "a whole number from 1 to 604800"),
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


NUMERIC = {
    "BACKUP_JOBS_RETRY_DELAY_SECONDS": "a whole number from 0 to 604800",
    "BACKUP_JOBS_MAX_ATTEMPTS": "a whole number from 1 to 100",
    "BACKUP_JOBS_MAX_DATA_DISKS": "a whole number from 0 to 64",
    "BACKUP_JOBS_LEASE_TTL_SECONDS": "a whole number from 2 to 3600",
    "BACKUP_JOBS_TICK_SECONDS": "a number from 0.2 to 3600",
    "BACKUP_JOBS_DISCOVERY_TIMEOUT_SECONDS": "a whole number from 1 to 604800",
    "BACKUP_JOBS_INSTALL_AGENT_TIMEOUT_SECONDS": "a whole number from 1 to 604800",
    "BACKUP_JOBS_SNAPSHOT_TIMEOUT_SECONDS": "a whole number from 1 to 604800",
    "BACKUP_JOBS_TRANSFER_TIMEOUT_SECONDS": "a whole number from 1 to 604800",
    "BACKUP_JOBS_RESTORE_TIMEOUT_SECONDS": "a whole number from 1 to 604800",
    "BACKUP_JOBS_FLOWER_PORT": "a whole number from 1 to 65535",
    "BACKUP_JOBS_EXPORTER_PORT": "a whole number from 1 to 65535",
    "BACKUP_JOBS_WORKER_CONCURRENCY": "a whole number from 1 to 256",
    "BACKUP_JOBS_QUEUED_TIMEOUT_SECONDS": "a whole number from 60 to 604800",
    "BACKUP_JOBS_RESTART_DELAY_SECONDS": "a number from 0.1 to 30",
    "BACKUP_JOBS_START_WINDOW_SECONDS": "a whole number from 60 to 86400",
    "BACKUP_JOBS_PRUNE_EVERY_SECONDS": "a whole number from 60 to 2592000",
    "BACKUP_JOBS_VERIFY_EVERY_SECONDS": "a whole number from 60 to 2592000",
    "BACKUP_JOBS_GC_EVERY_SECONDS": "a whole number from 60 to 2592000",
    "BACKUP_JOBS_GC_MARGIN_SECONDS": "a whole number from 0 to 86400",
    "BACKUP_JOBS_JOB_HISTORY_DAYS": "a whole number from 1 to 3650",
}


def test_maintenance_runs_hourly_and_daily_by_default_and_gc_keeps_a_five_minute_margin() -> None:
    settings = Settings.from_env({})

    assert (settings.prune_every_seconds, settings.verify_every_seconds) == (3600, 86400)
    assert (settings.gc_every_seconds, settings.gc_margin_seconds) == (86400, 300)
    assert Settings.from_env({"BACKUP_JOBS_GC_MARGIN_SECONDS": "0"}).gc_margin_seconds == 0


@pytest.mark.parametrize(
    "value", ["1" + "0" * 30, "1e30", "nan", "inf", "-inf", "9" * 5000, "1_0", "\u0661\u0660"]
)
@pytest.mark.parametrize("variable", NUMERIC)
def test_every_numeric_setting_refuses_huge_and_non_finite_values_naming_its_range(
    variable: str, value: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env({variable: value})

    assert f"{variable}=" in raised.value.message
    assert f"accepted: {NUMERIC[variable]}" in raised.value.message


@pytest.mark.parametrize("variable", NUMERIC)
def test_every_numeric_setting_takes_the_ends_of_its_range(variable: str) -> None:
    low, high = NUMERIC[variable].split("from ")[1].split(" to ")

    for value in (low, high):
        Settings.from_env({variable: value})


def test_job_history_days_defaults_to_90_and_reads_the_variable() -> None:
    assert Settings.from_env({}).job_history_days == 90
    assert Settings.from_env({"BACKUP_JOBS_JOB_HISTORY_DAYS": "7"}).job_history_days == 7


def test_the_libvirt_provider_is_chosen_with_its_uri_and_the_vault_records_the_uri() -> None:
    settings = Settings.from_env(
        {"BACKUP_JOBS_PROVIDER": "libvirt", "BACKUP_JOBS_LIBVIRT_URI": "qemu+ssh://kvm1/system"}
    )

    assert settings.provider == "libvirt"
    assert settings.fleet_location == "qemu+ssh://kvm1/system"
    assert Settings.from_env({}).libvirt_uri == "qemu:///system"
    assert Settings.from_env({}).fleet_location == str(Path(".backup-jobs/fleet").resolve())


@pytest.mark.parametrize("uri", ["qemu", "/var/run/libvirt", "xen:///system", "lxc:///"])
def test_a_libvirt_uri_of_another_driver_or_no_uri_is_refused_naming_the_variable(
    uri: str,
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env({"BACKUP_JOBS_LIBVIRT_URI": uri})

    assert f"BACKUP_JOBS_LIBVIRT_URI={uri!r}" in raised.value.message
    assert "qemu:///system" in raised.value.message


def test_the_minimum_agent_version_is_the_seeds_except_on_libvirt_where_it_is_a_setting() -> None:
    libvirt = {"BACKUP_JOBS_PROVIDER": "libvirt"}

    assert Settings.from_env({}).min_agent_version == "2.6.1198.718"
    assert Settings.from_env(libvirt).min_agent_version == "2.5"
    assert (
        Settings.from_env({**libvirt, "BACKUP_JOBS_LIBVIRT_MIN_AGENT_VERSION": "8.1"})
    ).min_agent_version == "8.1"


@pytest.mark.parametrize("version", ["", "seven", "7.", "1.2.3.4.5", "v7.2"])
def test_a_minimum_agent_version_that_is_not_dotted_numbers_is_refused(version: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings.from_env({"BACKUP_JOBS_LIBVIRT_MIN_AGENT_VERSION": version or " "})

    assert "BACKUP_JOBS_LIBVIRT_MIN_AGENT_VERSION" in raised.value.message

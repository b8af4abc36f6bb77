"""TLS to Redis: the settings that name the certificate files, and where they are applied."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from backup_jobs.connection import ssl_options
from backup_jobs.dispatchers.celery import client_config
from backup_jobs.errors import ConfigurationError
from backup_jobs.runtime import processes
from backup_jobs.settings import Settings

TLS_URL = "rediss://:pw@redis.example:6380/0"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    """Three readable PEM files, as the variables name them."""
    named = {}
    for part in ("CA", "CERT", "KEY"):
        path = tmp_path / f"{part.lower()}.pem"
        path.write_text("-----BEGIN CERTIFICATE-----\n")
        named[f"BACKUP_JOBS_REDIS_{part}_FILE"] = str(path)
    return named


def test_a_rediss_url_takes_a_ca_a_client_certificate_and_its_key(
    files: dict[str, str],
) -> None:
    settings = Settings.from_env({"BACKUP_JOBS_REDIS_URL": TLS_URL, **files})

    assert settings.redis_ca_file == Path(files["BACKUP_JOBS_REDIS_CA_FILE"])
    assert settings.redis_cert_file == Path(files["BACKUP_JOBS_REDIS_CERT_FILE"])
    assert settings.redis_key_file == Path(files["BACKUP_JOBS_REDIS_KEY_FILE"])


@pytest.mark.parametrize("variable", ["CA", "CERT", "KEY"])
@pytest.mark.parametrize("problem", ["missing", "directory"])
def test_a_tls_file_that_cannot_be_read_is_refused_naming_the_variable(
    files: dict[str, str], tmp_path: Path, variable: str, problem: str
) -> None:
    name = f"BACKUP_JOBS_REDIS_{variable}_FILE"
    bad = tmp_path / "nowhere.pem" if problem == "missing" else tmp_path
    env = {"BACKUP_JOBS_REDIS_URL": TLS_URL, **files, name: str(bad)}

    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env(env)

    assert f"{name}='{bad}' is not valid; accepted: a readable file" in refused.value.message


@pytest.mark.parametrize(
    "url",
    [None, "redis://:pw@redis.example:6379/0", "unix:///run/redis.sock"],
    ids=["embedded", "redis", "unix"],
)
def test_tls_files_without_a_rediss_url_are_refused(files: dict[str, str], url: str | None) -> None:
    env = {**files, **({"BACKUP_JOBS_REDIS_URL": url} if url else {})}

    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env(env)

    assert "BACKUP_JOBS_REDIS_CA_FILE" in refused.value.message
    assert "need a rediss:// BACKUP_JOBS_REDIS_URL" in refused.value.message


@pytest.mark.parametrize("alone", ["CERT", "KEY"])
def test_a_client_certificate_and_its_key_go_together(files: dict[str, str], alone: str) -> None:
    name = f"BACKUP_JOBS_REDIS_{alone}_FILE"
    env = {"BACKUP_JOBS_REDIS_URL": TLS_URL, name: files[name]}

    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env(env)

    assert "REDIS_CERT_FILE and BACKUP_JOBS_REDIS_KEY_FILE must be set together" in (
        refused.value.message
    )


def test_a_rediss_url_always_verifies_the_server_and_carries_the_files(
    files: dict[str, str],
) -> None:
    bare = Settings.from_env({"BACKUP_JOBS_REDIS_URL": TLS_URL})
    full = Settings.from_env({"BACKUP_JOBS_REDIS_URL": TLS_URL, **files})

    assert ssl_options(bare, TLS_URL) == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    assert ssl_options(full, TLS_URL) == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_ca_certs": files["BACKUP_JOBS_REDIS_CA_FILE"],
        "ssl_certfile": files["BACKUP_JOBS_REDIS_CERT_FILE"],
        "ssl_keyfile": files["BACKUP_JOBS_REDIS_KEY_FILE"],
    }
    assert ssl_options(bare, "redis://:pw@redis.example/0") == {}


def test_celery_broker_and_result_backend_get_the_same_tls_options(
    files: dict[str, str],
) -> None:
    settings = Settings.from_env({"BACKUP_JOBS_REDIS_URL": TLS_URL, **files})
    plain = Settings.from_env({"BACKUP_JOBS_REDIS_URL": "redis://:pw@redis.example/0"})

    config = client_config(settings, TLS_URL)
    plain_config = client_config(plain, "redis://:pw@redis.example/0")

    assert config["broker_use_ssl"] == ssl_options(settings, TLS_URL)
    assert config["redis_backend_use_ssl"] == ssl_options(settings, TLS_URL)
    assert config["broker_use_ssl"]["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert not plain_config["broker_use_ssl"] and not plain_config["redis_backend_use_ssl"]


def test_processes_get_the_tls_files_as_absolute_paths(
    files: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = {name: Path(path).name for name, path in files.items()}
    settings = Settings.from_env({"BACKUP_JOBS_REDIS_URL": TLS_URL, **relative})

    env = processes.child_environment(settings, TLS_URL)

    assert {name: env[name] for name in files} == {
        name: str(Path(path).resolve()) for name, path in files.items()
    }

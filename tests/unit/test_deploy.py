"""deploy/: the Redis configuration really configures a server; the systemd units run our
processes, sandboxed, with a warm shutdown that outlasts the longest job; the example
environment file is valid settings."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from backup_jobs.operations import CLEANUP_MARGIN_SECONDS, OPERATIONS
from backup_jobs.runtime import embedded, processes
from backup_jobs.settings import Settings
from tests.harness import REPO

DEPLOY = REPO / "deploy"
UNITS = ("worker", "ticks", "beat", "flower", "exporter")
# Where the units expect the virtualenv's commands (`celery`, `backup-jobs`).
UNIT_BIN = "/opt/backup-jobs/bin/"


def longest_job_seconds() -> float:
    """The longest hard time limit of any job with the default timeouts (a Backup's)."""
    settings = Settings()
    return max(spec.soft_limit_seconds(settings) for spec in OPERATIONS.values()) + (
        CLEANUP_MARGIN_SECONDS
    )


def same_as_up(kind: str, argv: list[str]) -> None:
    """Assert that ``argv`` (``celery -A workers ...``) runs what ``backup-jobs up`` runs."""
    expected = processes.process_commands(Settings.from_env({}))[kind]
    expected = expected[expected.index("workers") + 1 :]
    assert argv[0].endswith("celery") and argv[1:4] == ["-A", "workers", expected[0]], argv
    for option in ("--queues", "--pool"):
        if option in expected:
            assert argv[argv.index(option) + 1] == expected[expected.index(option) + 1], argv
    options = {a for a in expected if a.startswith("--")} - {"--hostname"}
    assert options == {a for a in argv if a.startswith("--")}, argv


def example_env() -> dict[str, str]:
    """deploy/env.example as the variables it sets."""
    pairs = (
        line.split("=", 1)
        for line in (DEPLOY / "env.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    return {key: value for key, value in pairs}


def test_redis_conf_gives_append_only_persistence_and_no_eviction(tmp_path: Path) -> None:
    port = embedded.free_port()
    server = subprocess.Popen(
        [
            str(embedded.server_binary()),
            str(DEPLOY / "redis.conf"),
            "--port",
            str(port),
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port, decode_responses=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        config = {k: client.config_get(k)[k] for k in ("appendonly", "maxmemory-policy", "save")}
    finally:
        server.terminate()
        server.wait()

    assert config == {"appendonly": "yes", "maxmemory-policy": "noeviction", "save": ""}


def _service(unit: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(DEPLOY / "systemd" / unit)
    return parser["Service"]


def _exec_start(unit: str) -> list[str]:
    return shlex.split(_service(unit)["ExecStart"])


def test_systemd_units_run_the_same_processes_as_backup_jobs_up() -> None:
    for kind in ("worker", "ticks", "beat"):
        same_as_up(kind, _exec_start(f"backup-jobs-{kind}.service"))
    assert _exec_start("backup-jobs-flower.service")[1:] == ["flower"]
    assert _exec_start("backup-jobs-exporter.service")[1:] == ["exporter"]


def test_every_unit_restarts_always_and_keeps_its_files_and_password_private() -> None:
    units = sorted(path.name for path in (DEPLOY / "systemd").glob("*.service"))
    for unit in units:
        service = _service(unit)

        assert service["Restart"] == "always", unit
        assert service["UMask"] == "0077", unit
        assert service["EnvironmentFile"] == "/etc/backup-jobs/env", unit
        assert service["User"] == "backup-jobs", unit
    assert units == sorted(f"backup-jobs-{kind}.service" for kind in UNITS)


def test_every_unit_is_sandboxed_and_writes_only_its_state_dir_and_the_workers_storage() -> None:
    env = example_env()
    for kind in UNITS:
        service = _service(f"backup-jobs-{kind}.service")

        for setting in ("NoNewPrivileges", "PrivateTmp", "PrivateDevices", "ProtectHome"):
            assert service[setting] == "yes", (kind, setting)
        assert service["ProtectSystem"] == "strict", kind
        assert service["CapabilityBoundingSet"] == "", kind
        assert "/var/lib/" + service["StateDirectory"] == env["BACKUP_JOBS_DATA_DIR"], kind
        assert service["WorkingDirectory"] == env["BACKUP_JOBS_DATA_DIR"], kind
        writes = set(service.get("ReadWritePaths", "").split())
        storage = {
            env[f"BACKUP_JOBS_{name}"] for name in ("VAULT_DIR", "FLEET_DIR", "RESTORE_ROOT")
        }
        assert writes == (storage if kind == "worker" else set()), kind


def _seconds(span: str) -> float:
    """A systemd time span in seconds (``30``, ``6h 35min``)."""
    units = {"h": 3600, "min": 60, "s": 1}
    total = 0.0
    for part in span.split():
        number = part.rstrip("hmins")
        total += float(number) * units[part[len(number) :] or "s"]
    return total


def test_a_worker_stop_is_a_warm_shutdown_that_outlasts_the_longest_job() -> None:
    for kind in ("worker", "ticks"):
        service = _service(f"backup-jobs-{kind}.service")
        # SIGTERM to the main process only: Celery's prefork children die of a SIGTERM
        # (KillMode=control-group, systemd's default, killed the running jobs).
        assert service["KillMode"] == "mixed", kind
        assert service["KillSignal"] == "SIGTERM", kind

    worker = _service("backup-jobs-worker.service")
    assert _seconds(worker["TimeoutStopSec"]) > longest_job_seconds()
    assert _seconds(worker["TimeoutStopSec"]) < longest_job_seconds() + 3600


def _units_here(tmp_path: Path) -> list[Path]:
    """The units with their commands pointing at this virtualenv's, so that systemd finds them."""
    here = str(Path(sys.executable).parent) + "/"
    copies = []
    for unit in (DEPLOY / "systemd").glob("*.service"):
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace(UNIT_BIN, here))
        copies.append(copy)
    return copies


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verifies_every_unit_without_a_warning(tmp_path: Path) -> None:
    units = _units_here(tmp_path)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert len(units) == len(UNITS)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr


def test_the_example_env_file_is_valid_settings_naming_only_documented_variables(
    tmp_path: Path,
) -> None:
    env = example_env()
    readme = (REPO / "README.md").read_text()
    for name in ("CA", "CERT", "KEY"):  # the example's files exist only on a real machine
        variable = f"BACKUP_JOBS_REDIS_{name}_FILE"
        (tmp_path / name).write_text("PEM")
        env[variable] = str(tmp_path / name)

    settings = Settings.from_env(env)

    assert settings.redis_url is not None and settings.redis_url.startswith("rediss://")
    assert settings.flower_user and settings.flower_password
    for variable in env:
        shown = variable.replace("_KEY_FILE", "_CERT_FILE").replace("_PORT", "_ADDRESS")
        shown = shown.replace("_PASSWORD", "_USER")
        assert f"`{shown}`" in readme or f"`{variable}`" in readme, variable

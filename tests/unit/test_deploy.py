"""deploy/: the Redis configuration really configures a server; the units run our processes."""

from __future__ import annotations

import configparser
import shlex
import subprocess
import time
from pathlib import Path

import redis

from backup_jobs.runtime import embedded, processes
from backup_jobs.settings import Settings
from tests.harness import REPO

DEPLOY = REPO / "deploy"


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
    commands = processes.process_commands(Settings.from_env({}))
    for name in ("worker", "ticks", "beat"):
        unit = _exec_start(f"backup-jobs-{name}.service")
        expected = commands[name][commands[name].index("workers") + 1 :]
        assert unit[1:4] == ["-A", "workers", expected[0]]
        for option in ("--queues", "--pool"):
            if option in expected:
                assert unit[unit.index(option) + 1] == expected[expected.index(option) + 1]
        options = {a for a in expected if a.startswith("--")} - {"--hostname"}
        assert options == {a for a in unit if a.startswith("--")}
    assert _exec_start("backup-jobs-flower.service")[1:] == ["flower"]
    assert _exec_start("backup-jobs-exporter.service")[1:] == ["exporter"]


def test_every_unit_restarts_always_and_keeps_its_files_and_password_private() -> None:
    units = sorted(path.name for path in (DEPLOY / "systemd").glob("*.service"))
    for unit in units:
        service = _service(unit)

        assert service["Restart"] == "always", unit
        assert service["UMask"] == "0077", unit
        assert service["EnvironmentFile"] == "/etc/backup-jobs/env", unit
    assert len(units) == 5

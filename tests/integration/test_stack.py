"""The stack as users start it: `backup-jobs demo`, `backup-jobs up`, the Procfile (honcho)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from backup_jobs.client import Client
from backup_jobs.errors import AlreadyRunning
from backup_jobs.models import JobStatus
from backup_jobs.providers.local_demo import create_demo_fleet
from backup_jobs.runtime import embedded
from backup_jobs.settings import redact_url
from tests.harness import REPO, eventually, run_cli
from tests.up import Up, http_status, running, stack_env, using


def test_demo_runs_the_seed_workflow_prints_the_dashboard_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    # The InstallAgentTimeout row waits out the install timeout: 2 s here, not the demo's 5 s.
    env = stack_env(tmp_path / "data", install_agent_timeout_seconds="2")
    result = run_cli("demo", env=env, timeout=300, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "== VMs" in out and "== Jobs" in out and "== Dashboard" in out
    assert out.count("Registered ") >= 4  # web01, app01 and both shared01
    # The whole seed workflow: protect with backup-now, a small incremental, a verified restore.
    assert out.count("ConfigureProtection  ") >= 4 and "Incremental: 4.0 MiB new" in out
    assert "os.img: identical to the VM's disk, byte for byte" in out
    assert "Restore " in out and "Protected items                     4" in out
    for code in (
        "VMNotRunning",
        "DataDiskLimitExceeded",
        "UnsupportedConfiguration",
        "VMAgentNotInstalled",
        "GuestAgentCertificateNotFound",
        "InstallAgentTimeout",
    ):
        assert code in out, code
    assert "not in the vault's region" in out
    assert embedded.find(tmp_path / "data") is None and not using(tmp_path / "data")


def test_up_serves_other_commands_through_its_state_file_and_stops_on_ctrl_c(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    env = stack_env(data)
    up = Up(env, tmp_path)
    try:
        flower = up.wait_for("flower  ready", 90)
        up.wait_for("Running", 30)
        server = embedded.find(data)
        assert run_cli("fleet", "create-demo", env=env, cwd=tmp_path).returncode == 0
        discovered = run_cli("vm", "discover", "--wait", env=env, cwd=tmp_path)
        registered = run_cli("vm", "register", "cs-app/app01", "--wait", env=env, cwd=tmp_path)
    finally:
        code = up.stop()

    assert f"http://127.0.0.1:{env['BACKUP_JOBS_FLOWER_PORT']}" in flower
    assert discovered.returncode == 0 and registered.returncode == 0, registered.stderr
    assert code == 0 and up.lines[-2:] == ["Stopping...", "Stopped."]
    assert server is not None and not running(server.pid)
    assert embedded.find(data) is None and not using(data)
    assert (data / "valkey" / "appendonlydir").is_dir()


def test_procfile_under_honcho_runs_the_whole_stack(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = stack_env(data)
    with open(tmp_path / "honcho.log", "wb") as log:
        honcho = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "honcho",
                "-f",
                str(REPO / "Procfile"),
                "-d",
                str(REPO),
                "start",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        server = eventually(lambda: embedded.find(data), 60)
        client = Client.from_env({**env, "BACKUP_JOBS_FLEET_DIR": str(tmp_path / "fleet")})
        create_demo_fleet(tmp_path / "fleet", client.vault.region)
        assert client.discover().wait(60).status == JobStatus.COMPLETED
        assert client.register(["cs-web/web01"])[0].wait(60).status == JobStatus.COMPLETED
        assert eventually(lambda: http_status(f"http://127.0.0.1:{env['BACKUP_JOBS_FLOWER_PORT']}"))
        assert eventually(
            lambda: (
                (data / "celerybeat-schedule").exists() or list(data.glob("celerybeat-schedule*"))
            ),
            30,
        )
    finally:
        os.killpg(honcho.pid, signal.SIGTERM)
        honcho.wait(timeout=60)
    assert eventually(lambda: not running(server.pid), 5), (tmp_path / "honcho.log").read_text()


def test_up_uses_the_server_that_backup_jobs_redis_url_names(
    scratch_url: str, tmp_path: Path
) -> None:
    env = stack_env(tmp_path / "data", redis_url=scratch_url)
    up = Up(env, tmp_path, "up", "--no-flower")
    try:
        up.wait_for("Running", 90)
        run_cli("fleet", "create-demo", env=env, cwd=tmp_path)
        discovered = run_cli("vm", "discover", "--wait", env=env, cwd=tmp_path)
    finally:
        up.stop()

    assert up.lines[0] == f"redis   ready ({redact_url(scratch_url)}, BACKUP_JOBS_REDIS_URL)"
    assert discovered.returncode == 0, discovered.stderr
    assert embedded.find(tmp_path / "data") is None
    assert not (tmp_path / "data" / "valkey").exists()


def test_second_up_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server, process = embedded.start(data)
    try:
        result = run_cli("up", env=stack_env(data), cwd=tmp_path, timeout=60)
    finally:
        embedded.stop(server, process, data)

    assert result.returncode == AlreadyRunning().exit_code
    assert (
        f"already running for data dir {data.resolve()} (server pid {server.pid}" in result.stderr
    )
    assert f"started by pid {os.getpid()}" in result.stderr

"""The stack as users start it: `backup-jobs demo`, `backup-jobs up`, the Procfile (honcho)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from backup_jobs.client import Client
from backup_jobs.models import JobStatus
from backup_jobs.providers.local_demo import create_demo_fleet
from backup_jobs.runtime import embedded, processes
from backup_jobs.settings import redact_url
from tests.harness import REPO, eventually, run_cli


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_JOBS_")}
    port = embedded.free_port()
    # As in an activated virtualenv: the Procfile's `celery` and `backup-jobs` are on PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return {
        **env,
        "PATH": path,
        "BACKUP_JOBS_DATA_DIR": str(data_dir),
        "BACKUP_JOBS_FLOWER_PORT": str(port),
    }


def _start_up(env: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen[str]:
    """`backup-jobs up ARGS` as a user starts it in a terminal, its output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "backup_jobs", "up", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_demo_registers_every_vm_prints_both_tables_and_leaves_nothing_running(
    tmp_path: Path,
) -> None:
    result = run_cli("demo", env=_env(tmp_path / "data"), timeout=300, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "== VMs" in out and "== Jobs" in out
    assert out.count("Registered ") >= 4  # web01, app01 and both shared01
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
    assert embedded.find(tmp_path / "data") is None


def test_up_serves_other_commands_through_its_state_file_and_stops_on_ctrl_c(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    env = _env(data)
    up = _start_up(env, tmp_path)
    try:
        assert up.stdout is not None
        lines = [up.stdout.readline() for _ in range(4)]
        server = eventually(lambda: embedded.find(data), 30)
        assert run_cli("fleet", "create-demo", env=env, cwd=tmp_path).returncode == 0
        discovered = run_cli("vm", "discover", "--wait", env=env, cwd=tmp_path)
        registered = run_cli("vm", "register", "cs-app/app01", "--wait", env=env, cwd=tmp_path)
        assert processes.wait_for_http(f"http://127.0.0.1:{env['BACKUP_JOBS_FLOWER_PORT']}", 30)
    finally:
        up.send_signal(signal.SIGINT)
        rest, _ = up.communicate(timeout=60)

    assert any("Flower: http://127.0.0.1:" in line for line in lines)
    assert any("(embedded)" in line for line in lines)
    assert discovered.returncode == 0 and registered.returncode == 0, registered.stderr
    assert up.returncode == 0 and "Stopped." in rest
    assert not _alive(server.pid)
    assert embedded.find(data) is None
    assert (data / "valkey" / "appendonlydir").is_dir()


def test_procfile_under_honcho_runs_the_whole_stack(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = _env(data)
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
        assert processes.wait_for_http(f"http://127.0.0.1:{env['BACKUP_JOBS_FLOWER_PORT']}", 60)
        assert eventually(
            lambda: (
                (data / "celerybeat-schedule").exists() or list(data.glob("celerybeat-schedule*"))
            ),
            30,
        )
    finally:
        os.killpg(honcho.pid, signal.SIGTERM)
        honcho.wait(timeout=60)
    time.sleep(0.5)
    assert not _alive(server.pid), (tmp_path / "honcho.log").read_text()


def test_up_uses_the_server_that_backup_jobs_redis_url_names(
    scratch_url: str, tmp_path: Path
) -> None:
    env = {**_env(tmp_path / "data"), "BACKUP_JOBS_REDIS_URL": scratch_url}
    up = _start_up(env, tmp_path, "--no-flower")
    try:
        assert up.stdout is not None
        first = up.stdout.readline()
        run_cli("fleet", "create-demo", env=env, cwd=tmp_path)
        discovered = run_cli("vm", "discover", "--wait", env=env, cwd=tmp_path)
    finally:
        up.send_signal(signal.SIGINT)
        up.communicate(timeout=60)

    assert first.strip() == f"Redis:  {redact_url(scratch_url)}"
    assert discovered.returncode == 0, discovered.stderr
    assert embedded.find(tmp_path / "data") is None
    assert not (tmp_path / "data" / "valkey").exists()


def test_second_up_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server, process = embedded.start(data)
    try:
        result = run_cli("up", env=_env(data), cwd=tmp_path, timeout=60)
    finally:
        embedded.stop(server, process, data)

    assert result.returncode == 2
    assert "already runs for data dir" in result.stderr and f"pid {server.pid}" in result.stderr

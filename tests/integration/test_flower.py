"""Flower, started as `backup-jobs up` starts it, shows our tasks by name with their arguments."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backup_jobs.errors import ConfigurationError
from backup_jobs.models import JobStatus
from backup_jobs.policies import Retention, ScheduleKind, make_policy
from backup_jobs.providers.local_faults import Fault
from backup_jobs.runtime import embedded, processes
from backup_jobs.settings import Settings
from tests.harness import Cluster, demo_fleet, eventually, run_cli
from tests.up import http_status, stack_env


def _get(url: str, auth: tuple[str, str] | None = None) -> Any:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


AUTH = ("admin", "s3cret")


@pytest.fixture(scope="module")
def flower(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Flower as `backup-jobs up` starts it, with basic auth; its base URL."""
    tmp_path = tmp_path_factory.mktemp("flower")
    port = embedded.free_port()
    env = {
        **cluster.child_env(),
        "BACKUP_JOBS_FLOWER_USER": AUTH[0],
        "BACKUP_JOBS_FLOWER_PASSWORD": AUTH[1],
        "BACKUP_JOBS_FLOWER_PORT": str(port),
        "BACKUP_JOBS_DATA_DIR": str(tmp_path),
    }
    command = processes.process_commands(cluster.settings())["flower"]
    with open(tmp_path / "flower.log", "wb") as log:
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: http_status(base), 60)
        eventually(lambda: _get(f"{base}/api/workers?refresh=1", AUTH), 30, 0.5)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=20)


def _task(base: str, name: str, task_id: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = _get(f"{base}/api/tasks?taskname={name}", AUTH).get(task_id)
    return found if found and found.get("state") in ("SUCCESS", "FAILURE") else None


def test_flower_lists_tasks_by_name_with_vm_and_job_id_and_requires_credentials(
    cluster: Cluster, flower: str, tmp_path: Path
) -> None:
    demo_fleet(tmp_path)
    client = cluster.client(tmp_path / "fleet")
    client.discover().wait(30)
    job = client.register(["cs-app/app01"])[0].wait(30)

    task = eventually(lambda: _task(flower, "backup_jobs.register", f"{job.id}.1"), 30, 0.5)
    with pytest.raises(urllib.error.HTTPError) as refused:
        _get(f"{flower}/api/tasks")

    assert task["name"] == "backup_jobs.register"
    assert job.id in task["kwargs"] and "cs-app/app01" in task["kwargs"]
    assert task["state"] == "SUCCESS"
    assert "Completed" in str(task["result"])
    assert refused.value.code == 401


def test_a_failed_attempt_shows_as_failed_in_flower_with_its_error_and_ticks_do_not_show(
    cluster: Cluster, flower: str, tmp_path: Path
) -> None:
    demo_fleet(tmp_path)
    client = cluster.client(tmp_path / "fleet")
    client.discover().wait(30)
    job = client.register(["cs-app/stopped01"])[0].wait(30)

    task = eventually(lambda: _task(flower, "backup_jobs.register", f"{job.id}.1"), 30, 0.5)
    every = _get(f"{flower}/api/tasks", AUTH)
    workers = _get(f"{flower}/api/workers", AUTH)

    assert job.status == JobStatus.FAILED  # the job record, still the truth
    assert task["state"] == "FAILURE"
    assert "VMNotRunning" in task["exception"] and "Start the virtual machine" in task["exception"]
    assert not [t for t in every.values() if str(t.get("name", "")).startswith("backup_jobs.tick")]
    assert workers  # the tick consumer answers too, but sends no task events


def test_a_running_backup_shows_its_step_and_progress_in_flower(
    cluster: Cluster, flower: str, tmp_path: Path
) -> None:
    fleet = demo_fleet(tmp_path)
    client = cluster.client(tmp_path / "fleet", vault_dir=tmp_path / "vault")
    client.discover().wait(30)
    client.register(["cs-app/app01"])[0].wait(30)
    client.create_policy(
        make_policy("nightly", ScheduleKind.DAILY, times=["22:00"], retention=Retention(7))
    )
    client.protect(["cs-app/app01"], "nightly")[0].wait(30)
    fleet.write_disks("cs-app/app01", percent=100, seed=1)
    fleet.faults.add(Fault("transfer-timeout", "cs-app/app01", seconds=0.25))  # a slow read
    handle = client.backup_now("cs-app/app01")

    running = eventually(lambda: _progress(flower, f"{handle.id}.1"), 30, 0.1)
    job = handle.wait(60)
    done = eventually(lambda: _task(flower, "backup_jobs.backup", f"{handle.id}.1"), 30, 0.5)

    assert job.status == JobStatus.COMPLETED
    assert "of 64.0 MiB" in running["result"]
    assert done["state"] == "SUCCESS" and job.properties["recovery_point_id"] in done["result"]


def _progress(base: str, task_id: str) -> dict[str, Any] | None:
    """The task as Flower shows it while its transfer is under way (between 1 and 99 %)."""
    task = _get(f"{base}/api/task/info/{task_id}", AUTH) if _known(base, task_id) else {}
    shown = re.match(r"Transfer data to vault (\d+)% \(", str(task.get("result")))
    return task if task.get("state") == "PROGRESS" and shown and 0 < int(shown[1]) < 100 else None


def _known(base: str, task_id: str) -> bool:
    try:
        _get(f"{base}/api/task/info/{task_id}", AUTH)
    except urllib.error.HTTPError:
        return False
    return True


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused start prints (and no traceback)."""
    assert "Traceback" not in result.stderr, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    return line


def test_backup_jobs_flower_without_a_server_says_so_in_one_line(tmp_path: Path) -> None:
    result = run_cli("flower", env=stack_env(tmp_path / "data"), cwd=tmp_path, timeout=60)

    assert result.returncode == ConfigurationError().exit_code
    assert "no embedded server runs for data dir" in _one_error_line(result)


def test_backup_jobs_flower_beyond_loopback_without_a_password_is_refused_before_it_starts(
    redis_base_url: str, tmp_path: Path
) -> None:
    env = stack_env(tmp_path / "data", redis_url=redis_base_url, flower_address="0.0.0.0")  # noqa: S104

    result = run_cli("flower", env=env, cwd=tmp_path, timeout=60)

    assert result.returncode == ConfigurationError().exit_code
    assert "Flower would listen on 0.0.0.0 without a password" in _one_error_line(result)


def test_flower_run_by_hand_with_our_config_refuses_exposure_in_one_line(tmp_path: Path) -> None:
    # As a unit or a Procfile runs it: `celery -A workers flower --conf=workers/flowerconfig.py`.
    env = stack_env(
        tmp_path / "data",
        redis_url=f"redis://127.0.0.1:{embedded.free_port()}/0",
        flower_address="0.0.0.0",  # noqa: S104 - what is refused
    )
    command = processes.process_commands(Settings.from_env({}))["flower"]

    result = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )

    assert result.returncode == ConfigurationError().exit_code
    assert "without a password" in _one_error_line(result)
    assert len(result.stderr.strip().splitlines()) == 1

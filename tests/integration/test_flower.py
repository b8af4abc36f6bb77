"""Flower, started as `backup-jobs up` starts it, shows our tasks by name with their arguments."""

from __future__ import annotations

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
from tests.flower import AUTH, get_json, progress_of, running_flower
from tests.harness import Cluster, demo_fleet, eventually, run_cli
from tests.up import stack_env


@pytest.fixture(scope="module")
def flower(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Flower as `backup-jobs up` starts it, with basic auth; its base URL."""
    with running_flower(cluster, tmp_path_factory.mktemp("flower")) as base:
        yield base


def _task(base: str, name: str, task_id: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = get_json(f"{base}/api/tasks?taskname={name}", AUTH).get(task_id)
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
        get_json(f"{flower}/api/tasks")

    assert task["name"] == "backup_jobs.register"
    assert job.id in task["kwargs"] and "cs-app/app01" in task["kwargs"]
    assert task["state"] == "SUCCESS"
    # What a person reads first, first: the one-line cells of the task list show the start.
    assert str(task["kwargs"]).startswith("{'item': 'cs-app/app01', 'job_id': ")
    assert str(task["result"]).startswith("{'status': 'Completed', 'item': 'cs-app/app01'")
    assert refused.value.code == 401


def test_a_failed_attempt_shows_as_failed_in_flower_with_its_error_and_ticks_do_not_show(
    cluster: Cluster, flower: str, tmp_path: Path
) -> None:
    demo_fleet(tmp_path)
    client = cluster.client(tmp_path / "fleet")
    client.discover().wait(30)
    job = client.register(["cs-app/stopped01"])[0].wait(30)

    task = eventually(lambda: _task(flower, "backup_jobs.register", f"{job.id}.1"), 30, 0.5)
    every = get_json(f"{flower}/api/tasks", AUTH)
    workers = get_json(f"{flower}/api/workers", AUTH)

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

    running = eventually(lambda: progress_of(flower, f"{handle.id}.1"), 30, 0.1)
    job = handle.wait(60)
    done = eventually(lambda: _task(flower, "backup_jobs.backup", f"{handle.id}.1"), 30, 0.5)

    assert job.status == JobStatus.COMPLETED
    assert "of 64.0 MiB" in running["result"]
    assert done["state"] == "SUCCESS" and job.properties["recovery_point_id"] in done["result"]


def test_flower_keeps_its_task_history_across_a_restart(cluster: Cluster, tmp_path: Path) -> None:
    demo_fleet(tmp_path)
    client = cluster.client(tmp_path / "fleet")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with running_flower(cluster, data_dir) as before:
        client.discover().wait(30)
        job = client.register(["cs-app/app01"])[0].wait(30)
        eventually(lambda: _task(before, "backup_jobs.register", f"{job.id}.1"), 30, 0.5)

    with running_flower(cluster, data_dir) as after:  # a new process, the same data dir
        task = get_json(f"{after}/api/tasks?taskname=backup_jobs.register", AUTH).get(f"{job.id}.1")

    assert task is not None, "the restarted Flower lost the task"
    assert list(data_dir.glob("flower.db*"))  # dbm may add suffixes: flower.db.dat, ...
    assert task["state"] == "SUCCESS" and "cs-app/app01" in task["kwargs"]


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

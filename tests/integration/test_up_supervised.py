"""`backup-jobs up` supervises what it starts, and nothing it starts outlives it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from backup_jobs import connection
from backup_jobs.runtime import embedded
from tests.harness import eventually, run_cli
from tests.up import (
    Up,
    assert_process_failed,
    descendants,
    finish,
    running,
    stack_env,
    using,
)


def _record(data: Path, pid: int, port: int, owner: int) -> None:
    """A state file as `up` (pid ``owner``) writes it for a server ``pid`` on ``port``."""
    state = {"version": 2, "pid": pid, "port": port, "owner": owner}
    (data / "server.json").write_text(json.dumps(state))


def _dead_pid() -> int:
    """A pid no process has any more."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


def test_a_killed_server_or_worker_is_reported_and_restarted_and_jobs_still_run(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    env = stack_env(data)
    up = Up(env, tmp_path, "up", "--no-flower")
    try:
        up.wait_for("Running", 90)
        server = connection.running(data)
        assert server is not None
        os.kill(server.pid, signal.SIGKILL)
        reported = up.wait_for("server  exited", 5)
        back = eventually(lambda: connection.running(data), 15)
        assert run_cli("fleet", "create-demo", env=env, cwd=tmp_path).returncode == 0
        discovered = run_cli("vm", "discover", "--wait", env=env, cwd=tmp_path, timeout=60)
        worker = up.pid_of("worker", 1)
        os.kill(worker, signal.SIGKILL)
        worker_reported = up.wait_for("worker  exited", 5)
        worker_back = up.wait_for("worker  restarted", 15)
    finally:
        left = finish(up, data)

    assert "killed by SIGKILL" in reported and "valkey.log" in reported
    assert back.port == server.port and back.pid != server.pid
    assert not running(server.pid)  # reaped: no zombie
    assert discovered.returncode == 0, discovered.stderr
    assert "killed by SIGKILL" in worker_reported and "worker.log" in worker_reported
    assert str(worker) not in worker_back
    assert up.process.returncode == 0 and not left


def test_a_process_that_keeps_crashing_stops_up_with_an_error_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    env = {**stack_env(data), "BACKUP_JOBS_RESTART_DELAY_SECONDS": "0.2"}  # 0.2, 0.4, ... s
    up = Up(env, tmp_path, "up", "--no-flower")
    try:
        up.wait_for("Running", 90)
        server = connection.running(data)
        assert server is not None
        os.kill(server.pid, signal.SIGKILL)
        # A damaged AOF: every restart of the server fails at once.
        (data / "valkey" / "appendonlydir" / "appendonly.aof.manifest").write_text("damaged\n")
        code = up.wait_exit(60)
    finally:
        left = finish(up, data)

    assert "server  could not be restarted" in up.output
    assert "Invalid AOF manifest file format" in up.output
    assert_process_failed(up.output, code, "server crashed 5 times within 120 s")
    assert not left and connection.running(data) is None


def test_server_ends_with_process_failed_when_its_embedded_server_dies(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = Up(stack_env(data), tmp_path, "server")
    try:
        server.wait_for("server  ready", 30)
        valkey = connection.running(data)
        assert valkey is not None
        os.kill(valkey.pid, signal.SIGKILL)
        code = server.wait_exit(30)
    finally:
        left = finish(server, data)

    assert_process_failed(server.output, code, "server exited (killed by SIGKILL); see ")
    assert not left


def test_children_of_a_killed_up_die_with_it_and_the_next_up_starts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = stack_env(data)
    first = Up(env, tmp_path)
    try:
        first.wait_for("Running", 90)
        children = descendants(first.process.pid)
        first.process.kill()
        first.wait_exit(10)
        gone = eventually(lambda: not children & using(data), 10)
        second = Up(env, tmp_path)
        second.wait_for("Running", 90)
        code = second.stop()
    finally:
        left = finish(first, data)

    assert len(children) >= 5  # server, worker (and its pool), ticks, beat, Flower
    assert gone
    assert code == 0 and not left


def test_a_server_left_running_by_a_dead_up_is_stopped_and_replaced(tmp_path: Path) -> None:
    # What a killed `up` leaves where children do not die with their parent.
    data = tmp_path / "data"
    server, process = embedded.start(data)
    _record(data, server.pid, server.port, owner=_dead_pid())
    up = Up(stack_env(data), tmp_path, "up", "--no-flower")
    try:
        stopped = up.wait_for("stopped pid", 30)
        up.wait_for("Running", 90)
        replaced = connection.running(data)
    finally:
        left = finish(up, data)
        process.kill()
        process.wait()

    assert f"stopped pid {server.pid}" in stopped
    assert process.returncode == 0  # stopped with SIGTERM: it flushed its AOF
    assert replaced is not None and replaced.pid != server.pid
    assert up.process.returncode == 0 and not left


def test_a_recorded_pid_that_is_not_our_server_is_never_signalled(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    _record(data, stranger.pid, 6379, owner=_dead_pid())
    server = Up(stack_env(data), tmp_path, "server")
    try:
        ready = server.wait_for("server  ready", 30)
        code = server.stop(signal.SIGTERM)
    finally:
        left = finish(server, data)
        alive = stranger.poll() is None
        stranger.kill()
        stranger.wait()

    assert f"pid {stranger.pid}" not in ready
    assert code == 0 and not left
    assert alive

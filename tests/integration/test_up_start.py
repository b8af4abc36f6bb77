"""`up` and `demo` fail at once, in one line, and leave nothing running when they cannot start."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from backup_jobs.errors import ConfigurationError, RedisUnavailable
from backup_jobs.runtime import embedded
from tests.harness import run_cli
from tests.up import Up, assert_process_failed, finish, stack_env, using


def _wrong_password(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f":wrong@{parts.hostname}:{parts.port}").geturl()


def _error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.lower().startswith("error")]


def _assert_refused_before_starting(
    result: subprocess.CompletedProcess[str], exit_code: int, says: str, data: Path
) -> None:
    """One error line that says ``says``, the error's exit code, and nothing started."""
    [line] = _error_lines(result)
    assert says in line, result.stderr
    assert result.returncode == exit_code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert ":wrong@" not in result.stderr  # a password is never shown
    assert "ready" not in result.stdout
    assert not (data / "server.json").exists() and not using(data)


# Each case: what makes `up` refuse, what its error says, and the error's exit code.
REFUSALS: dict[str, tuple[Callable[[str], dict[str, str]], str, int]] = {
    "unreachable Redis": (
        lambda url: {"redis_url": f"redis://127.0.0.1:{embedded.free_port()}/0"},
        "Cannot use Redis at redis://127.0.0.1:",
        RedisUnavailable().exit_code,
    ),
    "wrong password": (
        lambda url: {"redis_url": _wrong_password(url)},
        "authentication failed",
        RedisUnavailable().exit_code,
    ),
    "Flower beyond loopback without a password": (
        lambda url: {"flower_address": "0.0.0.0"},  # noqa: S104 - what is refused
        "Flower would listen on 0.0.0.0 without a password",
        ConfigurationError().exit_code,
    ),
    "Flower port out of range": (
        lambda url: {"flower_port": "99999"},
        "BACKUP_JOBS_FLOWER_PORT='99999' is not valid",
        ConfigurationError().exit_code,
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_up_refuses_at_once_in_one_line_before_starting_anything(
    case: str, redis_base_url: str, tmp_path: Path
) -> None:
    variables, says, exit_code = REFUSALS[case]
    if case == "wrong password" and urlsplit(redis_base_url).password is None:
        pytest.skip("the server BACKUP_JOBS_REDIS_URL names has no password to get wrong")
    data = tmp_path / "data"

    result = run_cli("up", env=stack_env(data, **variables(redis_base_url)), timeout=30)

    _assert_refused_before_starting(result, exit_code, says, data)


def test_up_refuses_a_flower_port_that_is_taken(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("up", env=stack_env(data, flower_port=str(port)), timeout=30)

    _assert_refused_before_starting(
        result, ConfigurationError().exit_code, f"Flower cannot listen on 127.0.0.1:{port}", data
    )


@pytest.mark.parametrize("command", ["up", "demo"])
def test_a_process_that_exits_while_starting_ends_the_command_with_its_cause(
    command: str, tmp_path: Path
) -> None:
    # A `workers` package that cannot load: every Celery process exits at once.
    stub = tmp_path / "stub" / "workers"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise RuntimeError('stub workers: refuses to start')\n")
    data = tmp_path / "data"
    env = {**stack_env(data), "PYTHONPATH": str(stub.parent)}

    result = run_cli(command, env=env, cwd=tmp_path, timeout=90)

    line = assert_process_failed(result.stderr, result.returncode, " exited while starting (")
    assert re.search(r"(worker|ticks|beat|flower) exited while starting \(exit status \d+: ", line)
    assert "RuntimeError: stub workers: refuses to start" in line and ".log" in line
    assert not (data / "server.json").exists() and not using(data)


def test_demo_exits_non_zero_when_a_worker_dies_while_it_runs(tmp_path: Path) -> None:
    data = tmp_path / "data"
    demo = Up(stack_env(data), tmp_path, "demo")
    try:
        worker = demo.pid_of("worker")
        demo.wait_for("== Register every VM", 90)
        os.kill(worker, signal.SIGKILL)
        code = demo.wait_exit(30)
    finally:
        left = finish(demo, data)

    assert_process_failed(demo.output, code, "worker exited (killed by SIGKILL)")
    assert not left


NOBODY = 65534  # a uid that is not this test's


def _give_to_nobody(data: Path) -> None:
    for path in (data, data / "server.json", data / "server.password"):
        os.chown(path, NOBODY, NOBODY)


# Each case: what makes the data dir unsafe, and how the refusal says it.
UNSAFE_DATA_DIRS: dict[str, tuple[Callable[[Path], None], str]] = {
    "owned by another user": (
        _give_to_nobody,
        " is owned by nobody (uid 65534), not by root (uid 0)",
    ),
    "writable by everyone": (
        lambda data: data.chmod(0o777),
        ", owned by root (uid 0), may be written by other users (mode 0777)",
    ),
}


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory to another user")
@pytest.mark.parametrize("command", [("up",), ("demo",), ("job", "list")], ids=" ".join)
@pytest.mark.parametrize("case", list(UNSAFE_DATA_DIRS))
def test_a_data_dir_another_user_controls_is_refused_in_one_line_and_left_as_it_is(
    case: str, command: tuple[str, ...], tmp_path: Path
) -> None:
    # What another user could plant: a record naming a server that runs, and its password.
    data = tmp_path / "data"
    data.mkdir()
    state = {"version": 2, "pid": os.getpid(), "port": embedded.free_port(), "owner": os.getpid()}
    (data / "server.json").write_text(json.dumps(state))
    (data / "server.password").write_text("known-to-them\n")
    change, says = UNSAFE_DATA_DIRS[case]
    change(data)
    before = data.stat()

    result = run_cli(*command, env=stack_env(data), cwd=tmp_path, timeout=30)

    [line] = _error_lines(result)
    assert line.startswith(
        f"error: ConfigurationError: Invalid configuration: data dir {data}{says}"
    )
    assert "what to do: " in result.stderr and "BACKUP_JOBS_DATA_DIR" in result.stderr
    assert result.returncode == ConfigurationError().exit_code
    assert "ready" not in result.stdout and not using(data)
    assert sorted(p.name for p in data.iterdir()) == ["server.json", "server.password"]
    assert data.stat().st_uid == before.st_uid and data.stat().st_mode == before.st_mode


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a directory to another user")
def test_up_with_a_redis_url_still_refuses_a_data_dir_another_user_owns(
    redis_base_url: str, tmp_path: Path
) -> None:
    # Beat would load its schedule (a pickle) from there, and the logs would go there.
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, NOBODY, NOBODY)

    result = run_cli("up", env=stack_env(data, redis_url=redis_base_url), timeout=30)

    [line] = _error_lines(result)
    assert f"data dir {data} is owned by nobody (uid 65534)" in line
    assert result.returncode == ConfigurationError().exit_code
    assert "ready" not in result.stdout and not list(data.iterdir()) and not using(data)

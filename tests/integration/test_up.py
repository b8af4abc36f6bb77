"""`backup-jobs up` looked at from outside: honest about being up, and locked.

It says "Running" only once every process answers; its embedded server takes a password
that only the data dir's owner can read. One `up` serves every test here; none of them
changes it (the attack must not either).
"""

from __future__ import annotations

import contextlib
import json
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from celery import Celery

from backup_jobs import connection, wire
from backup_jobs.errors import AlreadyRunning, RedisUnavailable
from tests.harness import eventually, run_cli
from tests.up import Up, descendants, http_status, stack_env, unauthenticated_ping


@dataclass
class Running:
    """A running `up`, its environment and data dir."""

    up: Up
    env: dict[str, str]
    data: Path
    cwd: Path
    # What answered at the moment `up` said "Running".
    answered: dict[str, object]

    @property
    def port(self) -> int:
        """The embedded server's port, from its state file."""
        server = connection.recorded(self.data)
        assert server is not None
        return server.port

    def url(self, with_password: bool = True) -> str:
        """The embedded server's URL, with or without its password."""
        password = (self.data / "server.password").read_text().strip() if with_password else ""
        auth = f":{password}@" if password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """`backup-jobs up` with Flower, once every process answers."""
    cwd = tmp_path_factory.mktemp("locked")
    data = cwd / "data"
    env = stack_env(data)
    up = Up(env, cwd)
    try:
        up.wait_for("Running", 90)
        url = Running(up, env, data, cwd, {}).url()
        answered = {
            "workers": _workers_answering(url),
            "beat": json.loads(redis.Redis.from_url(url).get(wire.BEAT_KEY) or "{}").get("pid"),
            "flower": http_status(f"http://127.0.0.1:{env['BACKUP_JOBS_FLOWER_PORT']}"),
            "exporter": http_status(f"http://127.0.0.1:{env['BACKUP_JOBS_EXPORTER_PORT']}/metrics"),
        }
        yield Running(up, env, data, cwd, answered)
    finally:
        up.stop()


def _workers_answering(url: str) -> int:
    app = Celery("probe", broker=url, set_as_current=False)
    try:
        return len(app.control.ping(timeout=1.0))
    finally:
        app.close()


def _every_argv() -> list[bytes]:
    found = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            found.append(path.read_bytes())
    return found


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_up_says_running_only_once_every_process_answers_with_one_line_each(
    running: Running,
) -> None:
    lines = running.up.lines
    before = lines[: next(i for i, line in enumerate(lines) if line.startswith("Running"))]
    pids = {
        line.split()[0]: int(match.group(1))
        for line in before
        if (match := re.search(r" ready \(pid (\d+), .*log ", line))
    }

    assert running.answered["workers"] == 2 and running.answered["flower"] == 200
    assert running.answered["exporter"] == 200
    assert len(before) == 6
    assert set(pids) == {"server", "worker", "ticks", "beat", "flower", "exporter"}
    assert running.answered["beat"] == str(pids["beat"])
    assert set(pids.values()) <= descendants(running.up.process.pid)


def test_the_data_dir_the_state_and_password_files_and_the_aof_are_private(
    running: Running,
) -> None:
    data = running.data
    aof = list((data / "valkey" / "appendonlydir").iterdir())

    assert _mode(data) == 0o700
    assert _mode(data / "valkey") == 0o700
    assert _mode(data / "server.json") == 0o600
    assert _mode(data / "server.password") == 0o600
    assert _mode(data / "valkey" / "valkey.conf") == 0o600
    assert aof and all(_mode(path) & 0o077 == 0 for path in aof)


def test_a_client_without_the_password_is_refused_with_noauth(running: Running) -> None:
    reply = unauthenticated_ping(running.port)

    assert reply.startswith(b"-NOAUTH"), reply


def test_the_cli_without_the_password_says_where_the_password_is(running: Running) -> None:
    env = {**running.env, "BACKUP_JOBS_REDIS_URL": running.url(with_password=False)}

    result = run_cli("job", "list", env=env, cwd=running.cwd)

    assert result.returncode == RedisUnavailable().exit_code, result.stderr
    assert "authentication failed" in result.stderr
    assert "server.password" in result.stderr and "BACKUP_JOBS_DATA_DIR" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_shutdown_broadcast_without_the_password_does_nothing_to_the_stack(
    running: Running,
) -> None:
    before = descendants(running.up.process.pid)
    attacker = Celery("attacker", broker=running.url(with_password=False), set_as_current=False)
    attacker.conf.broker_connection_retry = False
    attacker.conf.broker_transport_options = {"max_retries": 0}  # refused at once, not in 6 s

    with pytest.raises(Exception, match=r"(?i)auth"):
        attacker.control.shutdown()  # every worker and the tick consumer, were it accepted
    attacker.close()

    assert eventually(lambda: _workers_answering(running.url()) == 2, 10)
    assert running.up.process.poll() is None
    assert before <= descendants(running.up.process.pid)


def test_the_password_shows_in_no_process_arguments_and_not_in_ups_output(
    running: Running,
) -> None:
    password = (running.data / "server.password").read_text().strip()

    assert len(password) >= 32
    assert not [args for args in _every_argv() if password.encode() in args]
    assert password not in running.up.output


def test_other_commands_find_the_locked_server_through_the_data_dir(running: Running) -> None:
    fleet = run_cli("fleet", "create-demo", env=running.env, cwd=running.cwd)
    discovered = run_cli("vm", "discover", "--wait", env=running.env, cwd=running.cwd)

    assert fleet.returncode == 0, fleet.stderr
    assert discovered.returncode == 0, discovered.stderr


@pytest.mark.parametrize("command", ["up", "demo"])
def test_a_second_up_on_the_same_data_dir_says_it_already_runs_and_changes_nothing(
    running: Running, command: str
) -> None:
    server = connection.recorded(running.data)
    assert server is not None

    result = run_cli(command, env=running.env, cwd=running.cwd, timeout=30)

    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert errors == [
        f"error: AlreadyRunning: backup-jobs is already running for data dir "
        f"{running.data.resolve()} (server pid {server.pid}, started by pid "
        f"{running.up.process.pid})."
    ], result.stderr
    assert "what to do: Stop it first" in result.stderr
    assert "BACKUP_JOBS_DATA_DIR" in result.stderr and "Flower" not in result.stderr
    assert result.returncode == AlreadyRunning().exit_code
    assert "ready" not in result.stdout and not (running.data / "demo-fleet").exists()
    assert connection.recorded(running.data) == server and running.up.process.poll() is None

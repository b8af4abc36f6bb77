"""The embedded server's own files: a password made once, a private config, private modes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import redis

from backup_jobs import connection
from backup_jobs.errors import AlreadyRunning
from backup_jobs.runtime import embedded
from tests.up import unauthenticated_ping


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_password_is_made_once_private_and_kept(tmp_path: Path) -> None:
    first = embedded.ensure_password(tmp_path)
    second = embedded.ensure_password(tmp_path)

    assert first == second and len(first) >= 32
    assert _mode(tmp_path / "server.password") == 0o600


def test_private_files_and_dirs_are_private_whatever_the_umask_and_earlier_modes(
    tmp_path: Path,
) -> None:
    loose = tmp_path / "data"
    loose.mkdir(mode=0o755)
    (loose / "server.json").write_text("{}")
    (loose / "server.json").chmod(0o644)
    previous = os.umask(0)
    try:
        embedded.private_dir(loose)
        embedded.write_private(loose / "server.json", "{}")
    finally:
        os.umask(previous)

    assert _mode(loose) == 0o700
    assert _mode(loose / "server.json") == 0o600
    assert [p.name for p in loose.iterdir()] == ["server.json"]  # no temporary file left


def test_a_server_in_a_data_dir_with_spaces_and_quotes_answers_only_with_its_password(
    tmp_path: Path,
) -> None:
    data = tmp_path / 'my "backup" data'
    server, process = embedded.start(data)
    try:
        with_password = redis.Redis.from_url(server.url).ping()
        without = unauthenticated_ping(server.port)
        found = connection.running(data)
    finally:
        embedded.stop(server, process, data)

    assert with_password and without.startswith(b"-NOAUTH")
    assert found == server
    assert server.password not in " ".join(process.args)  # type: ignore[arg-type]
    assert _mode(data / "valkey" / "valkey.conf") == 0o600


def test_a_running_server_that_answers_is_refused_and_a_pid_that_does_not_answer_is_not(
    tmp_path: Path,
) -> None:
    answering, silent = tmp_path / "answering", tmp_path / "silent"
    server, process = embedded.start(answering)
    silent.mkdir(mode=0o700)
    # A live pid (this one) on a port where nothing listens: not a server of this data dir.
    lone = connection.EmbeddedServer(os.getpid(), embedded.free_port(), owner=os.getpid())
    embedded.write_private(connection.state_file(silent), lone.state())
    try:
        with pytest.raises(AlreadyRunning) as refused:
            embedded.refuse_if_running(answering)
        embedded.refuse_if_running(silent)
    finally:
        embedded.stop(server, process, answering)

    assert f"data dir {answering.resolve()} (server pid {server.pid}" in refused.value.message
    assert "BACKUP_JOBS_DATA_DIR" in refused.value.recommended_action

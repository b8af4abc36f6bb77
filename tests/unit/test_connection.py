"""Where the server is: the state file and the password file of the data dir, read."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from backup_jobs import connection
from backup_jobs.errors import RedisUnavailable
from backup_jobs.settings import Settings
from tests.harness import eventually

SECRET = "pw-123"  # noqa: S105 - a test value


def _record(data_dir: Path, pid: int, port: int, password: str | None = None) -> None:
    (data_dir / "server.json").write_text(json.dumps({"version": 1, "pid": pid, "port": port}))
    if password is not None:
        (data_dir / "server.password").write_text(password + "\n")


def test_the_url_of_a_running_server_carries_the_password_of_its_data_dir(tmp_path: Path) -> None:
    _record(tmp_path, os.getpid(), 6390, SECRET)

    url = connection.resolve_redis_url(Settings(data_dir=tmp_path))

    assert url == f"redis://:{SECRET}@127.0.0.1:6390/0"


def test_a_server_never_shows_its_password_when_printed(tmp_path: Path) -> None:
    _record(tmp_path, os.getpid(), 6390, SECRET)

    server = connection.running(tmp_path)

    assert server is not None and server.password == SECRET
    assert SECRET not in repr(server) and SECRET not in server.state()


def test_a_data_dir_this_user_may_not_read_says_to_run_as_its_owner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _record(tmp_path, os.getpid(), 6390, SECRET)
    state = tmp_path / "server.json"
    read_text = Path.read_text

    def refuse(path: Path, *args: object, **kwargs: object) -> str:
        if path == state:
            raise PermissionError(13, "Permission denied", str(path))
        return read_text(path)

    monkeypatch.setattr(Path, "read_text", refuse)

    with pytest.raises(RedisUnavailable) as refused:
        connection.resolve_redis_url(Settings(data_dir=tmp_path))

    assert "Permission denied" in refused.value.message
    assert str(tmp_path) in refused.value.message
    assert "as the user that owns" in refused.value.recommended_action


def test_a_zombie_is_not_a_running_server(tmp_path: Path) -> None:
    # What a killed server is until its parent reaps it: `find` took it for a live server.
    zombie = subprocess.Popen(["true"])
    try:
        eventually(lambda: "Z" in Path(f"/proc/{zombie.pid}/stat").read_text().split(")")[-1], 5)
        _record(tmp_path, zombie.pid, 6390, SECRET)

        assert not connection.is_running(zombie.pid)
        assert connection.running(tmp_path) is None
        assert connection.is_running(os.getpid())
    finally:
        zombie.wait()

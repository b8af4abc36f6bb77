"""Where the server is: the state file and the password file of the data dir, read."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from backup_jobs import connection
from backup_jobs.errors import ConfigurationError, RedisUnavailable
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


NOBODY = 65534  # a uid that is not this test's
# Giving a file to another user takes root; opening its mode does not.
AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="only root can chown")


def _tampered(data: Path, change: Callable[[Path], None]) -> None:
    """A data dir as `up` leaves it (0700, 0600 files, a Valkey dir), then ``change``d."""
    data.mkdir(mode=0o700)
    (data / "valkey").mkdir(mode=0o700)
    _record(data, os.getpid(), 6390, SECRET)
    for name in ("server.json", "server.password"):
        (data / name).chmod(0o600)
    change(data)


def _give_away(name: str) -> Callable[[Path], None]:
    return lambda data: os.chown(data / name, NOBODY, NOBODY)


def _open_up(name: str, mode: int) -> Callable[[Path], None]:
    return lambda data: (data / name).chmod(mode)


def _case(change: Callable[[Path], None], named: str, says: str, root: bool = False) -> object:
    return pytest.param(change, named, says, marks=[AS_ROOT] if root else [])


# Each case: what another user (or a careless mode) did, which path is named, and how.
UNSAFE = {
    "data dir owned by another user": _case(
        _give_away("."), ".", "owned by nobody (uid 65534)", True
    ),
    "state file owned by another user": _case(
        _give_away("server.json"), "server.json", "owned by nobody (uid 65534)", True
    ),
    "password file owned by another user": _case(
        _give_away("server.password"), "server.password", "owned by nobody (uid 65534)", True
    ),
    "Valkey dir owned by another user": _case(
        _give_away("valkey"), "valkey", "owned by nobody", True
    ),
    "data dir writable by everyone": _case(_open_up(".", 0o777), ".", "mode 0777"),
    "data dir writable by its group": _case(_open_up(".", 0o770), ".", "mode 0770"),
    "state file writable by everyone": _case(_open_up("server.json", 0o666), "server.json", "0666"),
    "Valkey dir writable by its group": _case(_open_up("valkey", 0o770), "valkey", "mode 0770"),
}


@pytest.mark.parametrize(("change", "named", "says"), UNSAFE.values(), ids=UNSAFE.keys())
def test_a_data_dir_another_user_owns_or_may_write_is_refused_naming_path_and_owner(
    change: Callable[[Path], None], named: str, says: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    _tampered(data, change)

    with pytest.raises(ConfigurationError) as refused:
        connection.resolve_redis_url(Settings(data_dir=data))

    path = (data / named).resolve()
    assert re.search(rf" {re.escape(str(path))}[ ,]", refused.value.message)
    assert says in refused.value.message
    assert "BACKUP_JOBS_DATA_DIR" in refused.value.recommended_action


def test_a_private_data_dir_of_this_user_is_accepted_even_if_others_may_read_it(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    _tampered(data, _open_up(".", 0o755))

    assert connection.resolve_redis_url(Settings(data_dir=data)).endswith("@127.0.0.1:6390/0")

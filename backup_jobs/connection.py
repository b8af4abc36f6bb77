"""Where the Redis server is: ``BACKUP_JOBS_REDIS_URL``, else the embedded server's state file.

``backup-jobs up`` (or ``backup-jobs server``) records the embedded server it started in
``<data dir>/server.json`` and keeps its password in ``<data dir>/server.password`` (both
0600, the data dir 0700: only the user who runs the stack can use the server). Every other
process (the CLI, ``Client.from_env``, the workers) finds the server and its password by
reading these files; this module holds their format and only reads them.
Starting and stopping the server is ``runtime/embedded.py``'s business: production wiring
depends on nothing of it beyond this (DESIGN §10).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from backup_jobs.errors import ConfigurationError, RedisUnavailable
from backup_jobs.settings import Settings

STATE_FILE = "server.json"
PASSWORD_FILE = "server.password"  # noqa: S105 - the file name, not a password
# The version of the state file's format.
STATE_VERSION = 1
# The embedded server listens on loopback only.
HOST = "127.0.0.1"


@dataclass(frozen=True)
class EmbeddedServer:
    """The embedded server as its state file records it, with the password of the data dir."""

    pid: int
    port: int
    # Kept out of repr: a server printed in a log or a test failure must not show it.
    password: str = field(default="", repr=False)

    @property
    def url(self) -> str:
        """The Redis URL of the server (database 0), its password included."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}/0"

    def state(self) -> str:
        """The state file's JSON for this server."""
        return json.dumps({"version": STATE_VERSION, "pid": self.pid, "port": self.port})


def state_file(data_dir: Path) -> Path:
    """Where the embedded server of ``data_dir`` is recorded."""
    return data_dir / STATE_FILE


def password_file(data_dir: Path) -> Path:
    """Where the password of the embedded server of ``data_dir`` is kept."""
    return data_dir / PASSWORD_FILE


def recorded(data_dir: Path) -> EmbeddedServer | None:
    """The server the state file names, running or not; None without a readable record.

    A state file this user may not read is an error that says whose data dir it is: it is
    the usual mistake (another user's stack, or ``sudo`` on one side only).
    """
    text = _read_private(state_file(data_dir))
    if text is None:
        return None
    try:
        data = json.loads(text)
        pid, port = int(data["pid"]), int(data["port"])
    except (ValueError, KeyError, TypeError):
        return None
    return EmbeddedServer(pid, port, read_password(data_dir))


def read_password(data_dir: Path) -> str:
    """The password of the embedded server of ``data_dir``; empty if none was generated."""
    return (_read_private(password_file(data_dir)) or "").strip()


def _read_private(path: Path) -> str | None:
    """A file of the data dir, None if it does not exist; unreadable ones raise."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        raise RedisUnavailable(
            detail=f"the embedded server of data dir {path.parent.resolve()}: {exc.strerror}",
            action=(
                f"Run the command as the user that owns {path.parent.resolve()} (the one who "
                "started `backup-jobs up` there), or point BACKUP_JOBS_DATA_DIR at your own."
            ),
        ) from exc
    except OSError:
        return None


def running(data_dir: Path) -> EmbeddedServer | None:
    """The server recorded in ``data_dir``, if its process is still alive."""
    server = recorded(data_dir)
    return server if server is not None and is_alive(server.pid) else None


def is_alive(pid: int) -> bool:
    """True if a process ``pid`` exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def resolve_redis_url(settings: Settings) -> str:
    """``BACKUP_JOBS_REDIS_URL`` if set, else the embedded server of the data dir."""
    if settings.redis_url:
        return settings.redis_url
    server = running(settings.data_dir)
    if server is None:
        raise ConfigurationError(
            detail=(
                "BACKUP_JOBS_REDIS_URL is unset and no embedded server runs for data dir "
                f"{settings.data_dir.resolve()}; start `backup-jobs up` in another terminal "
                "(same BACKUP_JOBS_DATA_DIR) or set BACKUP_JOBS_REDIS_URL"
            )
        )
    return server.url

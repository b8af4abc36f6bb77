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
# The version of the state file's format (2: the owner's pid).
STATE_VERSION = 2
# The embedded server listens on loopback only.
HOST = "127.0.0.1"
# Process states of /proc/PID/stat for a process that has exited (zombie, dead).
ZOMBIE_STATES = ("Z", "X", "x")
PROC = Path("/proc")


@dataclass(frozen=True)
class EmbeddedServer:
    """The embedded server as its state file records it, with the password of the data dir.

    ``owner`` is the process that started it and stops it (``backup-jobs up`` or ``server``):
    a server whose owner is gone was left behind, and the next start may stop it.
    """

    pid: int
    port: int
    # Kept out of repr: a server printed in a log or a test failure must not show it.
    password: str = field(default="", repr=False)
    owner: int | None = None

    @property
    def url(self) -> str:
        """The Redis URL of the server (database 0), its password included."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}/0"

    def state(self) -> str:
        """The state file's JSON for this server."""
        record = {"version": STATE_VERSION, "pid": self.pid, "port": self.port, "owner": self.owner}
        return json.dumps(record)


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
        owner = int(data["owner"]) if data.get("owner") is not None else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return EmbeddedServer(pid, port, read_password(data_dir), owner)


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
    """The server recorded in ``data_dir``, if its process is still running."""
    server = recorded(data_dir)
    return server if server is not None and is_running(server.pid) else None


def is_running(pid: int) -> bool:
    """True if process ``pid`` runs: exists and has not exited (a zombie has exited).

    Where there is no ``/proc`` (not Linux), a zombie cannot be told from a live process.
    """
    if not PROC.is_dir():
        return _exists(pid)
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    # The state follows the command name, which is in parentheses and may contain spaces.
    return stat.rsplit(")", 1)[-1].split()[0] not in ZOMBIE_STATES


def _exists(pid: int) -> bool:
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

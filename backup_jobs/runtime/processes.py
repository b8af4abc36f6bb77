"""Start and stop the service's processes: embedded server, Celery worker, beat and Flower.

The commands are the ones the ``Procfile`` runs (a test holds them equal); each process gets
its own process group so that stopping the stack leaves nothing running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from backup_jobs import wire
from backup_jobs.connection import EmbeddedServer
from backup_jobs.runtime import embedded
from backup_jobs.settings import PREFIX, Settings

# SIGTERM asks Celery for a warm shutdown; after this long the process group is killed.
STOP_GRACE_SECONDS = 15.0
# Threads of the tick consumer.
TICK_CONCURRENCY = 2


def celery_command(*args: str) -> list[str]:
    """``celery -A workers ARGS`` run by this Python."""
    return [sys.executable, "-m", "celery", "-A", "workers", *args]


def flower_config_path() -> Path:
    """Where the installed ``workers/flowerconfig.py`` is."""
    return Path(__file__).resolve().parents[2] / "workers" / "flowerconfig.py"


def process_commands(settings: Settings) -> dict[str, list[str]]:
    """The worker, tick consumer, beat and Flower commands, as the Procfile has them."""
    return {
        "worker": celery_command(
            "worker",
            "--queues",
            ",".join(wire.QUEUES),
            # Time limits need the prefork pool (DESIGN §5).
            "--pool",
            "prefork",
            "--concurrency",
            str(settings.worker_concurrency),
            "--hostname",
            f"backup-jobs-{uuid.uuid4().hex[:8]}@%h",
            "--loglevel",
            "INFO",
        ),
        # Beat's ticks only talk to Redis and take milliseconds: two threads keep one tick
        # from waiting behind another, and no job ever shares this process (DESIGN §10).
        "ticks": celery_command(
            "worker",
            "--queues",
            wire.QUEUE_TICKS,
            "--pool",
            "threads",
            "--concurrency",
            str(TICK_CONCURRENCY),
            "--hostname",
            f"backup-jobs-ticks-{uuid.uuid4().hex[:8]}@%h",
            "--loglevel",
            "INFO",
        ),
        "beat": celery_command(
            "beat",
            "--schedule",
            str(settings.data_dir.resolve() / "celerybeat-schedule"),
            "--loglevel",
            "INFO",
        ),
        "flower": celery_command("flower", f"--conf={flower_config_path()}"),
    }


@dataclass
class Stack:
    """The running processes of one deployment on this machine."""

    settings: Settings
    redis_url: str
    server: EmbeddedServer | None = None
    server_process: subprocess.Popen[bytes] | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def flower_url(self) -> str:
        """Where Flower answers."""
        return f"http://{self.settings.flower_address}:{self.settings.flower_port}"

    @property
    def log_dir(self) -> Path:
        """Where each process writes its log."""
        return self.settings.data_dir / "logs"


def child_environment(
    settings: Settings, redis_url: str | None, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of worker, beat and Flower: this one, pinned to the server and dirs.

    Without ``redis_url`` (the embedded server) the children find the server and its
    password in the data dir, as every other command does: the password stays out of the
    environment.
    """
    env = dict(os.environ)
    env.pop(f"{PREFIX}REDIS_URL", None)
    env.update(
        {
            f"{PREFIX}DATA_DIR": str(settings.data_dir.resolve()),
            f"{PREFIX}FLEET_DIR": str(settings.fleet_dir.resolve()),
            f"{PREFIX}VAULT_DIR": str(settings.vault_dir.resolve()),
        }
    )
    if redis_url:
        env[f"{PREFIX}REDIS_URL"] = redis_url
    env.update(extra or {})
    return env


def start_stack(
    settings: Settings, with_flower: bool = True, extra_env: dict[str, str] | None = None
) -> Stack:
    """Start the embedded server (unless a URL is set), a worker, beat and Flower."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.redis_url:
        stack = Stack(settings, settings.redis_url)
    else:
        server, process = embedded.start(settings.data_dir)
        stack = Stack(settings, server.url, server, process)
    try:
        stack.log_dir.mkdir(parents=True, exist_ok=True)
        env = child_environment(settings, settings.redis_url, extra_env)
        for name, command in process_commands(settings).items():
            if name == "flower" and not with_flower:
                continue
            stack.processes[name] = _spawn(command, env, stack.log_dir / f"{name}.log")
    except BaseException:
        stop_stack(stack)
        raise
    return stack


def stop_stack(stack: Stack) -> None:
    """Stop every process of the stack, then the embedded server."""
    for process in stack.processes.values():
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in stack.processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()
    if stack.server is not None:
        embedded.stop(stack.server, stack.server_process, stack.settings.data_dir)


def exited(stack: Stack) -> list[str]:
    """Names of the stack's processes that have exited."""
    return [name for name, process in stack.processes.items() if process.poll() is not None]


def wait_for_http(url: str, timeout: float) -> bool:
    """True once ``url`` answers at all (any HTTP status), False after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own loopback URL
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            time.sleep(0.2)
    return False


def _spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)

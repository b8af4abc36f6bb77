"""The service's processes: their commands, their environment, and starting and stopping one.

The commands are the ones the ``Procfile`` runs (a test holds them equal). Each process gets
its own session, so that stopping it stops everything it started, and is told by the kernel
to die with its parent (``PR_SET_PDEATHSIG``, Linux): a ``backup-jobs up`` killed with
SIGKILL leaves nothing running behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from backup_jobs import wire
from backup_jobs.settings import PREFIX, Settings

# SIGTERM asks Celery for a warm shutdown; after this long the process group is killed.
STOP_GRACE_SECONDS = 15.0
# Threads of the tick consumer.
TICK_CONCURRENCY = 2
# prctl(2) option: the signal a process receives when its parent dies.
PR_SET_PDEATHSIG = 1


def celery_command(*args: str) -> list[str]:
    """``celery -A workers ARGS`` run by this Python."""
    return [sys.executable, "-m", "celery", "-A", "workers", *args]


def backup_jobs_command(*args: str) -> list[str]:
    """``backup-jobs ARGS`` run by this Python."""
    return [sys.executable, "-m", "backup_jobs", *args]


def flower_config_path() -> Path:
    """Where the installed ``workers/flowerconfig.py`` is."""
    return Path(__file__).resolve().parents[2] / "workers" / "flowerconfig.py"


def node_names() -> dict[str, str]:
    """Fresh Celery node names for the job worker and the tick consumer.

    Unique, so that several machines never clash, and known in advance, so that ``up`` can
    ping exactly its own workers.
    """
    host = socket.gethostname()
    return {
        "worker": f"backup-jobs-{uuid.uuid4().hex[:8]}@{host}",
        "ticks": f"backup-jobs-ticks-{uuid.uuid4().hex[:8]}@{host}",
    }


# Mingle (a second of asking other workers for their revoked tasks at start) and gossip (every
# worker following every other) serve revokes and elections, which this service does not use:
# the job record, not a revoke, says what runs. Without them a worker is ready a second sooner
# and the broker carries less chatter; Flower still sees every worker through its events.
QUIET_STARTUP = ("--without-mingle", "--without-gossip")


def process_commands(
    settings: Settings, nodes: dict[str, str] | None = None
) -> dict[str, list[str]]:
    """The worker, tick consumer, beat, Flower and exporter commands, as the Procfile has them."""
    nodes = nodes or node_names()
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
            nodes["worker"],
            *QUIET_STARTUP,
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
            nodes["ticks"],
            *QUIET_STARTUP,
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
        "exporter": backup_jobs_command("exporter"),
    }


# What each process receives when its parent dies. The job worker is killed: its prefork
# children get SIGKILL from billiard anyway, and a killed attempt is reaped and retried.
# The others stop cleanly (the server flushes its AOF).
DEATH_SIGNALS = {"worker": signal.SIGKILL}


def death_signal(name: str) -> signal.Signals:
    """The signal process ``name`` receives when the process that started it dies."""
    return DEATH_SIGNALS.get(name, signal.SIGTERM)


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
            f"{PREFIX}RESTORE_ROOT": str(settings.restore_root.resolve()),
        }
    )
    if redis_url:
        env[f"{PREFIX}REDIS_URL"] = redis_url
    tls_files = {
        "REDIS_CA_FILE": settings.redis_ca_file,
        "REDIS_CERT_FILE": settings.redis_cert_file,
        "REDIS_KEY_FILE": settings.redis_key_file,
    }
    env.update({PREFIX + name: str(path.resolve()) for name, path in tls_files.items() if path})
    env.update(extra or {})
    return env


def spawn(
    command: list[str],
    *,
    log: Path | None,
    dies_with: signal.Signals,
    env: dict[str, str] | None = None,
    umask: int | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` in a session of its own, logging to ``log``, dying with its parent."""
    with contextlib.ExitStack() as files:
        out = files.enter_context(open(log, "ab")) if log else subprocess.DEVNULL
        return subprocess.Popen(
            command,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_child_setup(dies_with, umask),  # noqa: PLW1509 - no threads in `up`
        )


def _child_setup(dies_with: signal.Signals, umask: int | None) -> Callable[[], None]:
    """What the child runs between fork and exec: its umask and its parent-death signal."""
    set_death_signal = _death_signal_setter()
    parent = os.getpid()

    def setup() -> None:
        if umask is not None:
            os.umask(umask)
        if set_death_signal is not None:
            set_death_signal(dies_with)
            # The parent may have died between fork and prctl: then no signal would come.
            if os.getppid() != parent:
                os.kill(os.getpid(), dies_with)

    return setup


def _death_signal_setter() -> Callable[[int], None] | None:
    """``prctl(PR_SET_PDEATHSIG, sig)`` on Linux (libc loaded before the fork), else None."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def set_death_signal(sig: int) -> None:
        prctl(PR_SET_PDEATHSIG, sig)

    return set_death_signal


def terminate(processes: list[subprocess.Popen[bytes]], grace: float = STOP_GRACE_SECONDS) -> None:
    """Stop processes together: SIGTERM each session, SIGKILL what is left after ``grace``.

    Each is reaped, and whatever it started that outlived it is killed with its group.
    """
    for process in processes:
        signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        signal_group(process, signal.SIGKILL)


def signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Signal the process group a process leads (it and everything it started)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


# Prefixes that say when and where, not what: Celery's "[time: LEVEL/Process]" and Valkey's
# "pid:role date time level-mark".
_LOG_PREFIXES = re.compile(
    r"^(\[\d{4}-\d\d-\d\d [\d:,.]+: \w+/[\w-]+\] |\d+:[A-Z] \d+ \w+ \d{4} [\d:.]+ [.*#-] )"
)


def last_log_line(log: Path, offset: int = 0) -> str:
    """The last non-empty line written to ``log`` after ``offset``: usually why it exited."""
    try:
        with open(log, "rb") as source:
            source.seek(offset)
            text = source.read().decode(errors="replace")
    except OSError:
        text = ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return _LOG_PREFIXES.sub("", lines[-1]) if lines else "it logged nothing"

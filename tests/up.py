"""`backup-jobs up` as a user runs it: its environment, its output line by line, its processes.

The integration tests of the stack start the real command in a subprocess and look at it from
outside: what it prints, which processes it leaves, which files it writes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

from backup_jobs.errors import ProcessFailed
from backup_jobs.runtime import embedded
from tests.harness import eventually


def stack_env(data_dir: Path, **variables: str) -> dict[str, str]:
    """A user's environment for the stack on ``data_dir``: no BACKUP_JOBS_* but these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKUP_JOBS_")}
    # As in an activated virtualenv: the Procfile's `celery` and `backup-jobs` are on PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return {
        **env,
        "PATH": path,
        "BACKUP_JOBS_DATA_DIR": str(data_dir),
        "BACKUP_JOBS_FLOWER_PORT": str(embedded.free_port()),
        "BACKUP_JOBS_EXPORTER_PORT": str(embedded.free_port()),
        **{f"BACKUP_JOBS_{name.upper()}": value for name, value in variables.items()},
    }


class Up:
    """A running `backup-jobs ARGS` (``up`` by default) whose output is collected as it comes."""

    def __init__(self, env: dict[str, str], cwd: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "backup_jobs", *(args or ("up",))],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        """Everything printed so far."""
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        """The first line containing ``text``, once printed."""

        def line() -> str | None:
            found = [line for line in self.lines if text in line]
            if not found and self.process.poll() is not None:
                self._reader.join(5)
                found = [line for line in self.lines if text in line]
                assert found, f"exited {self.process.returncode} without {text!r}:\n{self.output}"
            return found[0] if found else None

        return eventually(line, timeout, 0.05)

    def pid_of(self, name: str, timeout: float = 90.0) -> int:
        """The pid of process ``name`` as its ready line gives it (``worker  ready (pid N``)."""
        line = self.wait_for(f"{name:<7} ready (pid ", timeout)
        return int(line.split("(pid ", 1)[1].split(",", 1)[0])

    def wait_exit(self, timeout: float = 60.0) -> int:
        """The exit status, once it has exited by itself."""
        code = self.process.wait(timeout=timeout)
        self._reader.join(5)
        return code

    def stop(self, sig: signal.Signals = signal.SIGINT) -> int:
        """Signal it (Ctrl-C by default) and wait for it to exit."""
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(sig)
        try:
            return self.wait_exit(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.wait_exit(10)


def running(pid: int) -> bool:
    """True if ``pid`` is a process that has not exited (a zombie has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, their children, ...)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    pending = [pid]
    while pending:
        for child in parents.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return {p for p in found if running(p)}


def signal_all(pids: set[int], sig: signal.Signals = signal.SIGKILL) -> None:
    """Signal processes a failed test may have left behind."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def using(data_dir: Path) -> set[int]:
    """Live processes whose environment names ``data_dir``: a stack's, wherever they hang."""
    wanted = {f"BACKUP_JOBS_DATA_DIR={path}".encode() for path in (data_dir, data_dir.resolve())}
    found = set()
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError, ValueError):
            if wanted & set(environ.read_bytes().split(b"\0")):
                pid = int(environ.parent.name)
                if pid != os.getpid() and running(pid):
                    found.add(pid)
    return found


def http_status(url: str) -> int | None:
    """The HTTP status ``url`` answers with, or None if nothing answers there."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as refused:
        return refused.code
    except OSError:
        return None


def finish(up: Up, data_dir: Path) -> set[int]:
    """Stop ``up`` if it runs and kill what its stack left (a failing test leaves no orphans).

    Returns the pids that were left: an empty set when ``up`` cleaned up after itself.
    """
    up.stop()
    left = using(data_dir)
    signal_all(left)
    return left


def unauthenticated_ping(port: int) -> bytes:
    """What a server on loopback ``port`` answers a PING from a client without a password."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(200)


def assert_process_failed(output: str, exit_code: int, says: str) -> str:
    """The command ended as every CLI error does: one ``error: ProcessFailed: ...`` line saying
    ``says``, then ``what to do`` naming a log, and ProcessFailed's exit code. Returns the line.
    """
    lines = output.splitlines()
    [at] = [i for i, line in enumerate(lines) if line.lower().startswith("error")]
    assert lines[at].startswith("error: ProcessFailed: A process of the stack failed: "), output
    assert says in lines[at], output
    assert lines[at + 1].startswith("  what to do: Fix what ") and ".log" in lines[at + 1]
    assert exit_code == ProcessFailed().exit_code, output
    assert "Traceback" not in output
    return lines[at]

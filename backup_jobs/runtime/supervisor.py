"""Keeping the stack's processes running: notice an exit, say so, restart with back-off.

``backup-jobs up`` looks at its children a few times a second. A child that exits is reaped
at once (no zombie), reported in one line (its name, exit status and log file) and started
again after a back-off that doubles with each crash in a row, from 1 s up to 30 s (a child
that ran for a minute starts again from 1 s). A child that crashed 5 times within 2 minutes
will not get better by itself: the supervisor gives up with ``ProcessFailed`` and ``up`` stops
the whole stack with an error that names the process, why it exited, and its log.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import NoReturn

from backup_jobs.errors import BackupJobsError, ProcessFailed
from backup_jobs.runtime import processes

# How often the children are looked at: an exit is noticed well within a second.
POLL_SECONDS = 0.25
# Back-off before a restart: the first delay (a setting, 1 s by default), doubled after each
# recent crash, at most 30 s.
BACKOFF_MAX_SECONDS = 30.0
# A child that ran this long before it exited was healthy: its back-off starts again.
STABLE_SECONDS = 60.0
# This many crashes within the window and the supervisor gives up.
CRASH_LIMIT = 5
CRASH_WINDOW_SECONDS = 120.0


def _answers(pid: int) -> bool:
    """The readiness of a process that is ready once it runs (the server waits in launch)."""
    return True


@dataclass(eq=False)
class Child:
    """One process of the stack: how to start it, how to tell it is up, where it logs."""

    name: str
    log: Path
    launch: Callable[[], subprocess.Popen[bytes]]
    # Asked with the process's pid until it says yes (see ``readiness``).
    ready: Callable[[int], bool] = _answers
    # Shown in the ready line, e.g. Flower's URL.
    detail: str = ""
    process: subprocess.Popen[bytes] | None = None
    # Where this run's part of the (appended) log starts.
    log_offset: int = 0
    # When it was last started, its recent crashes, its crashes in a row, its next start.
    started_at: float = 0.0
    crashes: list[float] = field(default_factory=list)
    in_a_row: int = 0
    restart_at: float | None = None

    @property
    def pid(self) -> int:
        """The pid of the running process."""
        assert self.process is not None, f"{self.name} was not started"
        return self.process.pid

    def start(self) -> None:
        """Start the process (or start it again)."""
        self.log_offset = self.log.stat().st_size if self.log.exists() else 0
        self.process = self.launch()

    def has_exited(self) -> bool:
        """True if the process has exited; it is reaped by asking."""
        return self.process is not None and self.process.poll() is not None

    def exit_status(self) -> str:
        """How it exited: ``exit status 3`` or ``killed by SIGKILL``."""
        code = self.process.returncode if self.process is not None else None
        if code is not None and code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit status {code}"

    def exit_cause(self) -> str:
        """How it exited and, unless it was killed, the last line it logged."""
        status = self.exit_status()
        if status.startswith("killed"):
            return status
        return f"{status}: {processes.last_log_line(self.log, self.log_offset)}"

    def line(self, event: str) -> str:
        """One line of ``up``'s output about this process."""
        return f"{self.name:<7} {event}"

    def ready_line(self) -> str:
        """The line that says it answers."""
        detail = f"{self.detail}, " if self.detail else ""
        return self.line(f"ready (pid {self.pid}, {detail}log {self.log})")


class Supervisor:
    """Restarts the children that exit, with back-off, until one crashes too often."""

    def __init__(
        self,
        children: Iterable[Child],
        report: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        first_delay: float = 1.0,
    ) -> None:
        self.children = list(children)
        self._report = report
        self._clock = clock
        self._first_delay = first_delay
        for child in self.children:
            child.started_at = clock()

    def run(self, sleep: Callable[[float], None] = time.sleep) -> NoReturn:
        """Look after the children until ``ProcessFailed`` (or an interrupt) ends it."""
        while True:
            self.check()
            sleep(POLL_SECONDS)

    def check(self) -> None:
        """One look at every child: reap and report exits, start what is due."""
        now = self._clock()
        for child in self.children:
            if child.restart_at is not None and now >= child.restart_at:
                self._restart(child, now)
            elif child.has_exited():
                self._crashed(child, now, f"exited ({child.exit_cause()})")

    def _restart(self, child: Child, now: float) -> None:
        child.restart_at = None
        child.started_at = now
        try:
            child.start()
        except (BackupJobsError, OSError) as exc:
            child.process = None
            self._crashed(child, now, f"could not be restarted ({_reason(exc)})")
            return
        self._report(child.line(f"restarted (pid {child.pid})"))

    def _crashed(self, child: Child, now: float, what: str) -> None:
        child.crashes = [t for t in child.crashes if now - t < CRASH_WINDOW_SECONDS] + [now]
        if len(child.crashes) >= CRASH_LIMIT:
            raise failure(
                child,
                f"crashed {len(child.crashes)} times within {CRASH_WINDOW_SECONDS:g} s "
                f"(last: {what}); stopped the whole stack",
            )
        child.in_a_row = 1 if now - child.started_at >= STABLE_SECONDS else child.in_a_row + 1
        delay = min(BACKOFF_MAX_SECONDS, self._first_delay * 2 ** (child.in_a_row - 1))
        child.restart_at = now + delay
        child.process = None
        self._report(child.line(f"{what}; restarting in {delay:g} s (log {child.log})"))


def _reason(exc: BaseException) -> str:
    if isinstance(exc, BackupJobsError):
        return exc.detail or exc.message
    return str(exc)


def failure(child: Child, what: str) -> ProcessFailed:
    """The error that ends the command because ``child`` did ``what``; it names the log."""
    return ProcessFailed(
        detail=f"{child.name} {what}; see {child.log}",
        action=f"Fix what {child.log} shows, then start it again.",
    )


def start_failure(child: Child) -> ProcessFailed:
    """The error for a child that exited before it answered."""
    return failure(child, f"exited while starting ({child.exit_cause()}); stopped the whole stack")


class _ChildExited(BaseException):
    """Raised from the SIGCHLD handler; a BaseException, so no ``except Exception`` eats it."""


@contextmanager
def fail_on_exit(children: Iterable[Child]) -> Iterator[None]:
    """Raise ``ProcessFailed`` in the main thread as soon as a child exits (SIGCHLD).

    For commands that do something else while their processes run (``demo``): a worker
    that dies must end the command at once, not leave it waiting for jobs that never end.
    """
    watched = list(children)
    done = threading.Event()

    def check(signum: int, frame: FrameType | None) -> None:
        if not done.is_set() and any(child.has_exited() for child in watched):
            raise _ChildExited

    previous = signal.signal(signal.SIGCHLD, check)
    nudger = threading.Thread(target=_nudge, args=(done,), name="fail-on-exit", daemon=True)
    nudger.start()
    try:
        check(signal.SIGCHLD, None)
        yield
    except _ChildExited:
        done.set()
        child = next(child for child in watched if child.has_exited())
        raise failure(child, f"exited ({child.exit_cause()}); stopped the whole stack") from None
    finally:
        done.set()
        nudger.join()
        signal.signal(signal.SIGCHLD, previous)


def _nudge(done: threading.Event) -> None:
    """Send this process SIGCHLD every ``POLL_SECONDS`` until ``done``.

    The handler's exception may land in a finaliser (a ``__del__`` of Celery's results), which
    swallows it; without another signal the command would wait for a job that never ends.
    """
    while not done.wait(POLL_SECONDS):
        os.kill(os.getpid(), signal.SIGCHLD)

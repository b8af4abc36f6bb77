"""The supervisor's rules, on real short-lived processes and a clock the test moves."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backup_jobs.errors import ProcessFailed, RedisUnavailable
from backup_jobs.runtime.supervisor import Child, Supervisor, fail_on_exit


class Clock:
    """Time that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _exited(code: int = 3) -> subprocess.Popen[bytes]:
    """A process that has already exited with ``code``."""
    process = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])
    process.wait()
    return process


class Supervised:
    """A child that exits at once every time, its supervisor, a clock, and what was reported."""

    def __init__(self, tmp_path: Path) -> None:
        self.clock = Clock()
        self.lines: list[str] = []
        self.child = Child("worker", tmp_path / "worker.log", _exited)
        self.child.start()
        self.supervisor = Supervisor([self.child], self.lines.append, self.clock)

    def crash_and_restart(self) -> None:
        """The supervisor notices the exit, then starts the child again when it is due."""
        self.supervisor.check()
        assert self.child.restart_at is not None
        self.clock.now = self.child.restart_at
        self.supervisor.check()

    def delays(self) -> list[str]:
        """The back-off of each exit reported, in seconds."""
        return [
            line.split("restarting in ")[1].split(" s")[0]
            for line in self.lines
            if "exited" in line
        ]


@pytest.fixture
def supervised(tmp_path: Path) -> Supervised:
    """A crashing worker under a supervisor."""
    return Supervised(tmp_path)


def test_restarts_back_off_1_2_4_8_seconds_and_a_fifth_crash_in_two_minutes_stops_all(
    supervised: Supervised,
) -> None:
    for _ in range(4):
        supervised.crash_and_restart()
    with pytest.raises(ProcessFailed) as failed:
        supervised.supervisor.check()

    exits = [line for line in supervised.lines if "exited" in line]
    assert supervised.delays() == ["1", "2", "4", "8"]
    assert all("exit status 3" in line and "worker.log" in line for line in exits)
    assert len([line for line in supervised.lines if "restarted (pid" in line]) == 4
    assert "worker crashed 5 times within 120 s" in failed.value.message
    assert "worker.log" in failed.value.message and "worker.log" in failed.value.recommended_action


def test_crashes_spread_beyond_two_minutes_never_stop_the_stack_and_back_off_up_to_30_s(
    supervised: Supervised,
) -> None:
    for _ in range(8):
        supervised.clock.now += 40  # each run lasts 40 s: not healthy, not a crash loop either
        supervised.crash_and_restart()

    assert supervised.delays() == ["1", "2", "4", "8", "16", "30", "30", "30"]


def test_a_child_that_ran_for_a_minute_starts_its_back_off_again(supervised: Supervised) -> None:
    supervised.crash_and_restart()
    supervised.clock.now += 61
    supervised.crash_and_restart()

    assert supervised.delays() == ["1", "1"]


def test_a_restart_that_fails_counts_as_a_crash_and_says_why(supervised: Supervised) -> None:
    def refuse() -> subprocess.Popen[bytes]:
        raise RedisUnavailable(detail="the embedded server exited at start-up: port in use")

    supervised.supervisor.check()
    supervised.child.launch = refuse
    supervised.clock.now = 1.0
    supervised.supervisor.check()

    last = supervised.lines[-1]
    assert "could not be restarted (the embedded server exited at start-up: port in use)" in last
    assert "restarting in 2 s" in last
    assert supervised.child.process is None and len(supervised.child.crashes) == 2


def test_the_exit_cause_is_the_signal_or_the_last_line_the_process_logged(
    tmp_path: Path,
) -> None:
    log = tmp_path / "beat.log"
    log.write_text(
        "old run: ignored\n"
        "[2026-01-01 10:00:00,000: ERROR/MainProcess] beat: Cannot open the schedule\n\n"
    )
    crashed = Child("beat", log, _exited)
    crashed.start()
    crashed.log_offset = len("old run: ignored\n")
    killed = Child("flower", log, lambda: subprocess.Popen(["sleep", "30"]))
    killed.start()
    assert killed.process is not None
    killed.process.send_signal(signal.SIGKILL)
    killed.process.wait()

    assert crashed.exit_cause() == "exit status 3: beat: Cannot open the schedule"
    assert killed.exit_cause() == "killed by SIGKILL"


def test_a_child_exit_interrupts_whatever_the_command_was_waiting_for(tmp_path: Path) -> None:
    child = Child("worker", tmp_path / "worker.log", lambda: subprocess.Popen(["sleep", "0.3"]))
    child.start()
    started = time.monotonic()

    with (
        pytest.raises(ProcessFailed, match=r"worker exited \(exit status 0"),
        fail_on_exit([child]),
    ):
        time.sleep(10)

    assert time.monotonic() - started < 5


def test_a_child_exit_is_raised_again_when_a_finaliser_swallowed_it(tmp_path: Path) -> None:
    # The demo hung when the exit landed in a Celery result's __del__, which swallows it.
    child = Child("worker", tmp_path / "worker.log", lambda: subprocess.Popen(["sleep", "0.3"]))
    child.start()
    swallowed: list[BaseException] = []

    with pytest.raises(ProcessFailed, match=r"worker exited"), fail_on_exit([child]):
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                time.sleep(0.05)
            except BaseException as exc:  # what a __del__ does with it, once
                if swallowed:
                    raise
                swallowed.append(exc)

    assert len(swallowed) == 1

"""The project's own checks run with the tests: ruff and mypy --strict must pass."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness import REPO


def test_ruff_finds_nothing() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "backup_jobs", "workers", "tests", "benchmarks"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_mypy_strict_finds_nothing() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


def test_ci_runs_the_test_command_the_readme_gives() -> None:
    readme = (REPO / "README.md").read_text()
    command = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]

    assert command.replace(" -q", "") in readme


def test_the_readme_test_command_first_installs_chromium_from_debian() -> None:
    readme = (REPO / "README.md").read_text()
    setup = (REPO / "tests" / "setup.sh").read_text()

    [command] = [line for line in readme.splitlines() if line.endswith("&& .venv/bin/pytest")]
    assert command.startswith("sh tests/setup.sh && ")
    assert "apt-get install -y -qq --no-install-recommends" in setup
    assert "chromium" in setup and "playwright install" not in setup


def test_the_test_setup_does_nothing_when_chromium_is_there() -> None:
    if not Path("/usr/bin/chromium").exists():
        pytest.skip("no /usr/bin/chromium: `sh tests/setup.sh` would install it")
    started = time.monotonic()

    result = subprocess.run(
        ["sh", str(REPO / "tests" / "setup.sh")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "nothing to do" in result.stdout
    assert time.monotonic() - started < 2

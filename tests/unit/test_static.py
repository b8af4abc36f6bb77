"""The project's own checks run with the tests: ruff and mypy --strict must pass."""

from __future__ import annotations

import subprocess
import sys

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
